/**
 * The prom-client metrics over real sockets: an in-process coordinator, a socket test node that
 * runs agent and generate tasks (some failing), a scrape parsed and checked by Debian's
 * `promtool check metrics`, hostile node figures dropped and counted, KPIs from the same figures,
 * and maintenance mode.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Gauge } from 'prom-client';
import { createCoordinator, type Coordinator } from './index';
import { Metrics } from './metrics';
import { HELLO_WAT, TestNode, apiClient, tempDir, until, wat } from './testing';

const PROMTOOL = '/usr/bin/promtool';

interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** The samples of a Prometheus text exposition (comments and blank lines skipped). */
export function parseExposition(text: string): Sample[] {
  const out: Sample[] = [];
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    assert.ok(m, `bad sample line: ${line}`);
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:\\.|[^"\\])*)"/g)) labels[l[1]!] = l[2]!.replace(/\\(.)/g, (_, c: string) => (c === 'n' ? '\n' : c));
    out.push({ name: m[1]!, labels, value: Number(m[3]) });
  }
  return out;
}

/** The one sample of `name` whose labels include `labels`. */
function sample(samples: readonly Sample[], name: string, labels: Record<string, string> = {}): Sample | undefined {
  return samples.find((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v));
}

const tmp = tempDir('metrics-');
let c: Coordinator;
let node: TestNode;
const api = (path: string, init?: RequestInit & { json?: unknown }) => apiClient(c.url)(path, init);

async function scrape(): Promise<{ text: string; samples: Sample[]; contentType: string }> {
  const res = await fetch(`${c.url}/metrics`);
  assert.equal(res.status, 200);
  const text = await res.text();
  return { text, samples: parseExposition(text), contentType: res.headers.get('content-type') ?? '' };
}

before(async () => {
  c = await createCoordinator({ dbPath: join(tmp.dir, 'c.db') });
  const res = await api('/v1/agents/hello/versions/1.0.0', { method: 'PUT', headers: { 'content-type': 'application/wasm' }, body: await wat(HELLO_WAT) });
  assert.equal(res.status, 201, JSON.stringify(res.body));
  node = await TestNode.connect(c.url, { name: 'metrics "node"', kinds: ['agent', 'generate'], maxConcurrent: 4, sequences: 2, inferenceModels: [{ name: 'tiny', backend: 'engine', device: 'webgpu', loaded: true }] });

  // Six agent tasks: four succeed (three with a spawn time, one with a hostile one), two fail with an agent error.
  const sub = await api('/v1/tasks', { method: 'POST', json: { tasks: Array.from({ length: 6 }, (_, i) => ({ kind: 'agent', payload: { agent: 'hello', input: { i } } })) } });
  assert.equal(sub.status, 202, JSON.stringify(sub.body));
  const tasks = await node.assignments(6);
  const spawns = [2, 3, 4, 1e308];
  node.succeed(tasks.slice(0, 4), (a) => ({ exitCode: 0, output: 'ok', stderr: '', fuelUsed: 1, durationMs: 1, memoryBytes: 65536, spawnMs: spawns[tasks.indexOf(a)] }));
  node.fail(tasks.slice(4), 'AGENT_TRAP', 'trapped in test');
  // One generate task with its timings.
  const gen = await api('/v1/tasks', { method: 'POST', json: { kind: 'generate', payload: { model: 'tiny', prompt: 'hi', maxNewTokens: 2 } } });
  assert.equal(gen.status, 202, JSON.stringify(gen.body));
  const [g] = await node.assignments(1);
  node.succeed([g!], () => ({ text: 'ab', tokens: [1, 2], finishReason: 'length', usage: { promptTokens: 1, completionTokens: 2 }, backend: 'engine', device: 'webgpu', ttftMs: 120, durationMs: 160, tokensPerSec: 50 }));
  await until(() => c.journal.countsByState().succeeded === 5 && c.journal.countsByState().failed === 2, 5_000, 'tasks ended');
});

after(async () => {
  await node.close();
  await c.close();
  tmp.cleanup();
});

test("a NaN sample is written NaN, the text format's spelling (prom-client writes Nan)", async () => {
  const m = new Metrics(0);
  new Gauge({ name: 'test_not_a_number', help: 'A gauge with no value yet.', registers: [m.registry] }).set(Number.NaN);
  const { text } = await m.scrape();
  assert.match(text, /^test_not_a_number NaN$/m);
  assert.doesNotMatch(text, / Nan$/m);
});

