/**
 * A hostile node over a real WebSocket: forged and foreign leases, id takeover,
 * circuit poisoning, hoarding, other origins and joins without a token. Each is
 * refused with its code, and the honest node beside it is unaffected.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { Auth, createCoordinator, type CoordinatorOptions } from './index';
import { originAllowed } from './hub';
import { newLeaseId, type Assignment } from '../shared';
import { HELLO_WAT, ManualClock, OpenCoordinators, TestNode, apiClient, capabilities, tempDir, until, wat } from './testing';

const tmp = tempDir('hostile-');
let hello: Uint8Array<ArrayBuffer>;
const open = new OpenCoordinators();

const ADMIN = 'admin-token-0123456789abcdef';
const NODE = 'node-token-0123456789abcdef';
const PLANNER = 'planner-token-0123456789abcdef';

before(async () => {
  hello = await wat(HELLO_WAT);
});
after(async () => {
  await open.closeAll();
  tmp.cleanup();
});

let dbN = 0;
async function start(opts: CoordinatorOptions = {}, token?: string) {
  const c = await createCoordinator({ dbPath: join(tmp.dir, `h${dbN++}.db`), drainTimeoutMs: 200, retryBaseMs: 1, ...opts });
  const { connect, open: openSocket } = open.track(c);
  const raw = apiClient(c.url);
  const auth: Record<string, string> = token ? { authorization: `Bearer ${token}` } : {};
  const api: typeof raw = (path, init = {}) => raw(path, { ...init, headers: { ...auth, ...(init.headers as Record<string, string> | undefined) } });
  const put = await api('/v1/agents/hello/versions/1', { method: 'PUT', headers: { 'content-type': 'application/wasm' }, body: hello });
  assert.equal(put.status, 201, JSON.stringify(put.body));
  const submit = async (n = 1): Promise<string[]> => {
    const res = await api('/v1/tasks', { method: 'POST', json: { tasks: Array.from({ length: n }, () => ({ kind: 'agent', payload: { agent: 'hello' } })) } });
    assert.equal(res.status, 202, JSON.stringify(res.body));
    return res.body.ids;
  };
  const task = async (id: string) => (await api(`/v1/tasks/${id}`)).body;
  const nodeView = async (id: string) => (await api('/v1/nodes?all=1')).body.nodes.find((x: { id: string }) => x.id === id);
  return { c, api, connect, open: openSocket, submit, task, nodeView };
}

/** Waits until `n` assignments sat in these nodes' inboxes, then has each node succeed its own. */
async function finishAcross(nodes: readonly TestNode[], n: number): Promise<void> {
  const count = () => nodes.reduce((k, x) => k + x.inbox.reduce((j, m) => j + (m.type === 'task.assign' ? m.tasks.length : 0), 0), 0);
  await until(() => count() >= n, 5_000, `${n} assignments`);
  for (const x of nodes) {
    const mine = x.inbox.flatMap((m) => (m.type === 'task.assign' ? m.tasks : []));
    if (mine.length) x.succeed(mine);
  }
}

function results(tasks: readonly Pick<Assignment, 'taskId' | 'leaseId'>[], code?: string): unknown {
  return {
    type: 'task.result',
    results: tasks.map((a) =>
      code
        ? { taskId: a.taskId, leaseId: a.leaseId, ok: false, error: { code, name: 'AppError', message: 'forged' } }
        : { taskId: a.taskId, leaseId: a.leaseId, ok: true, result: { exitCode: 0, output: 'forged' } },
    ),
  };
}

