import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { createCoordinator, type CoordinatorOptions } from './index';
import { MAX_QUEUE_DEPTH, type ModelCapability } from '../shared';
import { HELLO_WAT, ManualClock, OpenCoordinators, TestNode, apiClient, capabilities, tempDir, until, wat } from './testing';

const tmp = tempDir();
let hello: Uint8Array<ArrayBuffer>;
const open = new OpenCoordinators();

before(async () => {
  hello = await wat(HELLO_WAT);
});
after(async () => {
  await open.closeAll();
  tmp.cleanup();
});

let dbN = 0;
async function start(opts: CoordinatorOptions = {}) {
  const c = await createCoordinator({ dbPath: join(tmp.dir, `s${dbN++}.db`), drainTimeoutMs: 200, ...opts });
  const { connect } = open.track(c);
  const api = apiClient(c.url);
  const put = await api('/v1/agents/hello/versions/1', { method: 'PUT', headers: { 'content-type': 'application/wasm' }, body: hello });
  assert.equal(put.status, 201);
  const submit = async (spec: Record<string, unknown> = {}): Promise<string> => {
    const res = await api('/v1/tasks', { method: 'POST', json: { kind: 'agent', payload: { agent: 'hello' }, ...spec } });
    assert.equal(res.status, 202, JSON.stringify(res.body));
    return res.body.id;
  };
  const task = async (id: string) => (await api(`/v1/tasks/${id}`)).body;
  return { c, api, connect, submit, task };
}

test('highest priority first, then oldest', async () => {
  const { connect, submit } = await start({ prefetch: 1 });
  const low = await submit({ priority: 1 });
  const high = await submit({ priority: 9 });
  const midOld = await submit({ priority: 5 });
  const midNew = await submit({ priority: 5 });
  const node = await connect({ maxConcurrent: 1 });
  const order: string[] = [];
  for (let i = 0; i < 4; i++) {
    const [a] = await node.assignments(1);
    order.push(a!.taskId);
    node.succeed([a!]);
  }
  assert.deepEqual(order, [high, midOld, midNew, low]);
});

test('retryable failures back off and end dead after maxAttempts; agent faults fail at once', async () => {
  const { connect, submit, task } = await start({ retryBaseMs: 20, circuitThreshold: 100 });
  const node = await connect();
  const id = await submit({ maxAttempts: 3 });
  const attempts: number[] = [];
  for (let i = 0; i < 3; i++) {
    const [a] = await node.assignments(1);
    attempts.push(a!.attempt);
    node.fail([a!], 'WORKER_CRASHED', `crash ${i + 1}`);
    if (i === 0) {
      const rec = await until(async () => {
        const r = await task(id);
        return r.error ? r : undefined;
      });
      if (rec.state === 'queued') assert.ok(rec.runAfter >= rec.updatedAt, 'backoff sets runAfter');
    }
  }
  assert.deepEqual(attempts, [1, 2, 3]);
  const dead = await until(async () => {
    const r = await task(id);
    return r.state === 'dead' ? r : undefined;
  });
  assert.equal(dead.attempts, 3);
  assert.equal(dead.error.code, 'WORKER_CRASHED');
  assert.equal(dead.error.message, 'crash 3');

  const trap = await submit({ maxAttempts: 3 });
  const [a] = await node.assignments(1);
  assert.equal(a!.taskId, trap);
  node.fail([a!], 'AGENT_TRAP', 'unreachable');
  const failed = await until(async () => {
    const r = await task(trap);
    return r.state === 'failed' ? r : undefined;
  });
  assert.equal(failed.attempts, 1);
  assert.equal(failed.error.code, 'AGENT_TRAP');
});

