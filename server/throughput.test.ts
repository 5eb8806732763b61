/**
 * The hot path end to end over real HTTP and real sockets: batches submitted,
 * journaled, assigned to two nodes, results journaled. The nodes here answer
 * at once (no agent runs), so this measures the coordinator alone; it prints
 * the rate and asserts a floor well under the 60,000 tasks/min goal so a slow
 * shared machine does not make it flaky.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { createCoordinator } from './index';
import { HELLO_WAT, TestNode, apiClient, tempDir, until, wat } from './testing';

const tmp = tempDir();
after(() => tmp.cleanup());

const TOTAL = Number(process.env.COORD_BENCH_TASKS ?? 20_000);
const BATCH = 1000;

test(`throughput: ${TOTAL} agent tasks through two socket nodes`, async () => {
  const c = await createCoordinator({ dbPath: join(tmp.dir, 'bench.db') });
  const nodes: TestNode[] = [];
  try {
    const api = apiClient(c.url);
    await api('/v1/agents/hello/versions/1', { method: 'PUT', headers: { 'content-type': 'application/wasm' }, body: await wat(HELLO_WAT) });
    let results = 0;
    for (let i = 0; i < 2; i++) {
      const node = await TestNode.connect(c.url, { name: `bench-${i}`, maxConcurrent: 256 });
      nodes.push(node);
      node.ws.on('message', (data) => {
        const msg = JSON.parse(String(data));
        if (msg.type !== 'task.assign') return;
        results += msg.tasks.length;
        node.succeed(msg.tasks, () => ({ exitCode: 0, output: 1, stderr: '', fuelUsed: 1, durationMs: 0.3, memoryBytes: 65536 }));
      });
    }
    const spec = { kind: 'agent', payload: { agent: 'hello', input: { x: 1 } } };
    const body = JSON.stringify({ tasks: Array.from({ length: BATCH }, () => spec) });
    const t0 = performance.now();
    let submitMs = 0;
    for (let sent = 0; sent < TOTAL; sent += BATCH) {
      const s = performance.now();
      const res = await fetch(`${c.url}/v1/tasks`, { method: 'POST', headers: { 'content-type': 'application/json' }, body });
      assert.equal(res.status, 202);
      await res.arrayBuffer();
      submitMs += performance.now() - s;
    }
    await until(() => c.journal.countsByState().succeeded === TOTAL, 120_000, 'all tasks succeeded');
    const ms = performance.now() - t0;
    const perMin = (TOTAL / ms) * 60_000;
    const kpis = (await api('/v1/kpis')).body.kpis;
    console.log(
      `throughput: ${TOTAL} tasks in ${ms.toFixed(0)} ms = ${Math.round(perMin)} tasks/min; ` +
        `submit ${(submitMs / (TOTAL / BATCH)).toFixed(1)} ms per ${BATCH}-task batch; ` +
        `latency p50 ${kpis.latencyP50.value} ms; assigned ${results}`,
    );
    assert.ok(perMin > 10_000, `${Math.round(perMin)} tasks/min`);
  } finally {
    for (const n of nodes) await n.close();
    await c.close();
  }
});
