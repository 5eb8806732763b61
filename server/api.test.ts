import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { LIMITS } from '../shared';
import { createCoordinator, type Coordinator } from './index';
import { FORBIDDEN_WAT, HELLO_WAT, NO_START_WAT, TestNode, apiClient, tempDir, wat } from './testing';
import { testDb } from './postgres-testing';

const tmp = tempDir();
let c: Coordinator;
let hello: Uint8Array<ArrayBuffer>;

const api = (path: string, init?: RequestInit & { json?: unknown }) => apiClient(c.url)(path, init);

const agentTask = (extra: Record<string, unknown> = {}) => ({ kind: 'agent', payload: { agent: 'hello', input: { n: 1 } }, ...extra });

before(async () => {
  mkdirSync(join(tmp.dir, 'dist'));
  writeFileSync(join(tmp.dir, 'dist', 'index.html'), '<!doctype html><title>node</title>');
  writeFileSync(join(tmp.dir, 'dist', 'ort.mjs'), 'export {};');
  writeFileSync(join(tmp.dir, 'dist', 'ort.wasm'), Buffer.from([0, 97, 115, 109, 1, 0, 0, 0]));
  mkdirSync(join(tmp.dir, 'models', 'tiny', 'onnx'), { recursive: true });
  writeFileSync(join(tmp.dir, 'models', 'tiny', 'config.json'), '{"model_type":"llama"}');
  writeFileSync(join(tmp.dir, 'models', 'tiny', 'onnx', 'model.onnx'), 'abc');
  c = await createCoordinator({
    dbPath: testDb(join(tmp.dir, 'c.db')),
    staticDir: join(tmp.dir, 'dist'),
    modelsDir: join(tmp.dir, 'models'),
    webhook: { attempts: 2, baseDelayMs: 10, allowHosts: ['127.0.0.1'] },
  });
  hello = await wat(HELLO_WAT);
  const res = await api('/v1/agents/hello/versions/1.0.0', { method: 'PUT', headers: { 'content-type': 'application/wasm' }, body: hello });
  assert.equal(res.status, 201, JSON.stringify(res.body));
});

after(async () => {
  await c.close();
  tmp.cleanup();
});

