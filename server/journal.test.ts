import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { AppError, newLeaseId, newNodeId, newTaskId, type TaskId } from '../shared';
import { Journal, errorInfo } from './journal';
import { startPostgres } from './postgres-testing';
import { SqliteDb } from './sql';
import { ManualClock, journalTask, tempDir } from './testing';

const tmp = tempDir();
after(() => tmp.cleanup());
let n = 0;
const file = () => join(tmp.dir, `j${n++}.db`);
const pg = await startPostgres();
after(() => pg.close());
const sqlite = (j: Journal) => (j.db as SqliteDb).raw;

/** The stores every behaviour test runs on: a fresh SQLite file, a fresh PostgreSQL database. */
const STORES: Array<{ name: string; fresh(): Promise<string> }> = [
  { name: 'SQLite', fresh: async () => file() },
  { name: 'PostgreSQL', fresh: () => pg.database() },
];

const task = journalTask;

test('SQLite: WAL; submits commit with synchronous=FULL, attempt records with the chosen mode', () => {
  const j = new Journal(file());
  const raw = sqlite(j);
  assert.equal(raw.pragma('journal_mode', { simple: true }), 'wal');
  assert.equal(j.attemptSync, 'normal');
  const seen: number[] = [];
  const pragma = raw.pragma.bind(raw);
  raw.pragma = ((source: string, options?: any) => {
    const out = pragma(source, options);
    if (/^synchronous = /.test(source)) seen.push(pragma('synchronous', { simple: true }) as number);
    return out;
  }) as typeof raw.pragma;
  const t = task();
  j.insertTasks([t]);
  assert.equal(raw.pragma('synchronous', { simple: true }), 2, 'FULL for submits');
  const leaseId = newLeaseId();
  j.leaseBatch([{ taskId: t.id, leaseId, nodeId: newNodeId() }], []);
  j.complete([{ taskId: t.id, leaseId, outcome: { ok: true, result: 1 } }]);
  assert.deepEqual(seen, [1, 2, 1, 2], 'NORMAL around lease and result commits, FULL again after');
  j.close();
  const full = new Journal(file(), undefined, { attemptSync: 'full' });
  full.insertTasks([task()]);
  assert.equal(sqlite(full).pragma('synchronous', { simple: true }), 2);
  full.close();
});

