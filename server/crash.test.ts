/**
 * Durability for real: a coordinator process killed with SIGKILL after it
 * answered 202 loses nothing; a new one on the same journal requeues the tasks the
 * dead one had leased (at once on SQLite; on PostgreSQL once the dead one has stopped beating) and runs them.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { createCoordinator } from './index';
import { testDb } from './postgres-testing';
import { HELLO_WAT, TestNode, apiClient, localTokens, receiver, spawnCoordinator, tempDir, until, wat, type ReceivedRequest } from './testing';
import { WEBHOOK_SECRET_FILE, signWebhook } from './webhook';

const tmp = tempDir();
after(() => tmp.cleanup());

test('SIGKILL after 202: every accepted task survives; leased ones are requeued and run', async () => {
  const db = testDb(join(tmp.dir, 'crash.db'));
  const { child, url, exited } = await spawnCoordinator(['--port', '0', '--db', db, '--data-dir', tmp.dir]);
  try {
    // Without --auth, main.ts wrote auth.json beside the journal: an admin token and a node join token.
    const tokens = localTokens(tmp.dir);
    const admin = tokens.admin;
    const joinToken = tokens.join;
    const api = apiClient(url, admin);
    const put = await api('/v1/agents/hello/versions/1', { method: 'PUT', headers: { 'content-type': 'application/wasm' }, body: await wat(HELLO_WAT) });
    assert.equal(put.status, 201);
    const batch = await api('/v1/tasks', { method: 'POST', json: { tasks: Array.from({ length: 200 }, (_, i) => ({ kind: 'agent', payload: { agent: 'hello', input: i } })) } });
    assert.equal(batch.status, 202);
    const one = await api('/v1/tasks', { method: 'POST', json: { kind: 'agent', payload: { agent: 'hello' }, idempotencyKey: 'crash-1' } });
    assert.equal(one.status, 202);
    const node = await TestNode.connect(url, { maxConcurrent: 5, token: joinToken });
    const leased = await node.assignments(10);
    child.kill('SIGKILL');
    await exited;
    await node.closed;

    // A dead coordinator is judged so after coordinatorDeadMs without a beat (PostgreSQL: others may share the
    // journal, so opening requeues nothing); a SQLite file has one coordinator, and opening requeues its leases.
    const c = await createCoordinator({ dbPath: db, nodeGraceMs: 0, coordinatorDeadMs: 1_000, beatMs: 100 });
    try {
      const api2 = apiClient(c.url);
      if (c.journal.shared) await until(() => c.journal.orphansRequeued >= leased.length, 10_000, "the dead coordinator's leases requeued");
      const requeued = c.journal.requeuedOnOpen + c.journal.orphansRequeued;
      assert.ok(requeued >= leased.length, `${requeued} requeued, ${leased.length} seen by the node`);
      const ids: string[] = [...batch.body.ids, one.body.id];
      for (const id of ids) assert.equal((await api2(`/v1/tasks/${id}`)).status, 200, `task ${id} survived`);
      const first = (await api2(`/v1/tasks/${leased[0]!.taskId}`)).body;
      assert.equal(first.state, 'queued');
      assert.equal(first.error.code, 'LEASE_EXPIRED');
      // The idempotency key still answers the same task.
      const again = await api2('/v1/tasks', { method: 'POST', json: { kind: 'agent', payload: { agent: 'hello' }, idempotencyKey: 'crash-1' } });
      assert.equal(again.status, 200);
      assert.equal(again.body.id, one.body.id);
      // The agent registry survived too: a node runs everything.
      const n2 = await TestNode.connect(c.url, { maxConcurrent: 64 });
      let done = 0;
      while (done < ids.length) {
        const msg = await n2.next('task.assign');
        n2.succeed(msg.tasks);
        done += msg.tasks.length;
      }
      await until(() => c.journal.countsByState().succeeded === ids.length, 5_000, 'all succeeded');
      await n2.close();
    } finally {
      await c.close();
    }
  } finally {
    if (child.exitCode === null) child.kill('SIGKILL');
  }
});

/** Whether `hit` is signed with `secret` (the signature recomputed for its own timestamp). */
function signedWith(secret: string, hit: ReceivedRequest): boolean {
  const sig = String(hit.headers['x-webhook-signature']);
  const t = Number(/^t=(\d+),/.exec(sig)?.[1]);
  return signWebhook(secret, hit.body, t) === sig;
}

test('SIGKILL while a webhook is being delivered: the next coordinator on the journal delivers it, with the same id and secret', async () => {
  const db = testDb(join(tmp.dir, 'webhook-crash.db'));
  const dataDir = join(tmp.dir, 'webhook-crash');
  // The first request is held unanswered (the dying coordinator's delivery); later ones are answered 200.
  const rx = await receiver((n, res) => {
    if (n > 1) res.end('ok');
  });
  const { child, url, exited } = await spawnCoordinator(['--port', '0', '--db', db, '--data-dir', dataDir, '--webhook-allow-host', '127.0.0.1']);
  let c: Awaited<ReturnType<typeof createCoordinator>> | null = null;
  try {
    const api = apiClient(url, localTokens(dataDir).admin);
    const put = await api('/v1/agents/hello/versions/1', { method: 'PUT', headers: { 'content-type': 'application/wasm' }, body: await wat(HELLO_WAT) });
    assert.equal(put.status, 201);
    const sub = await api('/v1/tasks', { method: 'POST', json: { kind: 'agent', payload: { agent: 'hello' }, webhook: `${rx.url}/hook` } });
    assert.equal(sub.status, 202);
    assert.equal((await api(`/v1/tasks/${sub.body.id}/cancel`, { method: 'POST', json: {} })).body.state, 'cancelled');
    await until(() => rx.hits.length === 1, 10_000, 'the first delivery reached the receiver');
    child.kill('SIGKILL');
    await exited;

    c = await createCoordinator({ dbPath: db, dataDir, coordinatorDeadMs: 1_000, beatMs: 100, webhook: { allowHosts: ['127.0.0.1'], graceMs: 200 } });
    await until(() => rx.hits.length >= 2, 10_000, 'the next coordinator delivered the webhook its predecessor left');
    const [first, second] = rx.hits as [ReceivedRequest, ReceivedRequest];
    assert.equal(second.headers['x-task-id'], sub.body.id);
    assert.equal(second.headers['x-webhook-id'], first.headers['x-webhook-id'], 'receivers tell the repeat by its id');
    const secret = c.journal.shared ? c.journal.setting('webhook_secret', () => 'unset') : readFileSync(join(dataDir, WEBHOOK_SECRET_FILE), 'utf8').trim();
    assert.ok(signedWith(secret, first), 'the dead coordinator signed with the shared secret');
    assert.ok(signedWith(secret, second), 'and so did the next one');
    assert.equal((JSON.parse(second.body) as { state: string }).state, 'cancelled');
    await until(() => c!.journal.claimWebhooks(0, 0, 10).length === 0, 5_000, 'marked delivered in the journal');
    await new Promise((r) => setTimeout(r, 1_500));
    assert.equal(rx.hits.length, 2, 'delivered once more, not again and again');
  } finally {
    if (child.exitCode === null) child.kill('SIGKILL');
    await c?.close();
    rx.server.closeAllConnections();
    await rx.close();
  }
});