test("forged and foreign leases are refused LEASE_NOT_HELD and change nothing: not the task, not the holder's counts", async () => {
  const { c, connect, submit, task, nodeView } = await start();
  const honest = await connect({ name: 'honest', maxConcurrent: 2 });
  const ids = await submit(2);
  const leases = await honest.assignments(2);
  const mallory = await connect({ name: 'mallory' });

  // A result on the honest node's lease (its ids leaked), and one on a lease id made up.
  mallory.send(results([leases[0]!]));
  const foreign = await mallory.next('error');
  assert.equal(foreign.error.code, 'LEASE_NOT_HELD');
  assert.deepEqual(foreign.error.details?.refused, [{ taskId: leases[0]!.taskId, leaseId: leases[0]!.leaseId }]);
  mallory.send(results([{ taskId: leases[1]!.taskId, leaseId: newLeaseId() }], 'AGENT_TRAP'));
  assert.equal((await mallory.next('error')).error.code, 'LEASE_NOT_HELD');
  // Progress on a foreign lease, too.
  mallory.send({ type: 'task.progress', taskId: leases[1]!.taskId, leaseId: leases[1]!.leaseId, progress: { kind: 'log', line: 'mine now' } });
  assert.equal((await mallory.next('error')).error.code, 'LEASE_NOT_HELD');
  // A heartbeat listing the honest node's leases renews nothing of theirs for mallory.
  mallory.heartbeat(leases.map((l) => l.leaseId));

  for (const id of ids) assert.equal((await task(id)).state, 'leased');
  assert.equal(c.scheduler.nodes.get(honest.id)!.leases.size, 2, 'the honest node still holds both');
  assert.equal(c.journal.duplicatesDropped, 0);
  const m = await nodeView(mallory.id);
  assert.deepEqual([m.tasksDone, m.tasksFailed, m.held], [0, 0, 0]);

  honest.succeed(leases, () => ({ exitCode: 0, output: 'honest' }));
  for (const id of ids) {
    const done = await until(async () => {
      const r = await task(id);
      return r.state === 'succeeded' ? r : undefined;
    });
    assert.equal(done.result.output, 'honest');
    assert.equal(done.nodeId, honest.id);
    assert.equal(done.attempts, 1);
  }
  const h = await nodeView(honest.id);
  assert.deepEqual([h.tasksDone, h.tasksFailed], [2, 0]);
  // The honest node's own late repeat is a duplicate (dropped, counted), not an error.
  honest.succeed(leases.slice(0, 1));
  await until(() => c.journal.duplicatesDropped === 1, 2_000, 'repeat dropped');
  assert.equal(honest.inbox.filter((x) => x.type === 'error').length, 0);
});

test("another node cannot trip a node's circuit by failing its leases", async () => {
  const { c, connect, submit, task, nodeView } = await start({ circuitThreshold: 2, prefetch: 1 });
  const victim = await connect({ name: 'victim', maxConcurrent: 3 });
  const ids = await submit(3);
  const leases = await victim.assignments(3);
  const mallory = await connect({ name: 'mallory' });
  for (const l of leases) {
    mallory.send(results([l], 'WORKER_CRASHED'));
    assert.equal((await mallory.next('error')).error.code, 'LEASE_NOT_HELD');
  }
  const v = await nodeView(victim.id);
  assert.deepEqual(v.circuit, { state: 'closed', consecutiveFailures: 0, opens: 0 });
  assert.equal((await nodeView(mallory.id)).circuit.consecutiveFailures, 0, 'refused reports count for no one');
  for (const id of ids) assert.equal((await task(id)).state, 'leased');
  victim.succeed(leases);
  await until(() => c.scheduler.nodes.get(victim.id)!.done === 3, 2_000, 'victim finished its tasks');
  assert.equal(c.scheduler.nodes.get(victim.id)!.circuit.state(Date.now()), 'closed');
});