describe('agent registry', () => {
  test('publishing the same bytes again is a no-op; other bytes under the version are refused', async () => {
    const same = await api('/v1/agents/hello/versions/1.0.0', { method: 'PUT', headers: { 'content-type': 'application/wasm' }, body: hello });
    assert.equal(same.status, 200);
    assert.match(same.body.sha256, /^[0-9a-f]{64}$/);
    const other = await wat(HELLO_WAT.replace('(memory (export "memory") 1)', '(memory (export "memory") 2)'));
    const res = await api('/v1/agents/hello/versions/1.0.0', { method: 'PUT', headers: { 'content-type': 'application/wasm' }, body: other });
    assert.equal(res.status, 409);
    assert.equal(res.body.error.code, 'AGENT_VERSION_EXISTS');
  });

  test('config from the header becomes the version default limits', async () => {
    const res = await api('/v1/agents/cfg/versions/2', {
      method: 'PUT',
      headers: { 'content-type': 'application/octet-stream', 'x-agent-config': JSON.stringify({ limits: { fuel: 1234 } }) },
      body: hello,
    });
    assert.equal(res.status, 201);
    const sub = await api('/v1/tasks', { method: 'POST', json: { kind: 'agent', payload: { agent: 'cfg' } } });
    const task = await api(`/v1/tasks/${sub.body.id}`);
    assert.equal(task.body.payload.limits.fuel, 1234);
    assert.equal(task.body.payload.version, '2');
    assert.equal(task.body.moduleHash, res.body.sha256);
    const bad = await api('/v1/agents/cfg/versions/3?config=%7Bnope', { method: 'PUT', headers: { 'content-type': 'application/wasm' }, body: hello });
    assert.equal(bad.body.error.code, 'BAD_JSON');
  });

  test('bad uploads answer their codes', async () => {
    const notWasm = await api('/v1/agents/x/versions/1', { method: 'PUT', headers: { 'content-type': 'application/wasm' }, body: 'hello world' });
    assert.equal(notWasm.status, 422);
    assert.equal(notWasm.body.error.code, 'WASM_INVALID');
    const forbidden = await api('/v1/agents/x/versions/1', { method: 'PUT', headers: { 'content-type': 'application/wasm' }, body: await wat(FORBIDDEN_WAT) });
    assert.equal(forbidden.body.error.code, 'WASM_FORBIDDEN_IMPORT');
    const noStart = await api('/v1/agents/x/versions/1', { method: 'PUT', headers: { 'content-type': 'application/wasm' }, body: await wat(NO_START_WAT) });
    assert.equal(noStart.body.error.code, 'WASM_MISSING_EXPORT');
    const json = await api('/v1/agents/x/versions/1', { method: 'PUT', json: { a: 1 } });
    assert.equal(json.status, 415);
    assert.equal(json.body.error.code, 'UNSUPPORTED_MEDIA_TYPE');
    const text = await api('/v1/agents/x/versions/1', { method: 'PUT', headers: { 'content-type': 'text/html' }, body: '<p>' });
    assert.equal(text.body.error.code, 'UNSUPPORTED_MEDIA_TYPE');
    const big = await c.app.inject({
      method: 'PUT',
      url: '/v1/agents/x/versions/1',
      headers: { 'content-type': 'application/wasm' },
      payload: Buffer.alloc(LIMITS.maxWasmBytes + 1),
    });
    assert.equal(big.statusCode, 413);
    assert.equal(big.json().error.code, 'WASM_TOO_LARGE');
    const badName = await api('/v1/agents/..bad/versions/1', { method: 'PUT', headers: { 'content-type': 'application/wasm' }, body: hello });
    assert.equal(badName.body.error.code, 'INVALID_ID');
  });

  test('lists agents and serves modules by hash with immutable caching', async () => {
    const list = await api('/v1/agents');
    assert.ok(list.body.agents.some((a: any) => a.name === 'hello' && a.latest === '1.0.0'));
    const one = await api('/v1/agents/hello');
    const sha = one.body.versions[0].sha256;
    const mod = await fetch(`${c.url}/v1/modules/${sha}`);
    assert.equal(mod.status, 200);
    assert.equal(mod.headers.get('content-type'), 'application/wasm');
    assert.match(mod.headers.get('cache-control') ?? '', /immutable/);
    assert.equal(mod.headers.get('access-control-allow-origin'), '*', 'a page on another origin may fetch modules');
    assert.deepEqual(new Uint8Array(await mod.arrayBuffer()), hello);
    const again = await fetch(`${c.url}/v1/modules/${sha}`, { headers: { 'if-none-match': `"${sha}"` } });
    assert.equal(again.status, 304);
    assert.equal((await api('/v1/agents/nobody')).body.error.code, 'AGENT_NOT_FOUND');
    assert.equal((await api(`/v1/modules/${'0'.repeat(64)}`)).status, 404);
    assert.equal((await api('/v1/modules/xyz')).body.error.code, 'INVALID_ID');
  });
});

