/**
 * A real Prometheus (Debian's /usr/bin/prometheus) scrapes a real coordinator under --auth, with a
 * refiner's bearer token, every second, while one headless Chromium node runs agent tasks (some
 * failing); its HTTP query API must return the coordinator's series with the right values and a
 * per-node series labelled with the node.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { AGENTS } from '../agents';
import { Auth } from '../server/auth';
import { until } from '../server/testing';
import type { TaskRecord } from '../shared';
import { E2ePool } from './pool';
import { registerSampleAgents } from '../scripts/register-agents';

const PROMETHEUS = '/usr/bin/prometheus';
const T = {
  admin: 'admin-token-prometheus-0123456',
  join: 'join-token-prometheus-01234567',
  planner: 'planner-token-prometheus-0123',
  refiner: 'refiner-token-prometheus-0123',
};

let dir = '';
let pool: E2ePool | null = null;
let prometheus: ChildProcess | null = null;
let prometheusLog = '';
let promUrl = '';
let url = '';

async function freePort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const port = (srv.address() as { port: number }).port;
  await new Promise<void>((r) => srv.close(() => r()));
  return port;
}

const call = async (path: string, token: string, init: RequestInit = {}): Promise<Response> =>
  fetch(`${url}${path}`, { ...init, headers: { ...(init.headers as Record<string, string>), authorization: `Bearer ${token}` } });

/** The vector a PromQL query answers now ([] before the series exist). */
async function query(q: string): Promise<Array<{ metric: Record<string, string>; value: [number, string] }>> {
  const res = await fetch(`${promUrl}/api/v1/query?query=${encodeURIComponent(q)}`);
  if (!res.ok) return [];
  const body = (await res.json()) as { status: string; data: { resultType: string; result: Array<{ metric: Record<string, string>; value: [number, string] }> } };
  return body.status === 'success' ? body.data.result : [];
}

before(async () => {
  const auth = Auth.fromConfig({
    tokens: [
      { token: T.admin, roles: ['admin'] },
      { token: T.join, roles: ['node'] },
      { token: T.planner, roles: ['planner'] },
      { token: T.refiner, roles: ['refiner'] },
    ],
  });
  pool = await E2ePool.start('e2e-prometheus-', { auth });
  url = pool.url;
  dir = pool.dir;
  await registerSampleAgents(url, AGENTS.filter((a) => a.name === 'trivial' || a.name === 'trap'), T.admin);
  await pool.join({ count: 1, token: T.join, query: { workers: '1', inference: '0' }, timeoutMs: 60_000 });

  const promPort = await freePort();
  promUrl = `http://127.0.0.1:${promPort}`;
  const target = new URL(url).host;
  const config = join(dir, 'prometheus.yml');
  writeFileSync(
    config,
    [
      'global:',
      '  scrape_interval: 1s',
      '  evaluation_interval: 1s',
      'scrape_configs:',
      '  - job_name: coordinator',
      '    scrape_interval: 1s',
      '    scrape_timeout: 1s',
      '    metrics_path: /metrics',
      '    authorization:',
      `      credentials: ${T.refiner}`,
      '    static_configs:',
      `      - targets: ['${target}']`,
      '',
    ].join('\n'),
  );
  prometheus = spawn(PROMETHEUS, [`--config.file=${config}`, `--storage.tsdb.path=${join(dir, 'tsdb')}`, `--web.listen-address=127.0.0.1:${promPort}`], { stdio: ['ignore', 'pipe', 'pipe'] });
  const keep = (d: Buffer): void => {
    prometheusLog = (prometheusLog + d.toString()).slice(-8000);
  };
  prometheus.stdout!.on('data', keep);
  prometheus.stderr!.on('data', keep);
  await until(async () => (await fetch(`${promUrl}/-/ready`).catch(() => null))?.ok === true, 30_000, `prometheus ready (${prometheusLog.slice(-500)})`);
});

after(async () => {
  if (prometheus && prometheus.exitCode === null) {
    const exited = new Promise((r) => prometheus!.once('exit', r));
    prometheus.kill('SIGTERM');
    await Promise.race([exited, new Promise((r) => setTimeout(r, 5_000))]);
    if (prometheus.exitCode === null) prometheus.kill('SIGKILL');
  }
  await pool?.close();
});

test('Prometheus scrapes the coordinator with a refiner token: task counters, histograms and per-node series by query', async () => {
  // The scrape needs the token: without one the coordinator refuses it.
  assert.equal((await fetch(`${url}/metrics`)).status, 401);
  const specs = [
    ...Array.from({ length: 4 }, (_, i) => ({ kind: 'agent', payload: { agent: 'trivial', input: { ping: i } }, maxAttempts: 1 })),
    ...Array.from({ length: 2 }, () => ({ kind: 'agent', payload: { agent: 'trap', input: {} }, maxAttempts: 1 })),
  ];
  const sub = await call('/v1/tasks', T.planner, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ tasks: specs }) });
  const { ids } = (await sub.json()) as { ids: string[] };
  assert.equal(sub.status, 202);
  const records: TaskRecord[] = [];
  for (const id of ids) {
    records.push(await until(async () => {
      const rec = (await (await call(`/v1/tasks/${id}/wait?timeoutMs=10000`, T.planner)).json()) as TaskRecord;
      return rec.state === 'succeeded' || rec.state === 'failed' ? rec : undefined;
    }, 60_000, `task ${id} ended`));
  }
  assert.deepEqual(records.map((r) => r.state), ['succeeded', 'succeeded', 'succeeded', 'succeeded', 'failed', 'failed']);

  const nodeId = pool!.coordinator.hub.connected()[0]!.id;
  const series = await until(async () => {
    const [up] = await query('up{job="coordinator"}');
    const [done] = await query('coordinator_tasks_completed_total{kind="agent"}');
    const [failed] = await query('coordinator_tasks_failed_total{kind="agent",code="AGENT_TRAP"}');
    const [spawn] = await query('coordinator_agent_spawn_seconds_count');
    const perNode = await query('coordinator_node_max_concurrent');
    const ok = up?.value[1] === '1' && done?.value[1] === '4' && failed?.value[1] === '2' && spawn?.value[1] === '4' && perNode.length === 1;
    return ok ? { perNode, spawn } : undefined;
  }, 60_000, `series in Prometheus (log: ${prometheusLog.slice(-300)})`);
  assert.equal(series.perNode[0]!.metric.node, nodeId);
  assert.ok(series.perNode[0]!.metric.node_name, 'the node_name label');
  assert.equal(Number(series.perNode[0]!.value[1]), 1, 'one worker');
  const [latency] = await query('histogram_quantile(0.5, sum by (le) (coordinator_task_latency_seconds_bucket{kind="agent"}))');
  assert.ok(latency && Number(latency.value[1]) > 0, 'task latency quantile from the histogram');
  const [proc] = await query('process_cpu_seconds_total{job="coordinator"}');
  assert.ok(proc, 'default process metrics');
  const [healthy] = await query(`coordinator_node_healthy{node="${nodeId}"}`);
  assert.equal(healthy?.value[1], '1');
});