test('a node id from GET /v1/nodes cannot be taken over: without its secret the hello gets a new id and the real node keeps its socket and leases', async () => {
  const { c, api, connect, open: openRaw, submit, task } = await start({ nodeGraceMs: 5_000 });
  const real = await connect({ name: 'real' });
  const [id] = await submit(1);
  const [lease] = await real.assignments(1);
  assert.match(real.secret, /^[A-Za-z0-9_-]{43}$/, '32 random bytes, base64url');

  const listing = await api('/v1/nodes?all=1');
  assert.ok(!JSON.stringify(listing.body).includes(real.secret), 'GET /v1/nodes does not reveal the secret');
  assert.ok(!JSON.stringify(listing.body).includes('secret'));

  const noSecret = await connect({ name: 'thief', nodeId: real.id });
  assert.notEqual(noSecret.id, real.id);
  const wrong = await connect({ name: 'thief', nodeId: real.id, secret: 'A'.repeat(43) });
  assert.notEqual(wrong.id, real.id);
  // Its own secret does not open another node's id either.
  const crossed = await connect({ name: 'thief', nodeId: real.id, secret: noSecret.secret });
  assert.notEqual(crossed.id, real.id);
  // An id the coordinator does not know is not handed out on request.
  const unknown = await openRaw();
  unknown.send({ type: 'hello', protocol: 1, nodeId: '00000000-0000-4000-8000-00000000beef', name: 'thief', capabilities: capabilities() });
  assert.notEqual((await unknown.next('welcome')).nodeId, '00000000-0000-4000-8000-00000000beef');

  assert.equal(real.ws.readyState, real.ws.OPEN, 'the real node was not disconnected');
  const session = c.scheduler.nodes.get(real.id)!;
  assert.equal(session.socket !== null && session.leases.has(lease!.leaseId), true);
  assert.equal(session.name, 'real');

  // The real node reconnects with its secret: same id, same lease.
  await real.close();
  const back = await connect({ name: 'real', nodeId: real.id, secret: real.secret });
  assert.equal(back.id, real.id);
  back.succeed([lease!]);
  const done = await until(async () => {
    const r = await task(id!);
    return r.state === 'succeeded' ? r : undefined;
  });
  assert.deepEqual([done.nodeId, done.attempts], [real.id, 1]);
});

test('a connection replaced by a resume speaks for the node no more', async () => {
  const { c, connect, submit } = await start();
  const first = await connect({ name: 'a' });
  await submit(1);
  const [lease] = await first.assignments(1);
  const second = await connect({ name: 'a', nodeId: first.id, secret: first.secret });
  assert.equal(second.id, first.id);
  assert.equal((await first.closed).code, 4000);
  assert.equal(c.scheduler.nodes.get(first.id)!.leases.has(lease!.leaseId), true);
});

test('hoarding: a huge advertised queue gets at most the earned window and the allocator cap; a node that only heartbeats loses its leases and an honest node finishes them', async () => {
  const clock = new ManualClock();
  const { c, connect, submit, task, nodeView } = await start({
    clock,
    prefetch: 8,
    stallGraceMs: 1_000,
    heartbeatIntervalMs: 60_000,
    leaseMs: 600_000,
    circuitThreshold: 3,
    tickMs: 10,
  });
  const hoarder = await connect({ name: 'hoarder', maxConcurrent: 1, queueDepth: 65_536 });
  const ids = await submit(40);
  const held = await hoarder.assignments(8);
  await until(() => c.scheduler.dispatch() === 0 && c.scheduler.nodes.get(hoarder.id)!.leases.size === 8, 2_000, 'dispatch settled');
  assert.equal(held.length, 8, 'one worker × prefetch 8: a node earns a deeper queue only by finishing tasks');
  const hv = await nodeView(hoarder.id);
  assert.equal(hv.queueDepth, 127, 'what it asked for, capped at maxQueuePerWorker');
  assert.equal(hv.window, 8);

  // The honest node takes the rest and its window grows as it finishes them.
  const honest = await connect({ name: 'honest', maxConcurrent: 2, queueDepth: 100 });
  let finished = 0;
  const work = async (until_: number): Promise<void> => {
    while (finished < until_) {
      const batch = (await honest.next('task.assign')).tasks;
      honest.succeed(batch);
      finished += batch.length;
    }
  };
  await work(40 - 8);
  await until(() => c.scheduler.nodes.get(honest.id)!.done === 32, 2_000, 'honest node done with the queue');
  assert.equal((await nodeView(honest.id)).window, 2 + 14 + 32, 'each finished task earned one more place (up to the 102 it asked for)');

  // The hoarder only heartbeats: past its longest budget (5 s, the default timeoutMs) plus the grace, it loses its leases.
  for (let i = 0; i < 7; i++) {
    clock.advance(1_000);
    hoarder.heartbeat(held.map((l) => l.leaseId));
    await until(() => c.scheduler.nodes.get(hoarder.id)!.lastSeen === clock.now(), 2_000, 'heartbeat seen');
  }
  const cancels = new Set<string>();
  while (cancels.size < 8) cancels.add((await hoarder.next('task.cancel')).taskId);
  assert.deepEqual([...cancels].sort(), held.map((l) => l.taskId).sort());
  clock.advance(100); // past the retry backoff
  await work(40);
  const records = await Promise.all(
    ids.map((id) =>
      until(async () => {
        const r = await task(id);
        return r.state === 'succeeded' ? r : undefined;
      }),
    ),
  );
  const reclaimed = records.filter((r) => held.some((l) => l.taskId === r.id));
  assert.equal(reclaimed.length, 8);
  for (const r of reclaimed) assert.deepEqual([r.nodeId, r.attempts], [honest.id, 2]);
  const hv2 = await nodeView(hoarder.id);
  assert.equal(hv2.circuit.state, 'open', 'counted against the hoarder');
  assert.equal(hv2.window, 8, 'back to the starting window');
  const ho = await nodeView(honest.id);
  assert.deepEqual([ho.circuit.state, ho.tasksFailed], ['closed', 0]);
});