describe('submit', () => {
  test('one task answers 202 with its id; the record is queued', async () => {
    const res = await api('/v1/tasks', { method: 'POST', json: agentTask({ priority: 7, labels: { a: 'b' } }) });
    assert.equal(res.status, 202);
    const task = await api(`/v1/tasks/${res.body.id}`);
    assert.equal(task.status, 200);
    assert.equal(task.body.state, 'queued');
    assert.equal(task.body.priority, 7);
    assert.equal(task.body.maxAttempts, LIMITS.defaultMaxAttempts);
    assert.deepEqual(task.body.payload.input, { n: 1 });
    assert.equal(task.body.payload.version, '1.0.0');
  });

  test('a batch answers 202 with ids in order', async () => {
    const res = await api('/v1/tasks', { method: 'POST', json: { tasks: [agentTask(), agentTask({ priority: 1 }), { kind: 'generate', payload: { model: 'tiny', prompt: 'hi' } }] } });
    assert.equal(res.status, 202);
    assert.equal(res.body.ids.length, 3);
    const third = await api(`/v1/tasks/${res.body.ids[2]}`);
    assert.equal(third.body.kind, 'generate');
  });

  test('idempotency: same key and spec → the same task with 200; other spec → IDEMPOTENCY_CONFLICT', async () => {
    const first = await api('/v1/tasks', { method: 'POST', json: agentTask({ idempotencyKey: 'k-1' }) });
    assert.equal(first.status, 202);
    const reordered = { idempotencyKey: 'k-1', payload: { input: { n: 1 }, agent: 'hello' }, kind: 'agent' };
    const second = await api('/v1/tasks', { method: 'POST', json: reordered });
    assert.equal(second.status, 200);
    assert.equal(second.body.id, first.body.id);
    const conflict = await api('/v1/tasks', { method: 'POST', json: agentTask({ idempotencyKey: 'k-1', priority: 9 }) });
    assert.equal(conflict.status, 409);
    assert.equal(conflict.body.error.code, 'IDEMPOTENCY_CONFLICT');
    assert.equal(conflict.body.error.details.existingId, first.body.id);
    const batch = await api('/v1/tasks', { method: 'POST', json: { tasks: [agentTask({ idempotencyKey: 'k-2' }), agentTask({ idempotencyKey: 'k-1', priority: 9 })] } });
    assert.equal(batch.body.error.code, 'IDEMPOTENCY_CONFLICT');
    assert.equal(batch.body.error.details.index, 1);
    const notWritten = await api('/v1/tasks', { method: 'POST', json: agentTask({ idempotencyKey: 'k-2', priority: 2 }) });
    assert.equal(notWritten.status, 202, 'the refused batch wrote nothing');
  });

  test('bad input answers the right codes', async () => {
    const malformed = await api('/v1/tasks', { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"kind":' });
    assert.equal(malformed.status, 400);
    assert.equal(malformed.body.error.code, 'BAD_JSON');
    const schema = await api('/v1/tasks', { method: 'POST', json: { kind: 'agent', payload: { agent: 'hello', limits: { fuel: -1 } } } });
    assert.equal(schema.status, 400);
    assert.equal(schema.body.error.code, 'SCHEMA_VIOLATION');
    assert.equal(schema.body.error.details.errors[0].path, '/payload/limits/fuel');
    const kind = await api('/v1/tasks', { method: 'POST', json: { tasks: [agentTask(), { kind: 'dance', payload: {} }] } });
    assert.equal(kind.body.error.details.errors[0].path, '/tasks/1/kind');
    const extra = await api('/v1/tasks', { method: 'POST', json: agentTask({ colour: 'red' }) });
    assert.equal(extra.body.error.code, 'SCHEMA_VIOLATION');
    const tooBig = await api('/v1/tasks', { method: 'POST', json: agentTask({ labels: { x: 'y'.repeat(200) }, payload: { agent: 'hello', input: 'z'.repeat(LIMITS.maxBodyBytes) } }) });
    assert.equal(tooBig.status, 413);
    assert.equal(tooBig.body.error.code, 'BODY_TOO_LARGE');
    const batch = await api('/v1/tasks', { method: 'POST', json: { tasks: Array.from({ length: LIMITS.maxBatch + 1 }, () => ({ kind: 'agent', payload: { agent: 'hello' } })) } });
    assert.equal(batch.status, 413);
    assert.equal(batch.body.error.code, 'BATCH_TOO_LARGE');
    const agent = await api('/v1/tasks', { method: 'POST', json: { kind: 'agent', payload: { agent: 'nobody' } } });
    assert.equal(agent.status, 404);
    assert.equal(agent.body.error.code, 'AGENT_NOT_FOUND');
    const version = await api('/v1/tasks', { method: 'POST', json: { kind: 'agent', payload: { agent: 'hello', version: '9.9' } } });
    assert.equal(version.body.error.code, 'AGENT_VERSION_NOT_FOUND');
    const media = await api('/v1/tasks', { method: 'POST', headers: { 'content-type': 'text/csv' }, body: 'a,b' });
    assert.equal(media.body.error.code, 'UNSUPPORTED_MEDIA_TYPE');
  });

  test('GET answers INVALID_ID and TASK_NOT_FOUND; unknown routes NOT_FOUND', async () => {
    assert.equal((await api('/v1/tasks/nope')).body.error.code, 'INVALID_ID');
    const missing = await api(`/v1/tasks/${crypto.randomUUID()}`);
    assert.equal(missing.status, 404);
    assert.equal(missing.body.error.code, 'TASK_NOT_FOUND');
    assert.equal((await api('/v1/nothing')).body.error.code, 'NOT_FOUND');
  });

  test('list by state with a limit', async () => {
    const res = await api('/v1/tasks?state=queued&limit=2');
    assert.equal(res.status, 200);
    assert.equal(res.body.tasks.length, 2);
    assert.ok(res.body.tasks.every((t: any) => t.state === 'queued'));
    assert.equal((await api('/v1/tasks?state=bogus')).body.error.code, 'SCHEMA_VIOLATION');
  });

  test('tenant quotas cap limits and queue length', async () => {
    const put = await api('/v1/quotas/acme', { method: 'PUT', json: { maxQueued: 2, agentLimits: { fuel: 1000, memoryMB: 8 } } });
    assert.equal(put.status, 200);
    const one = await api('/v1/tasks', { method: 'POST', json: agentTask({ tenant: 'acme', payload: { agent: 'hello', limits: { fuel: 5000 } } }) });
    assert.equal(one.status, 202);
    const rec = await api(`/v1/tasks/${one.body.id}`);
    assert.equal(rec.body.payload.limits.fuel, 1000);
    assert.equal(rec.body.payload.limits.memoryMB, 8);
    const two = await api('/v1/tasks', { method: 'POST', json: { tasks: [agentTask({ tenant: 'acme' }), agentTask({ tenant: 'acme' })] } });
    assert.equal(two.status, 429);
    assert.equal(two.body.error.code, 'RATE_LIMITED');
    assert.equal((await api('/v1/tasks', { method: 'POST', json: agentTask({ tenant: 'acme' }) })).status, 202);
  });
});

describe('results: wait, events, cancel, verdict, webhook', () => {
  test('wait returns at the result; SSE streams state changes, progress and the record; webhook gets the record', async () => {
    const hooks: any[] = [];
    const { createServer } = await import('node:http');
    const hookServer = createServer((req, res) => {
      let body = '';
      req.on('data', (d) => (body += d));
      req.on('end', () => {
        hooks.push(JSON.parse(body));
        res.end('ok');
      });
    });
    await new Promise<void>((r) => hookServer.listen(0, '127.0.0.1', r));
    const hookPort = (hookServer.address() as { port: number }).port;

    const sub = await api('/v1/tasks', { method: 'POST', json: agentTask({ priority: 9, webhook: `http://127.0.0.1:${hookPort}/hook` }) });
    const id = sub.body.id;
    const events = await fetch(`${c.url}/v1/tasks/${id}/events`);
    assert.equal(events.headers.get('content-type'), 'text/event-stream; charset=utf-8');
    const reader = events.body!.getReader();
    let text = '';
    const readUntil = async (needle: string) => {
      for (let i = 0; i < 100 && !text.includes(needle); i++) {
        const { value, done } = await reader.read();
        if (done) break;
        text += new TextDecoder().decode(value);
      }
    };
    await readUntil('event: state');
    const waiting = api(`/v1/tasks/${id}/wait?timeoutMs=10000`);

    const node = await TestNode.connect(c.url);
    const assigned = await node.assignments(1);
    const mine = assigned.filter((a) => a.taskId === id);
    assert.equal(mine.length, 1, 'the priority-9 task goes first');
    assert.equal(mine[0]!.module?.size, hello.byteLength);
    node.send({ type: 'task.progress', taskId: id, leaseId: mine[0]!.leaseId, progress: { kind: 'log', line: 'working' } });
    await readUntil('event: progress');
    node.succeed(mine, () => ({ exitCode: 0, output: { done: true }, stderr: '', fuelUsed: 1, durationMs: 1, memoryBytes: 65536 }));
    const waited = await waiting;
    assert.equal(waited.status, 200);
    assert.equal(waited.body.state, 'succeeded');
    assert.deepEqual(waited.body.result.output, { done: true });
    await readUntil('event: record');
    assert.match(text, /"state":"leased"/);
    assert.match(text, /working/);
    assert.match(text, /event: record\ndata: .*"succeeded"/);

    await (async () => {
      for (let i = 0; i < 200 && hooks.length === 0; i++) await new Promise((r) => setTimeout(r, 10));
    })();
    assert.equal(hooks[0]?.id, id);
    assert.equal(hooks[0]?.state, 'succeeded');
    hookServer.close();

    const verdict = await api(`/v1/tasks/${id}/verdict`, { method: 'POST', json: { verdict: 'fail', reason: 'wrong answer' } });
    assert.equal(verdict.status, 200);
    assert.equal(verdict.body.verdict.verdict, 'fail');
    const nodes = await api('/v1/nodes');
    assert.equal(nodes.body.nodes[0].reputation.fail, 1);
    assert.deepEqual((await api('/v1/agents/hello')).body.versions[0].verdicts, { pass: 0, fail: 1 });
    await api(`/v1/tasks/${id}/verdict`, { method: 'POST', json: { verdict: 'pass' } });
    assert.deepEqual((await api('/v1/agents/hello')).body.versions[0].verdicts, { pass: 1, fail: 0 }, 'a new verdict replaces the old');
    assert.equal((await api('/v1/nodes')).body.nodes[0].reputation.pass, 1);
    await api(`/v1/tasks/${id}/verdict`, { method: 'POST', json: { verdict: 'fail', reason: 'wrong answer' } });
    assert.equal((await api(`/v1/tasks/${id}/verdict`, { method: 'POST', json: { verdict: 'maybe' } })).body.error.code, 'SCHEMA_VIOLATION');
    await node.close();
  });

  test('wait times out with the current record; cancel ends a queued task; verdict on a live task is refused', async () => {
    const sub = await api('/v1/tasks', { method: 'POST', json: { kind: 'train', payload: { model: 'tiny', adapterName: 'a', dataset: '{}', lora: { rank: 2, alpha: 4, targetModules: ['q_proj'] }, steps: 1 } } });
    const id = sub.body.id;
    const waited = await api(`/v1/tasks/${id}/wait?timeoutMs=50`);
    assert.equal(waited.body.state, 'queued');
    assert.equal((await api(`/v1/tasks/${id}/verdict`, { method: 'POST', json: { verdict: 'pass' } })).body.error.code, 'TASK_NOT_TERMINAL');
    const cancelled = await api(`/v1/tasks/${id}/cancel`, { method: 'POST', json: { reason: 'not needed' } });
    assert.equal(cancelled.body.state, 'cancelled');
    assert.equal(cancelled.body.error.code, 'CANCELLED');
    const sse = await (await fetch(`${c.url}/v1/tasks/${id}/events`)).text();
    assert.match(sse, /event: record/);
  });
});

describe('webhook retries are bounded', () => {
  test('a failing endpoint is tried `attempts` times, then counted and journaled', async () => {
    const { createServer } = await import('node:http');
    let calls = 0;
    const server = createServer((_req, res) => {
      calls++;
      res.statusCode = 500;
      res.end('no');
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const port = (server.address() as { port: number }).port;
    const sub = await api('/v1/tasks', { method: 'POST', json: agentTask({ priority: 9, webhook: `http://127.0.0.1:${port}/hook` }) });
    const node = await TestNode.connect(c.url);
    const tasks = await node.assignments(1);
    node.succeed(tasks);
    const others = tasks.filter((t) => t.taskId !== sub.body.id);
    assert.equal(others.length, tasks.length - 1);
    let text = '';
    for (let i = 0; i < 300 && !/coordinator_webhooks_total\{outcome="failed"\} 1/.test(text); i++) {
      await new Promise((r) => setTimeout(r, 10));
      text = await (await fetch(`${c.url}/metrics`)).text();
    }
    assert.match(text, /coordinator_webhooks_total\{outcome="failed"\} 1/);
    assert.equal(calls, 2);
    assert.ok(c.journal.events(50).some((e) => e.type === 'webhook_failed' && e.taskId === sub.body.id));
    server.close();
    await node.close();
  });
});

describe('operations', () => {
  test('/metrics parses as Prometheus text', async () => {
    const res = await fetch(`${c.url}/metrics`);
    assert.match(res.headers.get('content-type') ?? '', /^text\/plain; version=0.0.4/);
    const text = await res.text();
    const sample = /^[a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-zA-Z_][a-zA-Z0-9_]*="(\\.|[^"\\])*",?)*\})? -?[0-9.eE+-]+$|^[a-zA-Z_:][a-zA-Z0-9_:]*(\{.*\})? (\+Inf|NaN)$/;
    const names = new Set<string>();
    for (const line of text.trimEnd().split('\n')) {
      if (line === '') continue; // prom-client separates metric families with a blank line
      if (line.startsWith('# HELP ') || line.startsWith('# TYPE ')) {
        names.add(line.split(' ')[2]!);
        continue;
      }
      assert.match(line, sample, `bad sample line: ${line}`);
    }
    for (const n of ['coordinator_tasks_submitted_total', 'coordinator_tasks', 'coordinator_task_latency_seconds', 'coordinator_nodes', 'process_cpu_seconds_total']) assert.ok(names.has(n), n);
    assert.match(text, /coordinator_tasks_submitted_total\{kind="agent"\} \d+/);
    assert.match(text, /coordinator_task_latency_seconds_bucket\{[^}]*le="\+Inf"[^}]*\} [1-9]/);
  });

  test('/v1/kpis: every KPI has value, target and pass', async () => {
    const res = await api('/v1/kpis');
    assert.equal(res.status, 200);
    assert.equal(res.body.windowSeconds, 300);
    for (const name of ['successRate', 'errorRate', 'throughput', 'latencyP50', 'availability', 'agentSpawn', 'memoryPerAgent', 'utilisation']) {
      const k = res.body.kpis[name];
      assert.ok(k, name);
      assert.ok('value' in k && 'target' in k && 'pass' in k, name);
    }
    assert.equal(typeof res.body.pass, 'boolean');
    const rate = res.body.kpis.successRate.value;
    assert.ok(typeof rate === 'number' && rate < 1, 'a fail verdict counts against success');
  });

  test('health, readiness, static page headers, models', async () => {
    assert.equal((await api('/healthz')).body.status, 'ok');
    assert.equal((await api('/readyz')).status, 200);
    const page = await fetch(`${c.url}/index.html`);
    assert.equal(page.headers.get('cross-origin-opener-policy'), 'same-origin');
    assert.equal(page.headers.get('cross-origin-embedder-policy'), 'require-corp');
    assert.ok(page.headers.get('cross-origin-resource-policy'));
    assert.match((await fetch(`${c.url}/ort.mjs`)).headers.get('content-type') ?? '', /^text\/javascript/);
    assert.equal((await fetch(`${c.url}/ort.wasm`)).headers.get('content-type'), 'application/wasm');
    const models = await api('/v1/models');
    assert.deepEqual(models.body.data.map((m: any) => m.id), ['tiny'], 'GET /v1/models is the OpenAI-shaped list');
    const manifest = await api('/v1/models/tiny/manifest');
    assert.deepEqual(manifest.body.files.map((f: any) => f.path), ['config.json', 'onnx/model.onnx']);
    assert.equal(manifest.body.files[1].sha256, 'ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad');
    assert.equal((await fetch(`${c.url}/models/tiny/onnx/model.onnx`)).status, 200);
    assert.equal((await api('/v1/models/none/manifest')).body.error.code, 'MODEL_NOT_FOUND');
  });
});