test('a lease lives while heartbeats list it, expires when they stop; the late result is dropped', async () => {
  const clock = new ManualClock();
  const { c, connect, submit, task } = await start({ clock, leaseMs: 1_000, heartbeatIntervalMs: 500, retryBaseMs: 1, tickMs: 10 });
  const a = await connect({ name: 'a' });
  const id = await submit();
  const [first] = await a.assignments(1);
  for (let i = 0; i < 3; i++) {
    clock.advance(600);
    a.heartbeat([first!.leaseId]);
    await until(() => c.scheduler.nodes.get(a.id)!.lastSeen === clock.now(), 2_000, 'heartbeat seen');
  }
  c.scheduler.expireLeases();
  assert.equal((await task(id)).state, 'leased', 'renewed by heartbeats past leaseMs');

  clock.advance(2_000); // past the lease, and long enough without a heartbeat that node a is unhealthy
  const cancel = await a.next('task.cancel');
  assert.equal(cancel.taskId, id);
  const requeued = await until(async () => {
    const r = await task(id);
    return r.state === 'queued' ? r : undefined;
  });
  assert.equal(requeued.error.code, 'LEASE_EXPIRED');

  const b = await connect({ name: 'b' });
  clock.advance(10);
  const [second] = await b.assignments(1);
  assert.equal(second!.taskId, id);
  assert.equal(second!.attempt, 2);

  a.succeed([first!], () => ({ exitCode: 0, output: 'late' }));
  await until(() => c.journal.duplicatesDropped === 1, 2_000, 'late duplicate dropped');
  b.succeed([second!], () => ({ exitCode: 0, output: 'on time' }));
  const done = await until(async () => {
    const r = await task(id);
    return r.state === 'succeeded' ? r : undefined;
  });
  assert.equal(done.result.output, 'on time');
  b.succeed([second!], () => ({ exitCode: 0, output: 'again' }));
  await until(() => c.journal.duplicatesDropped === 2, 2_000, 'repeat dropped');
  assert.equal((await task(id)).result.output, 'on time');
});

test('a node that disconnects mid-task loses it to another node (NODE_LOST)', async () => {
  const { connect, submit, task } = await start({ nodeGraceMs: 0, retryBaseMs: 1 });
  const a = await connect({ name: 'a' });
  const id = await submit();
  const [first] = await a.assignments(1);
  await a.close();
  const lost = await until(async () => {
    const r = await task(id);
    return r.error?.code === 'NODE_LOST' ? r : undefined;
  });
  assert.equal(lost.state, 'queued');
  const b = await connect({ name: 'b' });
  const [second] = await b.assignments(1);
  assert.equal(second!.taskId, first!.taskId);
  b.succeed([second!]);
  const done = await until(async () => {
    const r = await task(id);
    return r.state === 'succeeded' ? r : undefined;
  });
  assert.equal(done.nodeId, b.id);
});

test('a node reconnecting with its id keeps the id and its leases', async () => {
  const { connect, submit, task } = await start({ nodeGraceMs: 5_000 });
  const a = await connect({ name: 'a' });
  const id = await submit();
  const [lease] = await a.assignments(1);
  await a.close();
  const again = await connect({ name: 'a', nodeId: a.id, secret: a.secret });
  assert.equal(again.id, a.id);
  again.succeed([lease!]);
  const done = await until(async () => {
    const r = await task(id);
    return r.state === 'succeeded' ? r : undefined;
  });
  assert.equal(done.attempts, 1);
});

test('the circuit opens after repeated infrastructure failures, then lets one task through', async () => {
  const clock = new ManualClock();
  const { c, api, connect, submit } = await start({ clock, prefetch: 1, circuitThreshold: 2, circuitCooldownMs: 5_000, retryBaseMs: 1, heartbeatIntervalMs: 60_000, leaseMs: 120_000 });
  const a = await connect({ name: 'a', maxConcurrent: 1 });
  for (let i = 0; i < 2; i++) {
    await submit({ maxAttempts: 1 });
    const [t] = await a.assignments(1);
    a.fail([t!], i === 0 ? 'WORKER_CRASHED' : 'INTERNAL');
  }
  const view = await until(async () => {
    const n = (await api('/v1/nodes')).body.nodes.find((x: any) => x.id === a.id);
    return n.circuit.state === 'open' ? n : undefined;
  });
  assert.equal(view.circuit.opens, 1);
  const b = await connect({ name: 'b', maxConcurrent: 1 });
  const t3 = await submit();
  const [onB] = await b.assignments(1);
  assert.equal(onB!.taskId, t3);
  assert.equal(a.inbox.length, 0, 'nothing sent to the open circuit');

  clock.advance(5_001);
  const t4 = await submit();
  const [trial] = await a.assignments(1);
  assert.equal(trial!.taskId, t4);
  assert.equal(c.scheduler.nodes.get(a.id)!.circuit.state(clock.now()), 'half-open');
  a.succeed([trial!]);
  await until(() => c.scheduler.nodes.get(a.id)!.circuit.state(clock.now()) === 'closed', 2_000, 'circuit closed');

  // An agent fault is not the node's fault: it does not count against the circuit.
  await b.close();
  for (let i = 0; i < 3; i++) {
    await submit({ maxAttempts: 1 });
    a.fail(await a.assignments(1), 'AGENT_TRAP');
  }
  assert.equal(c.scheduler.nodes.get(a.id)!.circuit.state(clock.now()), 'closed');
});