test('the allocator caps the leases of a node, whatever it advertises', async () => {
  const { c, api, connect, submit, task } = await start();
  const node = await connect({ name: 'capped', maxConcurrent: 16, queueDepth: 1000 });
  const put = await api(`/v1/nodes/${node.id}/caps`, { method: 'PUT', json: { maxLeases: 3 } });
  assert.equal(put.status, 200, JSON.stringify(put.body));
  assert.deepEqual(put.body.caps, { leaseCap: 3, maxLeases: 3 });
  for (const bad of [{ maxLeases: -1 }, { maxLeases: 1.5 }, { maxLeases: '3' }, { maxLeases: 1, more: 1 }, {}]) {
    const res = await api(`/v1/nodes/${node.id}/caps`, { method: 'PUT', json: bad });
    assert.equal(res.status, 400, JSON.stringify(bad));
    assert.equal(res.body.error.code, 'SCHEMA_VIOLATION');
  }
  assert.equal((await api('/v1/nodes/00000000-0000-4000-8000-00000000beef/caps', { method: 'PUT', json: { maxLeases: 1 } })).body.error.code, 'NODE_NOT_FOUND');

  const ids = await submit(10);
  const first = await node.assignments(3);
  await until(() => c.scheduler.dispatch() === 0, 2_000, 'dispatch settled');
  assert.equal(c.scheduler.nodes.get(node.id)!.leases.size, 3);
  node.succeed(first);
  const second = await node.assignments(3);
  node.succeed(second);
  assert.equal((await api(`/v1/nodes/${node.id}/caps`, { method: 'PUT', json: { maxLeases: null } })).body.caps.maxLeases, null);
  node.succeed(await node.assignments(4));
  for (const id of ids) await until(async () => (await task(id)).state === 'succeeded', 2_000, 'succeeded');
});

test('a node working on long tasks is not taken for a hoarder', async () => {
  const clock = new ManualClock();
  const { c, api, connect, task } = await start({ clock, stallGraceMs: 1_000, heartbeatIntervalMs: 60_000, leaseMs: 600_000, tickMs: 10 });
  const node = await connect({ name: 'slow', maxConcurrent: 1 });
  const res = await api('/v1/tasks', { method: 'POST', json: { kind: 'agent', payload: { agent: 'hello', limits: { timeoutMs: 30_000 } } } });
  assert.equal(res.status, 202);
  const [lease] = await node.assignments(1);
  for (let i = 0; i < 6; i++) {
    clock.advance(4_000); // 24 s in all: past the grace, within the task's own 30 s budget
    node.heartbeat([lease!.leaseId]);
    await until(() => c.scheduler.nodes.get(node.id)!.lastSeen === clock.now(), 2_000, 'heartbeat seen');
  }
  assert.equal(c.scheduler.reclaimStalled(), 0);
  assert.equal((await task(res.body.id)).state, 'leased');
  node.succeed([lease!]);
  await until(async () => (await task(res.body.id)).state === 'succeeded', 2_000, 'succeeded');
});