for (const store of STORES) {
  describe(`journal on ${store.name}`, () => {
    test('a journal reopened without a clean close has every task; leased ones are queued again', async () => {
      const path = await store.fresh();
      const clock = { t: 1_000_000, now: () => clock.t };
      const a = new Journal(path, clock);
      const tasks = Array.from({ length: 100 }, () => task());
      a.insertTasks(tasks);
      const node = newNodeId();
      const leases = tasks.slice(0, 10).map((t) => ({ taskId: t.id, leaseId: newLeaseId(), nodeId: node }));
      assert.equal(a.leaseBatch(leases, []).leased.size, 10);
      // `a` is never closed: a second process opening the file sees what `a` committed.
      const b = new Journal(path, clock);
      if (b.shared) {
        // PostgreSQL: `a` may be another coordinator still running; its leases stand until it stops beating.
        assert.equal(b.requeuedOnOpen, 0);
        assert.deepEqual(b.reclaimOrphans(10_000), [], 'a beat within the dead time');
        assert.equal(b.countsByState().leased, 10);
        clock.t += 10_001;
        assert.equal(b.beat(), true);
        const moved = b.reclaimOrphans(10_000);
        assert.equal(moved.length, 10);
        assert.ok(moved.every((e) => e.state === 'queued' && e.errorCode === 'LEASE_EXPIRED'));
        assert.deepEqual(b.liveCoordinators(10_000).map((c) => c.id), [b.coordinatorId], 'the dead one is forgotten');
        assert.equal(a.beat(), false, 'a coordinator judged dead learns it at its next beat');
      } else {
        assert.equal(b.requeuedOnOpen, 10);
      }
      const counts = b.countsByState();
      assert.equal(counts.queued, 100);
      assert.equal(counts.leased, 0);
      const rec = b.getTask(tasks[0]!.id)!;
      assert.equal(rec.error?.code, 'LEASE_EXPIRED');
      assert.equal(rec.attempts, 1);
      // The old lease is gone: its result is a late duplicate.
      const late = b.complete([{ taskId: tasks[0]!.id, leaseId: leases[0]!.leaseId, outcome: { ok: true, result: 1 } }]);
      assert.deepEqual(late, [null]);
      assert.equal(b.duplicatesDropped, 1);
      b.close();
      a.close();
    });

    test('a result is written once; other leases and repeats are dropped and counted', async () => {
      const j = new Journal(await store.fresh());
      const t = task();
      j.insertTasks([t]);
      const leaseId = newLeaseId();
      j.leaseBatch([{ taskId: t.id, leaseId, nodeId: newNodeId() }], []);
      const wrong = j.complete([{ taskId: t.id, leaseId: newLeaseId(), outcome: { ok: true, result: 'wrong' } }]);
      assert.deepEqual(wrong, [null]);
      const [ok] = j.complete([{ taskId: t.id, leaseId, outcome: { ok: true, result: { v: 1 } } }]);
      assert.equal(ok?.state, 'succeeded');
      const again = j.complete([{ taskId: t.id, leaseId, outcome: { ok: false, error: errorInfo('INTERNAL', 'x') } }]);
      assert.deepEqual(again, [null]);
      assert.equal(j.duplicatesDropped, 2);
      assert.deepEqual(j.getTask(t.id)!.result, { v: 1 });
      j.close();
    });

    test('failures: retryable → queued with capped full-jitter backoff, then dead; others → failed', async () => {
      const clock = new ManualClock();
      const j = new Journal(await store.fresh(), clock);
      j.retryBaseMs = 100;
      const t = task({ maxAttempts: 3 });
      const f = task();
      j.insertTasks([t, f]);
      const runAfters: number[] = [];
      for (let attempt = 1; attempt <= 3; attempt++) {
        const leaseId = newLeaseId();
        assert.equal(j.leaseBatch([{ taskId: t.id, leaseId, nodeId: newNodeId() }], []).leased.size, 1);
        const [e] = j.complete([{ taskId: t.id, leaseId, outcome: { ok: false, error: errorInfo('WORKER_CRASHED', `c${attempt}`) } }], () => 0.999);
        assert.equal(e?.state, attempt < 3 ? 'queued' : 'dead');
        runAfters.push(j.getTask(t.id)!.runAfter - clock.now());
      }
      assert.deepEqual(runAfters.slice(0, 2), [99, 199], 'base·2^(attempt−1)·jitter');
      const dead = j.getTask(t.id)!;
      assert.equal(dead.error?.message, 'c3');
      assert.equal(dead.attempts, 3);

      const leaseId = newLeaseId();
      j.leaseBatch([{ taskId: f.id, leaseId, nodeId: newNodeId() }], []);
      const [e] = j.complete([{ taskId: f.id, leaseId, outcome: { ok: false, error: errorInfo('AGENT_FUEL_EXHAUSTED', 'fuel') } }]);
      assert.equal(e?.state, 'failed');
      j.close();
    });

    test('ready: priority then age, backoff respected; deadline expiry and lease in one batch', async () => {
      const clock = new ManualClock();
      const j = new Journal(await store.fresh(), clock);
      const low = task({ priority: 1 });
      const high = task({ priority: 8 });
      const old = task({ priority: 5 });
      const young = task({ priority: 5 });
      j.insertTasks([low, high, old, young]);
      assert.deepEqual(j.ready('agent', clock.now(), 10).map((r) => r.id), [high.id, old.id, young.id, low.id]);
      const late = errorInfo('DEADLINE_EXCEEDED', 'late');
      const { leased, expired } = j.leaseBatch([{ taskId: high.id, leaseId: newLeaseId(), nodeId: newNodeId() }], [{ id: low.id, error: late }]);
      assert.deepEqual([...leased], [high.id]);
      assert.equal(expired[0]?.state, 'failed');
      assert.equal(j.getTask(low.id)!.error?.code, 'DEADLINE_EXCEEDED');
      // Leasing a task no longer queued is skipped.
      assert.equal(j.leaseBatch([{ taskId: high.id, leaseId: newLeaseId(), nodeId: newNodeId() }], []).leased.size, 0);
      j.close();
    });

    test('batch insert is one transaction: an idempotency conflict writes nothing', async () => {
      const j = new Journal(await store.fresh());
      j.insertTasks([task({ idempotencyKey: 'k', specHash: 'h1' })]);
      const fresh = task();
      assert.throws(
        () => j.insertTasks([fresh, task({ idempotencyKey: 'k', specHash: 'h2' })]),
        (e: unknown) => e instanceof AppError && e.code === 'IDEMPOTENCY_CONFLICT',
      );
      assert.equal(j.getTask(fresh.id), null);
      const [same] = j.insertTasks([task({ idempotencyKey: 'k', specHash: 'h1' })]);
      assert.equal(same?.created, false);
      j.close();
    });

    test('cancel answers the lease a leased task held', async () => {
      const j = new Journal(await store.fresh());
      const t = task();
      j.insertTasks([t]);
      const leaseId = newLeaseId();
      const nodeId = newNodeId();
      j.leaseBatch([{ taskId: t.id, leaseId, nodeId }], []);
      assert.deepEqual(j.cancel(t.id, 'stop'), { leaseId, nodeId });
      assert.equal(j.cancel(t.id, 'again'), undefined);
      assert.equal(j.cancel(newTaskId() as TaskId, 'none'), undefined);
      j.close();
    });

    test('queued tasks past their deadline fail without a node', async () => {
      const clock = new ManualClock();
      const j = new Journal(await store.fresh(), clock);
      const soon = task({ deadline: clock.now() + 10 });
      const later = task({ deadline: clock.now() + 10_000 });
      const none = task();
      j.insertTasks([soon, later, none]);
      const seen: string[] = [];
      const errorFor = (row: { id: string }) => {
        seen.push(row.id);
        return errorInfo('NO_CAPABLE_NODE', 'nobody');
      };
      assert.deepEqual(j.expireDeadlines(errorFor), []);
      clock.advance(11);
      const ended = j.expireDeadlines(errorFor);
      assert.deepEqual(ended.map((e) => e.taskId), [soon.id]);
      assert.deepEqual(seen, [soon.id]);
      assert.equal(ended[0]!.errorCode, 'NO_CAPABLE_NODE');
      assert.equal(j.getTask(soon.id)!.error?.code, 'NO_CAPABLE_NODE');
      assert.equal(j.getTask(later.id)!.state, 'queued');
      j.close();
    });

    test('webhooks outlive their coordinator: an ended task stays undelivered until marked done; the sweep claims it once per claim time, after the grace', async () => {
      const path = await store.fresh();
      const clock = new ManualClock(1_000_000);
      const j = new Journal(path, clock);
      const hooked = task({ webhook: 'https://hooks.example/x' });
      const plain = task();
      const queued = task({ webhook: 'https://hooks.example/y' });
      j.insertTasks([hooked, plain, queued]);
      const node = newNodeId();
      const leases = [hooked, plain].map((t) => ({ taskId: t.id, leaseId: newLeaseId(), nodeId: node }));
      j.leaseBatch(leases, []);
      j.complete(leases.map((l) => ({ taskId: l.taskId, leaseId: l.leaseId, outcome: { ok: true, result: 1 } })));
      assert.deepEqual(j.claimWebhooks(1_000, 5_000, 10), [], 'within the grace, its own coordinator is delivering it');
      clock.advance(1_000);
      assert.deepEqual(j.claimWebhooks(1_000, 5_000, 10), [hooked.id], 'past it: only the ended task with a webhook');
      const other = new Journal(path, clock);
      assert.deepEqual(other.claimWebhooks(1_000, 5_000, 10), [], 'claimed: no one else delivers it meanwhile');
      clock.advance(5_001);
      assert.deepEqual(other.claimWebhooks(1_000, 5_000, 10), [hooked.id], 'a claim that ran out (its claimer died) is taken again');
      other.webhookDone(hooked.id);
      clock.advance(60_000);
      assert.deepEqual(j.claimWebhooks(1_000, 5_000, 10), [], 'delivered: never again');
      other.close();
      j.close();
    });

    test('settings: the first writer wins; adapter versions number on; blob chunks read back as written', async () => {
      const path = await store.fresh();
      const a = new Journal(path);
      const b = new Journal(path);
      assert.equal(a.setting('webhook_secret', () => 'first'), 'first');
      assert.equal(b.setting('webhook_secret', () => 'second'), 'first', 'another coordinator reads the same');
      const config = Buffer.from('{"r":2}');
      const weights = Buffer.from([0, 1, 2, 255]);
      assert.equal(a.putAdapterVersion('tiny', 'alpha', (v) => ({ version: v }), config, weights), 1);
      assert.equal(b.putAdapterVersion('tiny', 'alpha', (v) => ({ version: v }), config, weights), 2, 'the next number, from either');
      assert.equal(a.putAdapterVersion('tiny', 'beta', (v) => ({ version: v }), config, weights), 1);
      assert.deepEqual(b.adapterVersions(), [
        { base: 'tiny', name: 'alpha', version: 1 },
        { base: 'tiny', name: 'alpha', version: 2 },
        { base: 'tiny', name: 'beta', version: 1 },
      ]);
      const v2 = b.adapterVersion('tiny', 'alpha', 2)!;
      assert.deepEqual(JSON.parse(v2.meta), { version: 2 });
      assert.deepEqual([...v2.weights], [0, 1, 2, 255]);
      assert.equal(b.adapterVersion('tiny', 'alpha', 3), null);
      const chunk = Buffer.alloc(70_000, 7);
      a.putBlobChunk('ab'.repeat(32), 0, chunk);
      a.putBlobChunk('ab'.repeat(32), 0, Buffer.from('other bytes'));
      assert.deepEqual(b.blobChunk('ab'.repeat(32), 0), chunk, 'a chunk once written stays as written');
      assert.equal(b.blobChunk('ab'.repeat(32), 1), null);
      b.close();
      a.close();
    });
  });
}