test('routing: capable node first, model cached preferred, then most free slots', async () => {
  const { connect, submit } = await start();
  const small = await connect({ name: 'small', kinds: ['agent'], maxConcurrent: 1 });
  const big = await connect({ name: 'big', kinds: ['agent', 'generate'], maxConcurrent: 8, sequences: 8 });
  const cached = await connect({ name: 'cached', kinds: ['generate', 'train'], maxConcurrent: 1, models: ['tiny'], webgpu: true, sequences: 1 });

  const agentTask = await submit();
  const [onBig] = await big.assignments(1);
  assert.equal(onBig!.taskId, agentTask, 'the node with the most room');

  const gen = await submit({ kind: 'generate', payload: { model: 'tiny', prompt: 'hi' } });
  const [onCached] = await cached.assignments(1);
  assert.equal(onCached!.taskId, gen, 'the node that has the model');
  assert.equal(onCached!.kind, 'generate');

  const train = await submit({ kind: 'train', payload: { model: 'other', adapterName: 'x', dataset: '{}', lora: { rank: 1, alpha: 1, targetModules: ['q_proj'] }, steps: 1 } });
  cached.succeed([onCached!]);
  const [t] = await cached.assignments(1);
  assert.equal(t!.taskId, train, 'only a WebGPU node trains');
  assert.equal(small.inbox.length, 0);
});

test('deadline passed: failed DEADLINE_EXCEEDED, never started', async () => {
  const clock = new ManualClock();
  const { connect, submit, task } = await start({ clock });
  const id = await submit({ deadline: clock.now() + 100 });
  clock.advance(200);
  const node = await connect();
  const rec = await until(async () => {
    const r = await task(id);
    return r.state === 'failed' ? r : undefined;
  });
  assert.equal(rec.error.code, 'DEADLINE_EXCEEDED');
  assert.equal(rec.attempts, 0);
  assert.equal(node.inbox.filter((m) => m.type === 'task.assign').length, 0);
});

test('protocol: hello first, bad messages answered and the socket stays open, many bad ones close it', async () => {
  const { c, connect } = await start();
  const raw = await TestNode.open(c.url);
  raw.send({ type: 'heartbeat', leases: [], metrics: { running: 0, workers: 0, tasksDone: 0, tasksFailed: 0 } });
  const err = await raw.next('error');
  assert.equal(err.error.code, 'PROTOCOL_ERROR');
  assert.equal((await raw.closed).code, 1008);

  const node = await connect();
  node.send('not json');
  assert.equal((await node.next('error')).error.code, 'PROTOCOL_ERROR');
  node.send({ type: 'task.result', results: [] });
  assert.equal((await node.next('error')).error.code, 'PROTOCOL_ERROR');
  node.send({ type: 'hello', protocol: 1, name: 'again', capabilities: { kinds: ['agent'], maxConcurrent: 1, webgpu: null, models: [], adapters: [] } });
  assert.equal((await node.next('error')).error.code, 'PROTOCOL_ERROR');
  node.heartbeat([], { spawnP50Ms: 3 });
  await until(() => c.scheduler.nodes.get(node.id)!.metrics?.spawnP50Ms === 3, 2_000, 'heartbeat after errors');
  for (let i = 0; i < 25; i++) node.send('{');
  assert.equal((await node.closed).code, 1008);
});

test('drain stops new work for a node; close() refuses tasks, drains and waits for leases', async () => {
  const { c, api, connect, submit, task } = await start({ drainTimeoutMs: 5_000 });
  const a = await connect({ name: 'a', maxConcurrent: 1 });
  const drained = await api(`/v1/nodes/${a.id}/drain`, { method: 'POST', json: { reason: 'maintenance' } });
  assert.equal(drained.body.draining, true);
  assert.equal((await a.next('drain')).reason, 'maintenance');
  assert.equal((await api(`/v1/nodes/${crypto.randomUUID()}/drain`, { method: 'POST' })).body.error.code, 'NODE_NOT_FOUND');
  const b = await connect({ name: 'b', maxConcurrent: 1 });
  const id = await submit();
  const [lease] = await b.assignments(1);
  assert.equal(lease!.taskId, id);

  const closing = c.close();
  const refused = await api('/v1/tasks', { method: 'POST', json: { kind: 'agent', payload: { agent: 'hello' } } });
  assert.equal(refused.status, 503);
  assert.equal(refused.body.error.code, 'SHUTTING_DOWN');
  assert.equal((await api('/readyz')).status, 503);
  await b.next('drain');
  assert.equal((await task(id)).state, 'leased');
  b.succeed([lease!]);
  await closing;
  const { Journal } = await import('./journal');
  const j = new Journal(c.journal.db.name);
  assert.equal(j.getTask(id as never)?.state, 'succeeded');
  j.close();
});

