/**
 * The fair scheduler (server/fair.ts) and its explanations: a tenant that floods the queue does not starve a
 * quiet one of the same priority; aging lifts a low priority task above a stream of newer high ones; a queued
 * task says why it waits (no capable node, a model too large for every node, its tenant's maxLeased, busy
 * nodes, backoff) and fails NO_CAPABLE_NODE at its deadline when no node could take it.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import type { Assignment, TaskRecord } from '../shared';
import { makeBuiltinModels } from '../tools/tiny-model/builtin';
import { createCoordinator, type CoordinatorOptions } from './index';
import { HELLO_WAT, OpenCoordinators, apiClient, tempDir, until, wat } from './testing';
import { testDb } from './postgres-testing';

const tmp = tempDir();
let hello: Uint8Array<ArrayBuffer>;
const open = new OpenCoordinators();

before(async () => {
  hello = await wat(HELLO_WAT);
  await makeBuiltinModels(join(tmp.dir, 'models'), { only: ['tiny-llama'] });
});
after(async () => {
  await open.closeAll();
  tmp.cleanup();
});

let dbN = 0;
async function start(opts: CoordinatorOptions = {}) {
  const c = await createCoordinator({ dbPath: testDb(join(tmp.dir, `f${dbN++}.db`)), drainTimeoutMs: 200, modelsDir: join(tmp.dir, 'models'), ...opts });
  const { connect, nodes } = open.track(c);
  const api = apiClient(c.url);
  assert.equal((await api('/v1/agents/hello/versions/1', { method: 'PUT', headers: { 'content-type': 'application/wasm' }, body: hello })).status, 201);
  const submit = async (specs: Array<Record<string, unknown>>): Promise<string[]> => {
    const res = await api('/v1/tasks', { method: 'POST', json: { tasks: specs.map((s) => ({ kind: 'agent', payload: { agent: 'hello' }, ...s })) } });
    assert.equal(res.status, 202, JSON.stringify(res.body));
    return res.body.ids as string[];
  };
  const task = async (id: string) => (await api(`/v1/tasks/${id}`)).body as TaskRecord;
  return { c, api, connect, nodes, submit, task };
}

const train = (extra: Record<string, unknown> = {}) => ({
  kind: 'train',
  maxAttempts: 1,
  payload: { model: 'tiny-llama', adapterName: 'a', dataset: '{"messages":[{"role":"user","content":"hi"},{"role":"assistant","content":"hello"}]}', lora: { rank: 2, alpha: 4, targetModules: ['q_proj'] }, steps: 1 },
  ...extra,
});

test('a tenant flooding the queue does not starve a quiet one of the same priority; weights share the pool', async () => {
  const { connect, submit } = await start({ prefetch: 1 });
  const flood = await submit(Array.from({ length: 300 }, () => ({ tenant: 'flood' })));
  const quiet = new Set(await submit(Array.from({ length: 3 }, () => ({ tenant: 'quiet' }))));
  const node = await connect({ maxConcurrent: 1 });
  const order: string[] = [];
  for (let i = 0; i < 8; i++) {
    const [a] = (await node.assignments(1)) as [Assignment];
    order.push(a.taskId);
    node.succeed([a]);
  }
  // Start-time fair queueing alternates the two tenants: the quiet one's 3 tasks are among the first 6, not after 300.
  const at = order.flatMap((id, i) => (quiet.has(id) ? [i] : []));
  assert.equal(at.length, 3, `quiet tasks in the first 8: ${JSON.stringify(at)}`);
  assert.ok(at[2]! <= 6, `quiet tasks at ${JSON.stringify(at)}`);
  assert.ok(order.filter((id) => flood.includes(id)).length >= 4);
});

test('a weight of 3 gets three tasks for each of a weight-1 tenant', async () => {
  const { api, connect, submit } = await start({ prefetch: 1 });
  assert.equal((await api('/v1/quotas/heavy', { method: 'PUT', json: { weight: 3 } })).status, 200);
  const heavy = new Set(await submit(Array.from({ length: 100 }, () => ({ tenant: 'heavy' }))));
  await submit(Array.from({ length: 100 }, () => ({ tenant: 'light' })));
  const node = await connect({ maxConcurrent: 1 });
  let heavyCount = 0;
  for (let i = 0; i < 40; i++) {
    const [a] = (await node.assignments(1)) as [Assignment];
    if (heavy.has(a.taskId)) heavyCount++;
    node.succeed([a]);
  }
  assert.ok(heavyCount >= 28 && heavyCount <= 32, `heavy got ${heavyCount} of 40 (3:1 is 30)`);
});

test('aging: a low priority task is not starved by a stream of newer high priority ones', async () => {
  for (const agingMs of [0, 20]) {
    const { connect, submit } = await start({ prefetch: 1, agingMs });
    const [low] = await submit([{ priority: 0 }]);
    await submit([{ priority: 9 }]);
    const node = await connect({ maxConcurrent: 1 });
    let pickedAt = -1;
    const started = Date.now();
    for (let i = 0; i < 400 && Date.now() - started < 4_000; i++) {
      const [a] = (await node.assignments(1)) as [Assignment];
      if (a.taskId === low) {
        pickedAt = i;
        break;
      }
      await submit([{ priority: 9 }]);
      node.succeed([a]);
    }
    if (agingMs === 0) assert.equal(pickedAt, -1, 'without aging the stream of priority 9 keeps it waiting');
    else assert.ok(pickedAt > 0, 'with aging it starts while the stream goes on');
  }
});

test('a queued task says why it waits, and fails NO_CAPABLE_NODE at its deadline when no node could run it', async () => {
  const { api, connect, nodes, submit, task } = await start({ prefetch: 1, retryBaseMs: 60_000 });
  await connect({ maxConcurrent: 1, name: 'agents-only' });

  // No node runs train tasks.
  const sub = await api('/v1/tasks', { method: 'POST', json: train({ deadline: Date.now() + 1_500 }) });
  assert.equal(sub.status, 202);
  const trainId = sub.body.id as string;
  const rec = await task(trainId);
  assert.equal(rec.waiting?.reason, 'no_capable_node');
  assert.match(rec.waiting!.message, /No connected node runs train tasks/);
  assert.ok(rec.waiting!.since <= Date.now() && rec.waiting!.since >= rec.createdAt);

  // A train node whose memory budget is smaller than the model.
  const small = await connect({ kinds: ['train'], webgpu: true, sequences: 1, memoryBudgetBytes: 1024, name: 'small' });
  const tooLarge = await until(async () => {
    const r = await task(trainId);
    return /needs about/.test(r.waiting?.message ?? '') ? r : undefined;
  });
  assert.equal(tooLarge.waiting!.reason, 'no_capable_node');
  assert.match(tooLarge.waiting!.message, /Model tiny-llama needs about [\d.]+ MiB for training; the largest memory budget of the 1 connected node that could run it is 0\.0 MiB/);
  assert.equal(small.inbox.filter((m) => m.type === 'task.assign').length, 0, 'the small node is sent nothing');
  const failed = (await api(`/v1/tasks/${trainId}/wait?timeoutMs=5000`)).body as TaskRecord;
  assert.equal(failed.state, 'failed');
  assert.equal(failed.error?.code, 'NO_CAPABLE_NODE');
  assert.match(failed.error!.message, /needs about/);

  // Capacity: the one agent node is busy with a task it holds.
  const [first, second] = await submit([{}, {}]);
  const busy = await until(async () => {
    const r = await task(second!);
    return r.waiting?.reason === 'capacity' ? r : undefined;
  });
  assert.match(busy.waiting!.message, /busy/);
  const agents = nodes[0]!;
  const [a] = (await agents.assignments(1)) as [Assignment];
  assert.equal(a.taskId, first);
  // Backoff: a retryable failure puts it back with a long backoff.
  agents.fail([a], 'WORKER_CRASHED', 'crash');
  const backoff = await until(async () => {
    const r = await task(first!);
    return r.waiting?.reason === 'backoff' ? r : undefined;
  });
  assert.ok(backoff.waiting!.since <= Date.now());
  assert.equal((await task(first!)).state, 'queued');
  const [b] = (await agents.assignments(1)) as [Assignment];
  assert.equal(b.taskId, second);
  agents.succeed([b]);
});

test("a tenant's maxLeased: the rest of its tasks wait with reason quota while another tenant's run", async () => {
  const { api, connect, submit, task } = await start({ prefetch: 1 });
  assert.equal((await api('/v1/quotas/capped', { method: 'PUT', json: { maxLeased: 1 } })).status, 200);
  assert.deepEqual((await api('/v1/quotas')).body.quotas.capped, { maxQueued: null, agentLimits: null, weight: null, maxLeased: 1 });
  const [c1, c2] = await submit([{ tenant: 'capped' }, { tenant: 'capped' }]);
  const [other] = await submit([{ tenant: 'other' }]);
  const node = await connect({ maxConcurrent: 3 });
  const got = await node.assignments(2);
  assert.deepEqual(new Set(got.map((a) => a.taskId)), new Set([c1, other]));
  const waiting = await task(c2!);
  assert.equal(waiting.waiting?.reason, 'quota');
  assert.match(waiting.waiting!.message, /maxLeased \(1\)/);
  node.succeed(got.filter((a) => a.taskId === c1));
  const [next] = (await node.assignments(1)) as [Assignment];
  assert.equal(next.taskId, c2);
  assert.equal((await task(c2!)).waiting, null, 'a leased task has no waiting');
});