test('SQLite: a journal from before per-tenant idempotency keys: its tenants’ keys are scoped on open, and still answer a resend', () => {
  const path = file();
  const old = new Journal(path);
  const t = task({ tenant: 'acme', idempotencyKey: 'k1', specHash: 'h1' });
  const u = task({ idempotencyKey: 'k1-global', specHash: 'h2' });
  old.insertTasks([t, u]);
  // As the older coordinator wrote them: the key as sent, and schema version 0.
  old.db.prepare('UPDATE tasks SET idempotency_key = ? WHERE id = ?').run('k1', t.id);
  sqlite(old).pragma('user_version = 0');
  old.close();
  const j = new Journal(path);
  assert.equal(sqlite(j).pragma('user_version', { simple: true }), 6, 'migrated to the current version (1: tenant keys, 2: traces, 3: blobs, 4: fair scheduling, 5: lease owners, 6: durable webhooks, shared bytes)');
  assert.equal(j.getTask(t.id)!.idempotencyKey, 'k1', 'the record shows the key as sent');
  const [again] = j.insertTasks([{ ...task({ tenant: 'acme', idempotencyKey: 'k1', specHash: 'h1' }) }]);
  assert.deepEqual(again, { id: t.id, created: false }, 'a resend by the same tenant finds its task');
  const [other] = j.insertTasks([task({ tenant: 'beta', idempotencyKey: 'k1', specHash: 'h9' })]);
  assert.equal(other!.created, true, 'another tenant’s same key is its own');
  const [global] = j.insertTasks([task({ idempotencyKey: 'k1-global', specHash: 'h2' })]);
  assert.deepEqual(global, { id: u.id, created: false }, 'keys of untenanted tasks are unchanged');
  j.close();
});