describe('GET /metrics on prom-client', () => {
  test('the coordinator series, with the values of what ran', async () => {
    const { samples, contentType } = await scrape();
    assert.match(contentType, /^text\/plain; version=0\.0\.4/);
    assert.equal(sample(samples, 'coordinator_tasks_submitted_total', { kind: 'agent' })?.value, 6);
    assert.equal(sample(samples, 'coordinator_tasks_completed_total', { kind: 'agent' })?.value, 4);
    assert.equal(sample(samples, 'coordinator_tasks_completed_total', { kind: 'generate' })?.value, 1);
    assert.equal(sample(samples, 'coordinator_tasks_failed_total', { kind: 'agent', code: 'AGENT_TRAP' })?.value, 2);
    assert.equal(sample(samples, 'coordinator_task_attempt_errors_total', { code: 'AGENT_TRAP', infra: 'false' })?.value, 2);
    assert.equal(sample(samples, 'coordinator_task_attempts_ended_total')?.value, 7);
    assert.equal(sample(samples, 'coordinator_tasks', { state: 'succeeded' })?.value, 5);
    assert.equal(sample(samples, 'coordinator_tasks', { state: 'failed' })?.value, 2);
    assert.equal(sample(samples, 'coordinator_tasks_queued', { priority: '5' })?.value, 0);
    assert.equal(sample(samples, 'coordinator_nodes', { condition: 'connected' })?.value, 1);
    assert.equal(sample(samples, 'coordinator_maintenance')?.value, 0);
    // Histograms: every assignment, task latency by kind, spawn times as reported (the hostile one dropped), generate timings by model.
    assert.equal(sample(samples, 'coordinator_dispatch_latency_seconds_count')?.value, 7);
    assert.equal(sample(samples, 'coordinator_task_latency_seconds_count', { kind: 'agent' })?.value, 6);
    assert.equal(sample(samples, 'coordinator_agent_spawn_seconds_count')?.value, 3);
    assert.ok(Math.abs(sample(samples, 'coordinator_agent_spawn_seconds_sum')!.value - 0.009) < 1e-9);
    assert.equal(sample(samples, 'coordinator_time_to_first_token_seconds_sum', { model: 'tiny' })?.value, 0.12);
    assert.equal(sample(samples, 'coordinator_generation_tokens_per_second_count', { model: 'tiny' })?.value, 1);
    assert.equal(sample(samples, 'coordinator_generation_tokens_per_second_bucket', { model: 'tiny', le: '50' })?.value, 1);
    assert.equal(sample(samples, 'coordinator_generation_tokens_per_second_bucket', { model: 'tiny', le: '20' })?.value, 0);
    // Per node, at scrape time, with the node's id and name (quotes escaped).
    const labels = { node: node.id, node_name: 'metrics "node"' };
    assert.equal(sample(samples, 'coordinator_node_max_concurrent', labels)?.value, 4);
    assert.equal(sample(samples, 'coordinator_node_leases', labels)?.value, 0);
    assert.equal(sample(samples, 'coordinator_node_healthy', labels)?.value, 1);
    assert.equal(sample(samples, 'coordinator_node_circuit_open', labels)?.value, 0);
    // Default process metrics, unprefixed.
    assert.ok(sample(samples, 'process_cpu_seconds_total'));
    assert.ok(sample(samples, 'nodejs_eventloop_lag_seconds'));
  });

  test('promtool check metrics is clean (exit 0, no warnings)', async () => {
    const { text } = await scrape();
    const run = spawnSync(PROMTOOL, ['check', 'metrics'], { input: text, encoding: 'utf8', timeout: 30_000 });
    assert.equal(run.error, undefined, String(run.error));
    assert.equal(`${run.stdout}${run.stderr}`.trim(), '', 'promtool says nothing');
    assert.equal(run.status, 0);
  });

  test('a node reporting hostile figures: each bad value is dropped, counted, never exported', async () => {
    const before = sample((await scrape()).samples, 'coordinator_node_metrics_rejected_total')!.value;
    assert.equal(before, 1, 'the spawnMs of 1e308 in a result');
    node.heartbeat([], { tasksDone: 5, tasksFailed: 2, spawnP50Ms: 1e308, spawnP99Ms: 7, memoryBytes: -5, gpuMemoryBytes: 2 ** 51, tokensPerSec: 100, agentMemoryBytes: 2 * 1024 * 1024 });
    await until(() => c.scheduler.nodes.get(node.id)?.metrics?.tokensPerSec === 100, 5_000, 'heartbeat taken');
    const { text, samples } = await scrape();
    const labels = { node: node.id };
    assert.equal(sample(samples, 'coordinator_node_metrics_rejected_total')!.value, before + 3);
    assert.equal(sample(samples, 'coordinator_node_agent_spawn_p50_seconds', labels), undefined);
    assert.equal(sample(samples, 'coordinator_node_agent_spawn_p99_seconds', labels)?.value, 0.007);
    assert.equal(sample(samples, 'coordinator_node_memory_bytes', labels), undefined);
    assert.equal(sample(samples, 'coordinator_node_gpu_memory_bytes', labels), undefined);
    assert.equal(sample(samples, 'coordinator_node_tokens_per_second', labels)?.value, 100);
    assert.equal(sample(samples, 'coordinator_node_agent_memory_bytes', labels)?.value, 2 * 1024 * 1024);
    assert.equal(sample(samples, 'coordinator_node_tasks_done_total', labels)?.value, 5);
    assert.doesNotMatch(text, /e\+30[0-9]/);
    assert.ok(samples.every((s) => s.value < 2 ** 53 || s.labels.le === '+Inf' || s.name.startsWith('process_') || s.name.startsWith('nodejs_')), 'no huge value exported');
    // A negative integer is refused by the schema: the heartbeat is a protocol error, and changes nothing.
    node.send({ type: 'heartbeat', leases: [], metrics: { running: 0, workers: -5, tasksDone: 0, tasksFailed: 0 } });
    assert.equal((await node.next('error')).error.code, 'PROTOCOL_ERROR');
    assert.equal(c.scheduler.nodes.get(node.id)?.metrics?.tokensPerSec, 100);
  });

  test('/v1/kpis over its window, from the same figures as coordinator_kpi_value', async () => {
    const { samples } = await scrape();
    const res = await api('/v1/kpis');
    assert.equal(res.status, 200);
    assert.equal(res.body.windowSeconds, 300);
    const k = res.body.kpis;
    assert.equal(k.successRate.value, 5 / 7);
    assert.equal(k.successRate.pass, false);
    assert.equal(k.errorRate.value, 0, 'agent errors are not infrastructure errors');
    assert.equal(k.memoryPerAgent.value, 2 * 1024 * 1024);
    assert.equal(k.memoryPerAgent.pass, true);
    assert.equal(k.utilisation.value, 0, 'no lease held');
    assert.equal(k.utilisation.pass, true, 'nothing queued: idle nodes are not a miss');
    assert.equal(k.agentSpawn.value, null, 'the 1e308 p50 was dropped');
    assert.equal(sample(samples, 'coordinator_kpi_value', { kpi: 'successRate' })?.value, k.successRate.value);
    assert.equal(sample(samples, 'coordinator_kpi_pass', { kpi: 'successRate' })?.value, 0);
    assert.ok(Math.abs(sample(samples, 'coordinator_kpi_value', { kpi: 'taskLatencyP50' })!.value - k.latencyP50.value / 1000) < 1e-12, 'the same p50, in seconds');
    assert.equal(sample(samples, 'coordinator_kpi_value', { kpi: 'agentSpawn' }), undefined, 'absent without data');
  });

  test('maintenance mode: PUT sets it and the gauge, GET reads it, a bad body is refused', async () => {
    assert.deepEqual({ ...(await api('/v1/maintenance')).body, since: 0 }, { on: false, reason: null, since: 0 });
    const on = await api('/v1/maintenance', { method: 'PUT', json: { on: true, reason: 'upgrading nodes' } });
    assert.equal(on.status, 200);
    assert.equal(on.body.on, true);
    assert.equal(on.body.reason, 'upgrading nodes');
    assert.ok(Math.abs(on.body.since - Date.now()) < 60_000);
    assert.deepEqual((await api('/v1/maintenance')).body, on.body);
    assert.equal(sample((await scrape()).samples, 'coordinator_maintenance')?.value, 1);
    const bad = await api('/v1/maintenance', { method: 'PUT', json: { on: 'yes' } });
    assert.equal(bad.status, 400);
    assert.equal(bad.body.error.code, 'SCHEMA_VIOLATION');
    const extra = await api('/v1/maintenance', { method: 'PUT', json: { on: false, until: 5 } });
    assert.equal(extra.status, 400);
    const off = await api('/v1/maintenance', { method: 'PUT', json: { on: false } });
    assert.equal(off.body.on, false);
    assert.equal(sample((await scrape()).samples, 'coordinator_maintenance')?.value, 0);
  });
});