test('close() ends long-polls and event streams at once', async () => {
  const { c, api, submit } = await start();
  const id = await submit();
  const waiting = api(`/v1/tasks/${id}/wait?timeoutMs=60000`);
  const stream = fetch(`${c.url}/v1/tasks/${id}/events`).then((r) => r.text());
  await until(() => c.watch.listeners() === 2, 5_000, 'both listening');
  const t0 = Date.now();
  await c.close();
  const waited = await waiting;
  assert.equal(waited.body.state, 'queued');
  assert.match(await stream, /event: state/);
  assert.ok(Date.now() - t0 < 5_000, 'closed without waiting for the long-poll timeout');
});

test('agent tasks are prefetched up to maxConcurrent × prefetch; generate tasks up to the sequences the node advertises, beside them', async () => {
  const { c, connect, submit } = await start({ prefetch: 4 });
  const node = await connect({ kinds: ['agent', 'generate'], maxConcurrent: 2, sequences: 2 });
  for (let i = 0; i < 3; i++) await submit({ kind: 'generate', payload: { model: 'm', prompt: `p${i}` } });
  const gens = await node.assignments(2);
  assert.equal(gens.length, 2);
  assert.equal(c.scheduler.dispatch(), 0, 'the third waits: the node decodes 2 sequences at once');
  for (let i = 0; i < 10; i++) await submit();
  const agents = await node.assignments(8);
  assert.equal(agents.length, 8, 'the agent window 2 × 4 = 8 is its own: generate leases sit in the batcher, not in workers');
  assert.ok(agents.every((a) => a.kind === 'agent'));
  assert.equal(c.scheduler.nodes.get(node.id)!.leases.size, 10);
  node.succeed(gens.slice(0, 1));
  const [third] = await node.assignments(1);
  assert.equal(third!.kind, 'generate', 'the freed slot goes to the oldest ready task: the third generate');
});

test('a node that advertises queueDepth holds at most maxConcurrent + queueDepth agent tasks; generate stays at its sequences', async () => {
  const { c, api, connect, submit } = await start({ prefetch: 8 });
  const node = await connect({ kinds: ['agent', 'generate'], maxConcurrent: 2, queueDepth: 3, sequences: 2 });
  const session = c.scheduler.nodes.get(node.id)!;
  const batch = await api('/v1/tasks', { method: 'POST', json: { tasks: Array.from({ length: 12 }, () => ({ kind: 'agent', payload: { agent: 'hello' } })) } });
  assert.equal(batch.status, 202);
  const first = await node.assignments(5);
  assert.equal(first.length, 5, '2 workers + 3 queued, not 2 × prefetch 8');
  assert.equal(c.scheduler.dispatch(), 0, 'no room left for the 7 still queued');
  assert.equal(session.leases.size, 5);

  node.succeed(first.slice(0, 2));
  const more = await node.assignments(2);
  assert.equal(more.length, 2, 'each finished task frees one place');
  await until(() => session.leases.size === 5, 2_000, 'window refilled');
  assert.equal(c.scheduler.dispatch(), 0);

  // generate tasks are never queued on the node: at most its advertised sequences, whatever the queueDepth.
  node.succeed([...first.slice(2), ...more]);
  const rest = await node.assignments(5);
  node.succeed(rest);
  await until(() => session.leases.size === 0, 2_000, 'agent tasks done');
  for (let i = 0; i < 4; i++) await submit({ kind: 'generate', payload: { model: 'm', prompt: `p${i}` } });
  const gens = await node.assignments(2);
  assert.equal(gens.length, 2);
  assert.equal(c.scheduler.dispatch(), 0, 'two generate tasks wait for a free sequence');
  assert.equal(session.leases.size, 2);

  // queueDepth 0: exactly one task per worker.
  const strict = await connect({ name: 'strict', maxConcurrent: 1, queueDepth: 0 });
  for (let i = 0; i < 3; i++) await submit();
  const [one] = await strict.assignments(1);
  assert.ok(one);
  assert.equal(c.scheduler.dispatch(), 0);
  assert.equal(c.scheduler.nodes.get(strict.id)!.leases.size, 1);

  // The protocol bounds it.
  const greedy = await TestNode.open(c.url);
  greedy.send({ type: 'hello', protocol: 1, name: 'greedy', capabilities: capabilities({ queueDepth: MAX_QUEUE_DEPTH + 1 }) });
  assert.equal((await greedy.next('error')).error.code, 'PROTOCOL_ERROR');
  assert.equal((await greedy.closed).code, 1008);

  const view = (await api(`/v1/nodes`)).body.nodes.find((x: { id: string }) => x.id === node.id);
  assert.equal(view.workers, 2);
  assert.equal(view.queueDepth, 3);
  assert.match((await api('/metrics')).body, new RegExp(`coordinator_node_queue_depth\\{node="${node.id}",node_name="test-node"\\} 3`));
});

