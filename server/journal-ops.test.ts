import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { newLeaseId, newNodeId, newTaskId } from '../shared';
import { Journal, type NewTask } from './journal';
import { backupSqlite, copyToPostgres, restoreSqlite } from './journal-ops';
import { startPostgres } from './postgres-testing';
import { tempDir } from './testing';

const tmp = tempDir();
after(() => tmp.cleanup());
const pg = await startPostgres();
after(() => pg.close());

function task(i: number, extra: Partial<NewTask> = {}): NewTask {
  return {
    id: newTaskId(),
    kind: 'agent',
    priority: i % 10,
    maxAttempts: 3,
    deadline: null,
    idempotencyKey: `key-${i}`,
    specHash: `h${i}`,
    tenant: i % 3 === 0 ? 'acme' : null,
    webhook: null,
    moduleHash: null,
    moduleSize: null,
    model: null,
    payload: { agent: 'x', input: i },
    labels: null,
    ...extra,
  };
}

test('online backup while tasks are written: the backup holds every task acknowledged before it began; restore keeps the replaced journal aside', async () => {
  const path = join(tmp.dir, 'live.db');
  const live = new Journal(path);
  const before = Array.from({ length: 2000 }, (_, i) => task(i));
  for (let i = 0; i < before.length; i += 100) live.insertTasks(before.slice(i, i + 100));
  const backup = join(tmp.dir, 'backup.db');
  const running = backupSqlite(path, backup);
  // The coordinator keeps writing while the backup runs.
  const during = Array.from({ length: 300 }, (_, i) => task(10_000 + i));
  for (let i = 0; i < during.length; i += 50) live.insertTasks(during.slice(i, i + 50));
  const { pages } = await running;
  assert.ok(pages > 0);
  await assert.rejects(backupSqlite(path, backup), /exists/, 'an existing file is never overwritten');

  const target = join(tmp.dir, 'restored.db');
  const fresh = new Journal(target);
  fresh.insertTasks([task(99_999)]);
  fresh.close();
  const r = restoreSqlite(backup, target, 1234);
  assert.equal(r.replaced, `${target}.replaced-1234`);
  assert.ok(existsSync(r.replaced!), 'the journal it replaced is kept');
  const restored = new Journal(target);
  for (const t of before) assert.equal(restored.getTask(t.id)?.id, t.id, `task ${t.id} is in the backup`);
  const [again] = restored.insertTasks([task(7)]);
  assert.deepEqual(again, { id: before[7]!.id, created: false }, 'idempotency keys answer as before');
  restored.close();
  live.close();
  assert.throws(() => restoreSqlite(join(tmp.dir, 'nope.db'), target), /unable to open|does not exist|nope/);
});

test('copy a SQLite journal into PostgreSQL: every row, ids, order and idempotency keys kept; leased tasks queued again; an occupied destination refused', async () => {
  const path = join(tmp.dir, 'src.db');
  const src = new Journal(path);
  src.putModule('a'.repeat(64), new Uint8Array([0, 97, 115, 109]));
  src.putAgentVersion('x', '1.0.0', 'a'.repeat(64), { fuel: 1 });
  src.putQuota('acme', { maxQueued: 10, agentLimits: null, weight: 2, maxLeased: 3 });
  const tasks = Array.from({ length: 450 }, (_, i) => task(i));
  src.insertTasks(tasks);
  const leased = src.leaseBatch([{ taskId: tasks[5]!.id, leaseId: newLeaseId(), nodeId: newNodeId() }], []);
  assert.equal(leased.leased.size, 1);
  const ids = src.pageTasks({ limit: 1000 }).tasks.map((t) => t.id);
  src.close();

  const url = await pg.database();
  // Through the command, as an operator runs it.
  const run = spawnSync(process.execPath, ['--import', 'tsx', join(import.meta.dirname, '..', 'scripts', 'journal.ts'), 'copy', '--db', path, '--to', url], { encoding: 'utf8', timeout: 120_000 });
  assert.equal(run.status, 0, run.stderr);
  const out = JSON.parse(run.stdout.trim().split('\n').pop()!) as { copied: Record<string, number> };
  assert.equal(out.copied.tasks, 450);
  assert.equal(out.copied.modules, 1);
  assert.equal(out.copied.agent_versions, 1);

  const dest = new Journal(url);
  assert.deepEqual(dest.pageTasks({ limit: 1000 }).tasks.map((t) => t.id), ids, 'the same tasks in the same order');
  assert.equal(dest.getTask(tasks[5]!.id)!.state, 'queued', 'the lease the stopped coordinator held is gone');
  assert.deepEqual(dest.getTask(tasks[3]!.id)!.payload, { agent: 'x', input: 3 });
  assert.deepEqual(dest.insertTasks([task(3)])[0], { id: tasks[3]!.id, created: false }, 'a tenant’s idempotency key answers its task');
  assert.equal(dest.insertTasks([task(5000)])[0]!.created, true, 'new tasks get new seq numbers after the copied ones');
  assert.equal(dest.pageTasks({ limit: 1 }).tasks[0]!.idempotencyKey, 'key-5000');
  assert.deepEqual(dest.getModule('a'.repeat(64)), Buffer.from([0, 97, 115, 109]));
  assert.equal(dest.quotas()[0]!.weight, 2);
  dest.close();
  assert.throws(() => copyToPostgres(path, url), /already holds 451 tasks/);
});