test('SQLite: a journal from before traces (user_version 1, no traceparent column) opens: old tasks show trace null, new ones keep theirs', () => {
  const path = file();
  const old = new Journal(path);
  const t = task();
  old.insertTasks([t]);
  // As the older coordinator wrote it: no traceparent column, schema version 1.
  old.db.exec('ALTER TABLE tasks DROP COLUMN traceparent');
  sqlite(old).pragma('user_version = 1');
  old.close();
  const j = new Journal(path);
  assert.equal(sqlite(j).pragma('user_version', { simple: true }), 6);
  assert.equal(j.getTask(t.id)!.trace, null);
  assert.equal(j.getTask(t.id)!.state, 'queued');
  const traced = task({ traceparent: '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01' });
  j.insertTasks([traced]);
  assert.deepEqual(j.getTask(traced.id)!.trace, { traceId: '0af7651916cd43dd8448eb211c80319c', spanId: 'b7ad6b7169203331' });
  const [ready] = j.ready('agent', Number.MAX_SAFE_INTEGER, 10).filter((r) => r.id === traced.id);
  assert.equal(ready!.traceparent, '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01', 'the scheduler reads it with the ready row');
  j.close();
});

test('SQLite: a journal from before durable webhooks (user_version 5): tasks that ended then count as delivered; new ones are swept', () => {
  const path = file();
  const clock = new ManualClock(1_000_000);
  const old = new Journal(path, clock);
  const t = task({ webhook: 'https://hooks.example/old' });
  old.insertTasks([t]);
  const lease = { taskId: t.id, leaseId: newLeaseId(), nodeId: newNodeId() };
  old.leaseBatch([lease], []);
  old.complete([{ ...lease, outcome: { ok: true, result: 1 } }]);
  // As the older coordinator wrote it: no webhook columns, schema version 5.
  old.db.exec('DROP INDEX tasks_webhooks; ALTER TABLE tasks DROP COLUMN webhook_done; ALTER TABLE tasks DROP COLUMN webhook_claim');
  sqlite(old).pragma('user_version = 5');
  old.close();
  const j = new Journal(path, clock);
  assert.equal(sqlite(j).pragma('user_version', { simple: true }), 6);
  clock.advance(60_000);
  assert.deepEqual(j.claimWebhooks(1_000, 5_000, 10), [], 'its coordinator delivered it (or it is beyond recall)');
  const fresh = task({ webhook: 'https://hooks.example/new' });
  j.insertTasks([fresh]);
  const l2 = { taskId: fresh.id, leaseId: newLeaseId(), nodeId: newNodeId() };
  j.leaseBatch([l2], []);
  j.complete([{ ...l2, outcome: { ok: true, result: 2 } }]);
  clock.advance(1_000);
  assert.deepEqual(j.claimWebhooks(1_000, 5_000, 10), [fresh.id]);
  j.close();
});
