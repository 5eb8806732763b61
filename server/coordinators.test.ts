/**
 * Several coordinators on one PostgreSQL journal (a throwaway cluster, server/postgres-testing.ts): claims that
 * never lease a task twice, work submitted on one coordinator run by another's node, long-polls, event streams
 * and cancels across coordinators, a node that moves to another coordinator keeping its lease, and a
 * coordinator that dies leaving nothing stuck.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { after, before, describe, test } from 'node:test';
import pg from 'pg';
import type { TaskId } from '../shared';
import { createCoordinator, type Coordinator, type CoordinatorOptions } from './index';
import { Journal } from './journal';
import { startPostgres, type TestPostgres } from './postgres-testing';
import { HELLO_WAT, OpenCoordinators, apiClient, journalTask, tempDir, trainedAdapterFiles, until, wat } from './testing';
import { makeBuiltinModels } from '../tools/tiny-model/builtin';

const run = promisify(execFile);
let pgc: TestPostgres;
const open = new OpenCoordinators();
const tmpFiles = tempDir('coordinators-');
before(async () => {
  pgc = await startPostgres();
});
after(async () => {
  await open.closeAll();
  pgc?.close();
  tmpFiles.cleanup();
});

async function coordinators(n: number, opts: CoordinatorOptions = {}) {
  const db = await pgc.database();
  const out: Array<Coordinator & ReturnType<OpenCoordinators['track']>> = [];
  for (let i = 0; i < n; i++) {
    const c = await createCoordinator({ dbPath: db, beatMs: 100, ...opts });
    out.push(Object.assign(c, open.track(c)));
  }
  const put = await apiClient(out[0]!.url)('/v1/agents/hello/versions/1', { method: 'PUT', headers: { 'content-type': 'application/wasm' }, body: await wat(HELLO_WAT) });
  assert.equal(put.status, 201);
  return { db, cs: out };
}

async function count(db: string, sql: string, params: unknown[] = []): Promise<number> {
  const c = new pg.Client({ connectionString: db });
  await c.connect();
  try {
    return Number((await c.query(sql, params)).rows[0].n);
  } finally {
    await c.end();
  }
}

describe('several coordinators on one PostgreSQL journal', () => {
  test('two processes claiming the same ready tasks never lease one twice (many rounds each)', async () => {
    const db = await pgc.database();
    const j = new Journal(db);
    const total = 3000;
    for (let i = 0; i < total; i += 500) {
      j.insertTasks(
        Array.from({ length: 500 }, (_, k) => journalTask({ id: `t-race-${i + k}` as TaskId, priority: (i + k) % 3, payload: { agent: 'hello' } })),
      );
    }
    j.close();
    const racer = join(import.meta.dirname, 'claim-racer.ts');
    const runs = await Promise.all([0, 1].map(() => run(process.execPath, ['--import', 'tsx', racer, db, '20'], { timeout: 120_000 })));
    const results = runs.map((r) => JSON.parse(r.stdout.trim().split('\n').pop()!) as { leased: string[]; rounds: number });
    const all = results.flatMap((r) => r.leased);
    assert.equal(new Set(all).size, all.length, 'no task leased by both');
    assert.equal(all.length, total, 'every task leased');
    for (const r of results) {
      assert.ok(r.leased.length > 0, 'both claimed some: locked rows are skipped, not waited on');
      assert.ok(r.rounds >= 50, `${r.rounds} rounds`);
    }
    assert.equal(await count(db, `SELECT COUNT(*) AS n FROM tasks WHERE state = 'leased' AND attempts = 1`), total);
  });

  test('a task submitted on one coordinator runs on a node of another; long-poll, events and cancel answer across them', async () => {
    const { cs } = await coordinators(2);
    const [a, b] = cs as [(typeof cs)[0], (typeof cs)[0]];
    const node = await b.connect({ maxConcurrent: 4 });
    const apiA = apiClient(a.url);
    const sub = await apiA('/v1/tasks', { method: 'POST', json: { kind: 'agent', payload: { agent: 'hello', input: 'x' } } });
    assert.equal(sub.status, 202);
    const id = sub.body.id as string;
    // The long-poll and the event stream wait on A; the task runs on B's node.
    const waited = apiA(`/v1/tasks/${id}/wait?timeoutMs=20000`);
    const events = fetch(`${a.url}/v1/tasks/${id}/events`).then((r) => r.text());
    await until(() => a.watch.watched(id), 5_000, 'A watches the task');
    const [assigned] = (await node.next('task.assign', 10_000)).tasks;
    assert.equal(assigned!.taskId, id);
    await until(() => b.watch.has(id), 5_000, 'B heard that A watches it');
    node.send({ type: 'task.progress', taskId: id, leaseId: assigned!.leaseId, progress: { kind: 'log', line: 'step 1 of 2' } });
    node.succeed([assigned!]);
    const done = await waited;
    assert.equal(done.status, 200);
    assert.equal(done.body.state, 'succeeded');
    assert.equal(done.body.nodeId, node.id);
    const text = await events;
    assert.match(text, /event: progress\ndata: .*"line":"step 1 of 2"/);
    assert.match(text, /event: record\ndata: .*"state":"succeeded"/);

    // Cancel on A: B tells its node.
    const sub2 = await apiA('/v1/tasks', { method: 'POST', json: { kind: 'agent', payload: { agent: 'hello', input: 'y' } } });
    const [second] = (await node.next('task.assign', 10_000)).tasks;
    assert.equal(second!.taskId, sub2.body.id);
    const cancelled = await apiA(`/v1/tasks/${sub2.body.id}/cancel`, { method: 'POST', json: { reason: 'changed my mind' } });
    assert.equal(cancelled.body.state, 'cancelled');
    const told = await node.next('task.cancel', 5_000);
    assert.equal(told.taskId, sub2.body.id);
    await until(() => b.scheduler.leases.size === 0, 5_000, 'B released the lease');
  });

  test('blobs and adapters uploaded to one coordinator are served by another from the journal (bytes checked); a manifest there lists the adapter', async () => {
    const models = join(tmpFiles.dir, 'models');
    await makeBuiltinModels(models, { only: ['tiny-llama'] });
    const { cs, db } = await coordinators(2, { modelsDir: models });
    const [a, b] = cs as [(typeof cs)[0], (typeof cs)[0]];
    const apiA = apiClient(a.url);
    const apiB = apiClient(b.url);
    // 9 MiB: three chunks in the journal, the last one short.
    const blob = randomBytes(9 << 20);
    const up = await apiA('/v1/blobs', { method: 'POST', headers: { 'content-type': 'application/octet-stream' }, body: blob });
    assert.equal(up.status, 201);
    const hex = up.body.sha256 as string;
    assert.equal(await count(db, 'SELECT COUNT(*) AS n FROM blob_chunks WHERE sha256 = $1', [hex]), 3);
    const got = await fetch(`${b.url}/v1/blobs/${hex}`);
    assert.equal(got.status, 200);
    assert.ok(Buffer.from(await got.arrayBuffer()).equals(blob), 'B serves the bytes A received');
    // Bytes that do not hash to their name are not served (nor kept).
    const bad = await apiA('/v1/blobs', { method: 'POST', headers: { 'content-type': 'application/octet-stream' }, body: Buffer.from('tampered later') });
    await run('psql', [db, '-c', `UPDATE blob_chunks SET bytes = '\\x00' WHERE sha256 = '${bad.body.sha256}'`]);
    const refused = await apiB(`/v1/blobs/${bad.body.sha256}`);
    assert.equal(refused.status, 404);
    assert.equal(refused.body.error.code, 'BLOB_NOT_FOUND');

    const files = await trainedAdapterFiles(join(models, 'tiny-llama'), 'tiny-llama');
    const put = (api: typeof apiA) =>
      api(`/v1/adapters/tiny-llama/shared?config=${encodeURIComponent(files.configJson)}`, {
        method: 'PUT',
        body: files.safetensors as Uint8Array<ArrayBuffer>,
        headers: { 'content-type': 'application/octet-stream' },
      });
    assert.equal((await put(apiA)).body.version, 1);
    assert.equal((await put(apiB)).body.version, 2, 'versions are numbered by the journal, not by each folder');
    const listed = await apiB('/v1/adapters');
    assert.deepEqual(
      listed.body.adapters.map((r: { name: string; latest: number }) => [r.name, r.latest]),
      [['shared', 2]],
    );
    const onA = await fetch(`${a.url}/v1/adapters/tiny-llama/shared@2/adapter_model.safetensors`);
    assert.ok(Buffer.from(await onA.arrayBuffer()).equals(Buffer.from(files.safetensors)), 'A serves the version B received');
    const models2 = await apiA('/v1/models');
    assert.ok(models2.body.data.some((m: { id: string }) => m.id === 'tiny-llama:shared'), 'A lists it for the OpenAI routes');

    // Merged on A: B lists the merged model too and, asked for it, makes its own copy, byte for byte A's.
    const merged = await apiA('/v1/adapters/tiny-llama/shared@2/merge', { method: 'POST', json: {} });
    assert.equal(merged.status, 201, JSON.stringify(merged.body));
    const id = merged.body.model as string;
    assert.equal(id, 'tiny-llama-shared-v2');
    await until(async () => ((await apiB('/v1/models')).body.data as { id: string }[]).some((m) => m.id === id), 5000, 'B lists the merged model');
    const manifest = async (api: typeof apiA) => {
      const r = await api(`/v1/models/${id}/manifest`);
      assert.equal(r.status, 200, JSON.stringify(r.body));
      return (r.body.files as { path: string; size: number; sha256: string }[]).map((f) => `${f.path} ${f.size} ${f.sha256}`).sort();
    };
    const onB = await manifest(apiB);
    assert.ok(onB.some((f) => f.startsWith('model.safetensors ')) && onB.some((f) => f.startsWith('onnx/model.onnx ')), onB.join('\n'));
    assert.deepEqual(onB, await manifest(apiA), 'the same files, byte for byte');
  });

  test('a node that moves to another coordinator keeps its lease: its result there is the one recorded', async () => {
    const { cs, db } = await coordinators(2, { nodeGraceMs: 300 });
    const [a, b] = cs as [(typeof cs)[0], (typeof cs)[0]];
    const first = await a.connect({ maxConcurrent: 1 });
    const sub = await apiClient(a.url)('/v1/tasks', { method: 'POST', json: { kind: 'agent', payload: { agent: 'hello' } } });
    const [job] = (await first.next('task.assign', 10_000)).tasks;
    assert.equal(job!.taskId, sub.body.id);
    await first.close();
    const moved = await b.connect({ maxConcurrent: 1, nodeId: first.id, secret: first.secret });
    assert.equal(moved.id, first.id, 'the node keeps its id on the other coordinator');
    moved.heartbeat([job!.leaseId]);
    await until(() => b.scheduler.leases.has(job!.leaseId), 5_000, 'B adopted the lease');
    // A's grace for the node passes: its lease expiry applies no more (B owns the lease).
    await new Promise((r) => setTimeout(r, 600));
    moved.succeed([job!]);
    const rec = (await apiClient(a.url)(`/v1/tasks/${sub.body.id}/wait?timeoutMs=10000`)).body;
    assert.equal(rec.state, 'succeeded');
    assert.equal(rec.attempts, 1, 'it ran once');
    assert.equal(await count(db, `SELECT COUNT(*) AS n FROM events WHERE type = 'lease_adopted'`), 1);
    // Another node cannot take a lease that is not its own.
    const thief = await b.connect({ maxConcurrent: 1 });
    thief.heartbeat([job!.leaseId]);
    thief.succeed([job!]);
    const refused = await thief.next('error', 5_000);
    assert.equal(refused.error.code, 'LEASE_NOT_HELD');
  });

  test('a replica lease moves with its node too: the replicas agree across two coordinators', async () => {
    const { cs, db } = await coordinators(2, { nodeGraceMs: 300 });
    const [a, b] = cs as [(typeof cs)[0], (typeof cs)[0]];
    const n1 = await a.connect({ maxConcurrent: 1 });
    const n2 = await a.connect({ maxConcurrent: 1 });
    const sub = await apiClient(a.url)('/v1/tasks', { method: 'POST', json: { kind: 'agent', payload: { agent: 'hello', input: 1 }, replicas: 2 } });
    assert.equal(sub.status, 202, JSON.stringify(sub.body));
    const [j1] = (await n1.next('task.assign', 10_000)).tasks;
    const [j2] = (await n2.next('task.assign', 10_000)).tasks;
    assert.equal(j1!.taskId, sub.body.id);
    assert.equal(j2!.taskId, sub.body.id);
    await n1.close();
    const moved = await b.connect({ maxConcurrent: 1, nodeId: n1.id, secret: n1.secret });
    moved.heartbeat([j1!.leaseId]);
    await until(() => b.scheduler.leases.get(j1!.leaseId)?.replica !== undefined, 5_000, 'B adopted the replica lease');
    await new Promise((r) => setTimeout(r, 600)); // A's grace for n1 passes: B owns that replica now
    moved.succeed([j1!]);
    n2.succeed([j2!]);
    const rec = (await apiClient(a.url)(`/v1/tasks/${sub.body.id}/wait?timeoutMs=10000`)).body;
    assert.equal(rec.state, 'succeeded');
    assert.deepEqual(rec.replicas.map((r: { state: string; agreed: boolean; attempts: number }) => [r.state, r.agreed, r.attempts]), [
      ['done', true, 1],
      ['done', true, 1],
    ], 'each replica ran once, and they agreed');
    assert.equal(await count(db, `SELECT COUNT(*) AS n FROM events WHERE type = 'lease_adopted' AND data LIKE '%"replica"%'`), 1);
  });

  test('fair share holds over the pool: weights 3:1 over nodes of two coordinators, and a quiet tenant is not starved by a flood', async () => {
    const { cs } = await coordinators(2, { prefetch: 1 });
    const [a, b] = cs as [(typeof cs)[0], (typeof cs)[0]];
    const apiA = apiClient(a.url);
    const apiB = apiClient(b.url);
    assert.equal((await apiA('/v1/quotas/heavy', { method: 'PUT', json: { weight: 3 } })).status, 200);
    await new Promise((r) => setTimeout(r, 1_500)); // B reads quotas from the journal every second
    const submit = async (api: typeof apiA, tenant: string, n: number): Promise<string[]> => {
      const res = await api('/v1/tasks', { method: 'POST', json: { tasks: Array.from({ length: n }, () => ({ kind: 'agent', tenant, payload: { agent: 'hello' } })) } });
      assert.equal(res.status, 202);
      return res.body.ids;
    };
    const heavy = new Set(await submit(apiA, 'heavy', 100));
    await submit(apiB, 'light', 100);
    const na = await a.connect({ maxConcurrent: 1 });
    const nb = await b.connect({ maxConcurrent: 1 });
    let heavyCount = 0;
    for (let i = 0; i < 20; i++) {
      for (const node of [na, nb]) {
        const [t] = await node.assignments(1);
        if (heavy.has(t!.taskId)) heavyCount++;
        node.succeed([t!]);
      }
    }
    assert.ok(heavyCount >= 26 && heavyCount <= 34, `heavy got ${heavyCount} of 40 over both coordinators (3:1 is 30)`);

    // A flood submitted to A, three quiet tasks to B, at the same priority: the quiet ones start among the first few.
    const flood = new Set(await submit(apiA, 'flood', 300));
    const quiet = new Set(await submit(apiB, 'quiet', 3));
    const order: string[] = [];
    for (let i = 0; i < 30 && [...quiet].some((id) => !order.includes(id)); i++) {
      for (const node of [na, nb]) {
        const [t] = await node.assignments(1);
        order.push(t!.taskId);
        node.succeed([t!]);
      }
    }
    const at = order.flatMap((id, i) => (quiet.has(id) ? [i] : []));
    assert.equal(at.length, 3, `the quiet tenant's tasks all started: ${JSON.stringify(at)}`);
    // Four tenants are queued now (heavy 3, light 1, flood 1, quiet 1: weight 6 in all), so fair sharing owes the quiet
    // one a task in every 6 assignments: its 3 start within 3 × 6 = 18, where a FIFO queue would put them after 300.
    assert.ok(at[2]! < 3 * 6, `the quiet tenant's tasks started at ${JSON.stringify(at)} (before that, the rest of heavy and light, and the flood)`);
    assert.ok(order.some((id) => flood.has(id)));
  });

  test('a coordinator that stops beating leaves nothing stuck: another requeues its leases and runs them', async () => {
    const { cs, db } = await coordinators(2, { coordinatorDeadMs: 1_000, nodeGraceMs: 60_000 });
    const [a, b] = cs as [(typeof cs)[0], (typeof cs)[0]];
    const na = await a.connect({ maxConcurrent: 3 });
    const api = apiClient(a.url);
    const sub = await api('/v1/tasks', { method: 'POST', json: { tasks: Array.from({ length: 3 }, (_, i) => ({ kind: 'agent', payload: { agent: 'hello', input: i } })) } });
    assert.equal(sub.status, 202);
    await na.assignments(3, 10_000);
    // A goes silent without a word (as if its process froze): no beats, no results, its socket dropped.
    a.scheduler.stop();
    na.ws.terminate();
    const nb = await b.connect({ maxConcurrent: 3 });
    const rerun = await nb.assignments(3, 15_000);
    assert.deepEqual(rerun.map((t) => t.taskId).sort(), [...sub.body.ids].sort());
    nb.succeed(rerun);
    await until(async () => (await count(db, `SELECT COUNT(*) AS n FROM tasks WHERE state = 'succeeded' AND attempts = 2`)) === 3, 10_000, 'all three ran again and succeeded');
    assert.ok(b.journal.orphansRequeued >= 3);
    assert.deepEqual(b.journal.liveCoordinators(1_000).map((c) => c.id), [b.journal.coordinatorId]);
  });

  test('a node whose circuit opened on one coordinator finds it open on another: circuits live in the journal', async () => {
    const { cs, db } = await coordinators(2, { circuitThreshold: 2, circuitCooldownMs: 60_000, retryBaseMs: 1 });
    const [a, b] = cs as [(typeof cs)[0], (typeof cs)[0]];
    const first = await a.connect({ maxConcurrent: 2 });
    await apiClient(a.url)('/v1/tasks', { method: 'POST', json: { tasks: [0, 1].map((i) => ({ kind: 'agent', payload: { agent: 'hello', input: i } })) } });
    const jobs = await first.assignments(2, 10_000);
    first.fail(jobs, 'WORKER_CRASHED');
    await until(() => a.scheduler.nodes.get(first.id)?.circuit.state(Date.now()) === 'open', 5_000, 'the circuit opened on A');
    await until(async () => (await count(db, `SELECT COUNT(*) AS n FROM node_reputation WHERE circuit_state = 'open'`)) === 1, 5_000, 'and was written down');
    await first.close();
    const moved = await b.connect({ maxConcurrent: 2, nodeId: first.id, secret: first.secret });
    assert.equal(moved.id, first.id);
    const view = ((await apiClient(b.url)('/v1/nodes')).body.nodes as Array<{ id: string; circuit: { state: string; opens: number } }>).find((n) => n.id === first.id)!;
    assert.equal(view.circuit.state, 'open', 'B takes up the open circuit');
    assert.equal(view.circuit.opens, 1);
    // Open: B sends it nothing while the cooldown lasts, though the two tasks are queued again.
    await assert.rejects(moved.next('task.assign', 500));
  });

  test('PostgreSQL stopped mid-run: submits answer a coded 503 meanwhile, nothing accepted is lost, work resumes by itself', async () => {
    // A cluster of its own: stopping it leaves the other tests' alone.
    const own = await startPostgres();
    try {
      const db = await own.database();
      const a = await createCoordinator({ dbPath: db, beatMs: 100 });
      const b = await createCoordinator({ dbPath: db, beatMs: 100 });
      const ta = open.track(a);
      const tb = open.track(b);
      const api = apiClient(a.url);
      assert.equal((await api('/v1/agents/hello/versions/1', { method: 'PUT', headers: { 'content-type': 'application/wasm' }, body: await wat(HELLO_WAT) })).status, 201);
      // Nodes that succeed whatever they are given, on both coordinators.
      for (const t of [ta, tb]) {
        const n = await t.connect({ maxConcurrent: 8 });
        n.ws.on('message', (data) => {
          const msg = JSON.parse(String(data)) as { type: string; tasks?: Array<{ taskId: string; leaseId: string }> };
          if (msg.type === 'task.assign') setTimeout(() => n.succeed(msg.tasks as never), 20);
        });
      }
      const batch = (n: number, from: number) => ({ tasks: Array.from({ length: n }, (_, i) => ({ kind: 'agent', payload: { agent: 'hello', input: from + i }, idempotencyKey: `outage-${from + i}` })) });
      const first = await api('/v1/tasks', { method: 'POST', json: batch(300, 0) });
      assert.equal(first.status, 202);
      own.stop('fast');
      const refused = await api('/v1/tasks', { method: 'POST', json: batch(10, 300) });
      assert.equal(refused.status, 503);
      assert.equal(refused.body.error.code, 'STORE_UNAVAILABLE');
      assert.equal(refused.headers.get('retry-after'), '1', 'the caller is told when to retry');
      const read = await apiClient(b.url)(`/v1/tasks/${first.body.ids[0]}`);
      assert.equal(read.status, 503);
      await new Promise((r) => setTimeout(r, 1_500));
      own.start();
      // Bounded: the coordinators reconnect by themselves and finish every accepted task.
      await until(async () => (await count(db, `SELECT COUNT(*) AS n FROM tasks WHERE state = 'succeeded'`)) === 300, 30_000, 'all 300 accepted before the outage succeeded');
      const again = await api('/v1/tasks', { method: 'POST', json: batch(10, 300) });
      assert.equal(again.status, 202, 'submits are accepted again');
      await until(async () => (await count(db, `SELECT COUNT(*) AS n FROM tasks WHERE state = 'succeeded'`)) === 310, 30_000, 'the new ones run too');
      assert.equal(await count(db, 'SELECT COUNT(*) AS n FROM tasks'), 310, 'nothing recorded twice');
      assert.ok(a.scheduler.storeUnavailable + b.scheduler.storeUnavailable > 0, 'the schedulers noticed the outage');
    } finally {
      await open.closeAll();
      own.close();
    }
  });
});