test('routing: a generate task goes to the node that has its adapter loaded, then to one with the model loaded', async () => {
  const { c, api, connect } = await start();
  const loaded = (adapters?: string[]): ModelCapability[] => [{ name: 'm', backend: 'engine', device: 'webgpu', loaded: true, ...(adapters ? { adapters } : {}) }];
  const plain = await connect({ name: 'plain', kinds: ['agent', 'generate'], models: ['m'], sequences: 4, inferenceModels: loaded() });
  const styled = await connect({ name: 'styled', kinds: ['agent', 'generate'], models: ['m'], sequences: 4, inferenceModels: loaded(['style', 'terse']) });
  const stored = await connect({ name: 'stored', kinds: ['agent', 'generate'], models: ['m'], sequences: 4 });
  const post = async (payload: Record<string, unknown>) => assert.equal((await api('/v1/tasks', { method: 'POST', json: { kind: 'generate', payload: { model: 'm', prompt: 'hi', ...payload } } })).status, 202);
  for (let i = 0; i < 3; i++) await post({ adapter: i === 1 ? 'terse' : 'style' });
  assert.equal((await styled.assignments(3)).length, 3, 'every adapter task went to the node holding its adapter');
  await post({ adapter: 'other' });
  assert.equal((await plain.assignments(1)).length, 1, 'an adapter no node holds: a node with the model loaded');
  await until(() => c.scheduler.nodes.get(plain.id)!.leases.size === 1, 2_000, 'leased');
  assert.equal(c.scheduler.nodes.get(stored.id)!.leases.size, 0);
});

test('routing prefers free workers, then free queue space', async () => {
  const { c, api, connect } = await start();
  // `deep` has the most room (1 + 100) but one worker; `wide` has two workers and no queue.
  const deep = await connect({ name: 'deep', maxConcurrent: 1, queueDepth: 100 });
  const wide = await connect({ name: 'wide', maxConcurrent: 2, queueDepth: 0 });
  const post = async (n: number) => {
    const res = await api('/v1/tasks', { method: 'POST', json: { tasks: Array.from({ length: n }, () => ({ kind: 'agent', payload: { agent: 'hello' } })) } });
    assert.equal(res.status, 202);
  };
  await post(3);
  const onWide = await wide.assignments(2);
  const onDeep = await deep.assignments(1);
  assert.equal(onWide.length + onDeep.length, 3, 'each of the three tasks got a free worker');
  assert.equal(c.scheduler.nodes.get(wide.id)!.leases.size, 2);
  assert.equal(c.scheduler.nodes.get(deep.id)!.leases.size, 1);

  // Every worker busy: what comes next waits in the only queue there is.
  await post(2);
  const queued = await deep.assignments(2);
  assert.equal(queued.length, 2);
  assert.equal(c.scheduler.nodes.get(wide.id)!.leases.size, 2);
  assert.equal(wide.inbox.length, 0);

  // A worker frees up on `wide`: the next task goes there, not to deep's queue.
  wide.succeed(onWide.slice(0, 1));
  await until(() => c.scheduler.nodes.get(wide.id)!.leases.size === 1, 2_000, 'result journaled');
  await post(1);
  const [next] = await wide.assignments(1);
  assert.ok(next);
  assert.equal(c.scheduler.nodes.get(deep.id)!.leases.size, 3);
});
