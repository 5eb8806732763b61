/**
 * The node client in Node, against a real coordinator (temp SQLite file, real
 * sockets via the `ws` package) and a real agent pool on worker threads.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { WebSocket, WebSocketServer } from 'ws';
import { readAgent } from '../../agents';
import { registerAgent, type Registration } from '../../scripts/register-agents';
import { createCoordinator, type Coordinator } from '../../server';
import { MAX_QUEUE_DEPTH, type ResultMessage, type TaskRecord } from '../../shared';
import { AgentPool } from '../../worker';
// The worker-thread WorkerLike lives with the runtime's own test helpers.
import { NodeThreadWorker } from '../../worker/node';
import { NodeClient, type NodeEvent, type SocketLike } from '.';

let dir = '';
let coordinator: Coordinator;
let url = '';
let pool: AgentPool;
let client: NodeClient;
const regs: Record<string, Registration> = {};
const storage = new Map<string, string>();
const storageLike = { getItem: (k: string) => storage.get(k) ?? null, setItem: (k: string, v: string) => void storage.set(k, v) };
const createSocket = (u: string): SocketLike => new WebSocket(u) as unknown as SocketLike;

function nextEvent<T extends NodeEvent['type']>(c: NodeClient, type: T, pred: (e: Extract<NodeEvent, { type: T }>) => boolean = () => true) {
  return new Promise<Extract<NodeEvent, { type: T }>>((resolve) => {
    const off = c.on((e) => {
      if (e.type === type && pred(e as Extract<NodeEvent, { type: T }>)) {
        off();
        resolve(e as Extract<NodeEvent, { type: T }>);
      }
    });
  });
}

async function submit(specs: unknown[]): Promise<string[]> {
  const res = await fetch(`${url}/v1/tasks`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ tasks: specs }) });
  assert.equal(res.status, 202);
  return ((await res.json()) as { ids: string[] }).ids;
}

async function wait(id: string): Promise<TaskRecord> {
  return (await (await fetch(`${url}/v1/tasks/${id}/wait?timeoutMs=20000`)).json()) as TaskRecord;
}

const trivial = { kind: 'agent', payload: { agent: 'trivial', input: { ping: 1 } }, maxAttempts: 1 };

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'node-client-'));
  coordinator = await createCoordinator({ dbPath: join(dir, 'c.db'), port: 0, heartbeatIntervalMs: 200 });
  url = coordinator.url;
  for (const name of ['trivial', 'sleep-poll']) regs[name] = await registerAgent(url, name, readAgent(name));
  pool = new AgentPool({ size: 2, createWorker: () => new NodeThreadWorker() });
  await pool.ready();
  client = new NodeClient({ url, runtime: pool, name: 'test-node', storage: storageLike, createSocket, backoff: { baseMs: 20, maxMs: 200 } });
  const welcomed = nextEvent(client, 'welcome');
  await client.start();
  await welcomed;
});

after(async () => {
  client?.close();
  await pool?.close();
  await coordinator?.close();
  rmSync(dir, { recursive: true, force: true });
});

test('joins, keeps its node id, runs a burst with one module fetch and batched results', async () => {
  assert.equal(client.state, 'connected');
  assert.equal(storage.get('exec-node.nodeId'), client.nodeId);
  const ids = await submit(Array.from({ length: 200 }, () => trivial));
  // Wait for the node's own signal, then read the records (already terminal, or about to be).
  await new Promise<void>((resolve) => {
    const off = client.on(() => {
      if (client.stats().tasksDone >= 200) {
        off();
        resolve();
      }
    });
  });
  const recs: TaskRecord[] = [];
  for (const id of ids) recs.push(await wait(id));
  for (const r of recs) {
    assert.equal(r.state, 'succeeded', `${r.error?.code} ${r.error?.message}`);
    assert.equal(r.nodeId, client.nodeId);
    assert.deepEqual((r.result as { output: unknown }).output, { ok: true });
  }
  const s = client.stats();
  assert.equal(s.moduleFetches, 1, 'the module is fetched once for the whole burst');
  assert.equal(s.tasksDone, 200);
  assert.ok(s.resultBatches < 200, `200 results took ${s.resultBatches} messages`);
  assert.equal(client.recent()[0]?.code, 'OK');
});

test('advertises its workers as maxConcurrent and what it queues beyond them as queueDepth', async () => {
  const nodes = (await (await fetch(`${url}/v1/nodes`)).json()) as {
    nodes: { id: string; capabilities: { maxConcurrent: number; queueDepth?: number }; workers: number; queueDepth: number }[];
  };
  const me = nodes.nodes.find((n) => n.id === client.nodeId)!;
  assert.equal(me.capabilities.maxConcurrent, 2, 'one per worker of the pool');
  assert.equal(me.capabilities.queueDepth, 2 * 127, 'the default: 128 held per worker, one of them running');
  assert.deepEqual([me.workers, me.queueDepth], [2, 254]);
  assert.deepEqual(client.stats().capacity, { maxConcurrent: 2, queueDepth: 254 });

  const small = new NodeClient({ url, runtime: pool, storage: null, createSocket, tasksPerWorker: 4 });
  assert.deepEqual(small.stats().capacity, { maxConcurrent: 2, queueDepth: 6 });
  const explicit = new NodeClient({ url, runtime: pool, storage: null, createSocket, queueDepth: 1e9 });
  assert.deepEqual(explicit.stats().capacity, { maxConcurrent: 2, queueDepth: MAX_QUEUE_DEPTH }, 'bounded by the protocol');
  small.close();
  explicit.close();
});

test('a cancelled task is stopped in its worker and reported CANCELLED', async () => {
  const [id] = await submit([{ kind: 'agent', payload: { agent: 'sleep-poll', input: {}, limits: { timeoutMs: 60_000 } }, maxAttempts: 1 }]);
  await nextEvent(client, 'task.start', (e) => e.task.taskId === id);
  const ended = nextEvent(client, 'task.end', (e) => e.entry.taskId === id);
  const res = await fetch(`${url}/v1/tasks/${id}/cancel`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' });
  assert.equal(res.status, 200);
  assert.equal((await ended).entry.code, 'CANCELLED');
  assert.equal((await wait(id!)).state, 'cancelled');
});

test('reconnects with the same node id after the socket drops, and keeps working', async () => {
  const id = client.nodeId;
  const reconnecting = nextEvent(client, 'state', (e) => e.state === 'reconnecting');
  const back = nextEvent(client, 'welcome');
  coordinator.hub.closeAll();
  await reconnecting;
  assert.equal((await back).nodeId, id);
  assert.equal(client.state, 'connected');
  const [t] = await submit([trivial]);
  assert.equal((await wait(t!)).state, 'succeeded');
});

test('given other coordinators of the pool, a node whose coordinator cannot be reached joins the next one', async () => {
  // A port nothing listens on (taken, then closed): the first coordinator is gone.
  const gone = createServer();
  await new Promise<void>((r) => gone.listen(0, '127.0.0.1', r));
  const deadUrl = `http://127.0.0.1:${(gone.address() as AddressInfo).port}`;
  await new Promise<void>((r) => gone.close(() => r()));
  const moved = new NodeClient({ url: deadUrl, alsoUrls: [url], runtime: pool, name: 'moving-node', storage: null, createSocket, backoff: { baseMs: 20, maxMs: 100 } });
  try {
    const reconnecting = nextEvent(moved, 'state', (e) => e.state === 'reconnecting');
    const welcomed = nextEvent(moved, 'welcome');
    await moved.start();
    await reconnecting;
    const { nodeId } = await welcomed;
    assert.equal(moved.coordinator, url, 'it joined the next coordinator of the list');
    const node = coordinator.scheduler.nodes.get(nodeId);
    assert.equal(node?.name, 'moving-node');
    assert.ok(node?.connected);
  } finally {
    moved.close();
  }
});

test('drain: the node stops taking tasks and tells the coordinator', async () => {
  const draining = nextEvent(client, 'drain');
  const res = await fetch(`${url}/v1/nodes/${client.nodeId}/drain`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' });
  assert.equal(res.status, 200);
  await draining;
  assert.equal(client.state, 'draining');
  // The heartbeat sent on drain carries capabilities with no kinds.
  let kinds: string[] | undefined;
  for (let i = 0; i < 50 && kinds?.length !== 0; i++) {
    const nodes = (await (await fetch(`${url}/v1/nodes`)).json()) as { nodes: { id: string; capabilities: { kinds: string[] } }[] };
    kinds = nodes.nodes.find((n) => n.id === client.nodeId)?.capabilities.kinds;
    // Polling the coordinator's view (bounded): the heartbeat is already on its way.
    if (kinds?.length !== 0) await new Promise((r) => setTimeout(r, 20));
  }
  assert.deepEqual(kinds, []);

  // The drain lasts for this connection: after a reconnect (a restarted coordinator) it takes tasks again.
  const back = nextEvent(client, 'welcome');
  coordinator.hub.closeAll();
  await back;
  assert.equal(client.state, 'connected');
  const [t] = await submit([trivial]);
  assert.equal((await wait(t!)).state, 'succeeded');
});

test('kinds it cannot run come back TASK_KIND_UNSUPPORTED; a missing module is fetched once; batches fit the message cap', async () => {
  // One HTTP server on loopback speaks the coordinator's side: the socket (to send what the
  // real router never would) and a module route that has no such module.
  const results: ResultMessage['results'] = [];
  const sizes: number[] = [];
  let fetches = 0;
  const server = createServer((req, res) => {
    fetches++;
    res.writeHead(404, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ error: { code: 'NOT_FOUND', message: `no module at ${req.url}` } }));
  });
  const wss = new WebSocketServer({ noServer: true });
  server.on('upgrade', (req, sock, head) => wss.handleUpgrade(req, sock, head, (ws) => wss.emit('connection', ws, req)));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const addr = server.address() as AddressInfo;
  const done = new Promise<void>((resolve) => {
    wss.on('connection', (ws) => {
      ws.on('message', (raw) => {
        sizes.push(String(raw).length);
        const msg = JSON.parse(String(raw)) as { type: string; results?: ResultMessage['results'] };
        if (msg.type === 'hello') {
          ws.send(JSON.stringify({ type: 'welcome', nodeId: '00000000-0000-4000-8000-000000000001', heartbeatIntervalMs: 5000, leaseMs: 10000, serverTime: Date.now() }));
          const tasks = [
            { taskId: 'a0000000-0000-4000-8000-000000000001', leaseId: 'b0000000-0000-4000-8000-000000000001', attempt: 1, kind: 'generate', payload: { model: 'tiny' }, deadline: null },
            ...[2, 3, 4].map((i) => ({
              taskId: `a0000000-0000-4000-8000-00000000000${i}`,
              leaseId: `b0000000-0000-4000-8000-00000000000${i}`,
              attempt: 1,
              kind: 'agent',
              payload: { agent: 'ghost' },
              module: { sha256: 'f'.repeat(64), size: 10 },
              deadline: null,
            })),
          ];
          ws.send(JSON.stringify({ type: 'task.assign', tasks }));
        } else if (msg.type === 'task.result') {
          results.push(...msg.results!);
          if (results.length >= 4) resolve();
        }
      });
    });
  });
  const cap = 800;
  const other = new NodeClient({ url: `http://127.0.0.1:${addr.port}`, runtime: pool, storage: null, createSocket, maxMessageBytes: cap });
  await other.start();
  await done;
  other.close();
  wss.close();
  server.close();
  const codes = Object.fromEntries(results.map((r) => [r.taskId.slice(-1), r.ok ? 'OK' : r.error.code]));
  assert.deepEqual(codes, { '1': 'TASK_KIND_UNSUPPORTED', '2': 'NOT_FOUND', '3': 'NOT_FOUND', '4': 'NOT_FOUND' });
  assert.equal(fetches, 1, 'three tasks waiting for one module share one fetch');
  assert.ok(Math.max(...sizes) <= cap, `a message of ${Math.max(...sizes)} bytes passed the ${cap}-byte cap`);
});

test('a module the bounded runtime evicted while its task waited is fetched again, not failed', async () => {
  const dir2 = mkdtempSync(join(tmpdir(), 'node-client-evict-'));
  const c2 = await createCoordinator({ dbPath: join(dir2, 'c.db'), port: 0, heartbeatIntervalMs: 200 });
  // One worker and room for one module: every switch between the two agents evicts the other.
  const small = new AgentPool({ size: 1, maxModules: 1, createWorker: () => new NodeThreadWorker() });
  const node = new NodeClient({ url: c2.url, runtime: small, name: 'evicting-node', storage: storageLike, createSocket });
  try {
    await small.ready();
    for (const name of ['trivial', 'digest']) await registerAgent(c2.url, name, readAgent(name));
    const welcomed = nextEvent(node, 'welcome');
    await node.start();
    await welcomed;
    const specs = Array.from({ length: 40 }, (_, i) => ({
      kind: 'agent',
      payload: i % 2 ? { agent: 'digest', input: { text: `t${i}` } } : { agent: 'trivial', input: { i } },
      maxAttempts: 1,
    }));
    const res = await fetch(`${c2.url}/v1/tasks`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ tasks: specs }) });
    const { ids } = (await res.json()) as { ids: string[] };
    for (const id of ids) {
      const rec = (await (await fetch(`${c2.url}/v1/tasks/${id}/wait?timeoutMs=20000`)).json()) as TaskRecord;
      assert.equal(rec.state, 'succeeded', `${rec.id}: ${JSON.stringify(rec.error)}`);
      assert.equal(rec.attempts, 1);
    }
    assert.ok(small.stats().evictedModules > 0, 'the runtime evicted modules');
    assert.ok(node.stats().tasksDone === 40);
  } finally {
    node.close();
    await small.close();
    await c2.close();
    rmSync(dir2, { recursive: true, force: true });
  }
});