test('origins: the coordinator\'s own and --allow-origin join; others are refused ORIGIN_NOT_ALLOWED before the socket is used', async () => {
  const { c, connect, open: openRaw, submit, task } = await start({ allowOrigins: ['https://nodes.example.com'] });
  const own = new URL(c.url).origin;
  const a = await connect({ name: 'own-page', headers: { origin: own } });
  const b = await connect({ name: 'allowed-page', headers: { origin: 'https://nodes.example.com' } });
  const cli = await connect({ name: 'no-origin' }); // not a browser: no Origin header
  assert.ok(a.id && b.id && cli.id);

  for (const origin of ['http://evil.example', 'null', 'https://nodes.example.com.evil.example', 'http://127.0.0.1:1']) {
    const n = await openRaw({ origin });
    const err = await n.next('error');
    assert.equal(err.error.code, 'ORIGIN_NOT_ALLOWED', origin);
    assert.equal((await n.closed).code, 1008);
  }
  // DNS rebinding: the page's origin matches the Host it sent, but the host is a name, not this machine's address.
  const port = new URL(c.url).port;
  const rebound = await openRaw({ origin: `http://evil.example:${port}`, host: `evil.example:${port}` });
  assert.equal((await rebound.next('error')).error.code, 'ORIGIN_NOT_ALLOWED');
  assert.equal(c.hub.connected().length, 3, 'no refused socket became a node');

  const ids = await submit(3);
  await finishAcross([a, b, cli], 3);
  for (const id of ids) await until(async () => (await task(id)).state === 'succeeded', 2_000, 'succeeded');
});

test('originAllowed: own origin only on an address or localhost, allowed list exact', () => {
  assert.equal(originAllowed(undefined, '127.0.0.1:1', []), true);
  assert.equal(originAllowed('http://127.0.0.1:8080', '127.0.0.1:8080', []), true);
  assert.equal(originAllowed('http://[::1]:8080', '[::1]:8080', []), true);
  assert.equal(originAllowed('http://localhost:8080', 'localhost:8080', []), true);
  assert.equal(originAllowed('http://127.0.0.1:8081', '127.0.0.1:8080', []), false);
  assert.equal(originAllowed('http://evil.example:8080', 'evil.example:8080', []), false);
  assert.equal(originAllowed('http://evil.example:8080', 'evil.example:8080', ['http://evil.example:8080']), true);
  assert.equal(originAllowed('file://', '127.0.0.1:8080', []), false);
  assert.equal(originAllowed('not a url', '127.0.0.1:8080', []), false);
});

test('with auth on: no token, an unknown one or one without the node role is refused; a node token joins by hello or header', async () => {
  const auth = Auth.fromConfig({
    tokens: [
      { token: ADMIN, roles: ['admin'] },
      { token: NODE, roles: ['node'] },
      { token: PLANNER, roles: ['planner'] },
    ],
  });
  const { c, open: openRaw, connect, submit, task } = await start({ auth }, ADMIN);
  const refused = async (hello: Record<string, unknown>, headers: Record<string, string> = {}) => {
    const n = await openRaw(headers);
    n.send({ type: 'hello', protocol: 1, name: 'intruder', capabilities: capabilities(), ...hello });
    const err = await n.next('error');
    assert.equal((await n.closed).code, 1008);
    assert.equal(n.inbox.some((m) => m.type === 'welcome'), false);
    return err.error.code;
  };
  assert.equal(await refused({}), 'UNAUTHORIZED');
  assert.equal(await refused({ token: 'not-a-token-at-all-000000' }), 'UNAUTHORIZED');
  assert.equal(await refused({}, { authorization: 'Bearer wrong-token-000000000000' }), 'UNAUTHORIZED');
  assert.equal(await refused({ token: PLANNER }), 'FORBIDDEN');
  assert.equal(await refused({ token: ADMIN.slice(0, -1) }), 'UNAUTHORIZED');
  assert.equal(c.hub.connected().length, 0);

  const byHello = await connect({ name: 'hello-token', token: NODE });
  const byHeader = await connect({ name: 'header-token', headers: { authorization: `Bearer ${NODE}` } });
  // A node reconnecting must still present a token; its secret alone does not let it in.
  assert.equal(await refused({ nodeId: byHello.id, secret: byHello.secret }), 'UNAUTHORIZED');
  assert.equal(c.scheduler.nodes.get(byHello.id)!.socket !== null, true);
  assert.equal(c.scheduler.nodes.get(byHello.id)!.principal.startsWith('tok-'), true, 'the principal id, not the token');
  assert.notEqual(c.scheduler.nodes.get(byHello.id)!.principal, NODE);

  const ids = await submit(4);
  await finishAcross([byHello, byHeader], 4);
  for (const id of ids) await until(async () => (await task(id)).state === 'succeeded', 2_000, 'succeeded');
});
