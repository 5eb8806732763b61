import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DEFAULT_AGENT_LIMITS, type AgentLimits } from '../../shared';
import { sha256Hex } from './module-cache';
import { AgentPool } from './pool';
import { NodeThreadWorker, sameThreadWorker } from './testing/node-workers';
import { buildWatAgents, type WatAgentName } from './testing/wat-agents';
import type { AgentEvent, AgentRunOutcome, AgentRunRequest } from './types';

const bytes = await buildWatAgents();
const hashes = {} as Record<WatAgentName, string>;
for (const name of Object.keys(bytes) as WatAgentName[]) hashes[name] = await sha256Hex(bytes[name]);

let seq = 0;
function request(name: WatAgentName, stdin = '', limits: Partial<AgentLimits> = {}): AgentRunRequest {
  return {
    taskId: `t-${++seq}`,
    agentName: name,
    moduleHash: hashes[name],
    stdin: new TextEncoder().encode(stdin),
    args: [],
    env: {},
    files: {},
    limits: { ...DEFAULT_AGENT_LIMITS, ...limits },
  };
}

async function poolWith(names: WatAgentName[], options: ConstructorParameters<typeof AgentPool>[0]) {
  const pool = new AgentPool(options);
  const events: AgentEvent[] = [];
  pool.on((e) => events.push(e));
  for (const n of names) await pool.addModule(hashes[n], bytes[n]);
  await pool.ready();
  return { pool, events };
}

/** Resolves with the first event that matches. */
function nextEvent<T extends AgentEvent['type']>(pool: AgentPool, type: T, pred: (e: Extract<AgentEvent, { type: T }>) => boolean = () => true) {
  return new Promise<Extract<AgentEvent, { type: T }>>((resolve) => {
    const off = pool.on((e) => {
      if (e.type === type && pred(e as Extract<AgentEvent, { type: T }>)) {
        off();
        resolve(e as Extract<AgentEvent, { type: T }>);
      }
    });
  });
}

const code = (o: AgentRunOutcome) => (o.ok ? 'ok' : o.error.code);

test('pool over MessageChannels: queue, events, stats', async () => {
  const { pool, events } = await poolWith(['echo', 'exit3'], { size: 2, createWorker: sameThreadWorker });
  try {
    assert.equal(events.filter((e) => e.type === 'worker.start').length, 2);
    const runs = Array.from({ length: 6 }, (_, i) => pool.run(request('echo', JSON.stringify({ i }))));
    const bad = pool.run(request('exit3'));
    assert.equal(pool.stats().queued, 5, 'two run at once, the rest wait');
    const outcomes = await Promise.all(runs);
    outcomes.forEach((o, i) => assert.deepEqual(o.ok && o.result.output, { i }));
    assert.equal(code(await bad), 'AGENT_EXIT_NONZERO');

    const spawns = events.filter((e) => e.type === 'spawn');
    assert.equal(spawns.length, 7);
    assert.equal(spawns.filter((e) => e.type === 'spawn' && !e.warm).length, 3, 'first run of each module on each worker is cold');
    assert.equal(events.filter((e) => e.type === 'exit').length, 7);
    const s = pool.stats();
    assert.deepEqual({ workers: s.workers, idle: s.idle, running: s.running, queued: s.queued }, { workers: 2, idle: 2, running: 0, queued: 0 });
    assert.ok(s.spawnP50Ms > 0 && s.spawnP99Ms >= s.spawnP50Ms);
    assert.equal(s.compiledModules, 2);

    // A new memory cap compiles another variant on first use.
    const capped = await pool.run(request('bomb', '', { memoryMB: 2 }));
    assert.equal(code(capped), 'AGENT_MODULE_MISSING');
    await pool.addModule(hashes.bomb, bytes.bomb);
    assert.equal(code(await pool.run(request('bomb', '', { memoryMB: 2 }))), 'AGENT_MEMORY_LIMIT');
    assert.equal(pool.stats().compiledModules, 4);
    // A cap below the module's initial memory cannot compile: the run says so, the worker stays.
    assert.equal(code(await pool.run(request('echo', '{}', { memoryMB: 0.0625 }))), 'AGENT_MEMORY_LIMIT');
    assert.equal(pool.stats().idle, 2);
  } finally {
    await pool.close();
  }
});

test('addModule checks the hash and the module', async () => {
  const pool = new AgentPool({ size: 1, createWorker: sameThreadWorker });
  try {
    await assert.rejects(pool.addModule(hashes.echo, bytes.exit3), (e: { code: string }) => e.code === 'WASM_HASH_MISMATCH');
    const junk = new TextEncoder().encode('not wasm');
    await assert.rejects(pool.addModule(await sha256Hex(junk), junk), (e: { code: string }) => e.code === 'WASM_INVALID');
    assert.equal(pool.hasModule(hashes.echo), false);
    await Promise.all([pool.addModule(hashes.echo, bytes.echo), pool.addModule(hashes.echo.toUpperCase(), bytes.echo)]);
    assert.equal(pool.hasModule(hashes.echo), true);
    assert.equal(pool.stats().compiledModules, 1);
  } finally {
    await pool.close();
  }
});

test('worker threads: a deadline terminates and replaces the worker', async () => {
  const { pool, events } = await poolWith(['spin', 'echo'], { size: 1, createWorker: () => new NodeThreadWorker() });
  try {
    const out = await pool.run(request('spin', '', { fuel: 100_000_000_000, timeoutMs: 300 }));
    assert.equal(code(out), 'AGENT_TIMEOUT');
    assert.ok(events.some((e) => e.type === 'replace' && e.reason === 'timeout'));
    assert.ok(events.some((e) => e.type === 'stop' && e.reason === 'timeout'));
    const after = await pool.run(request('echo', '[1]'));
    assert.deepEqual(after.ok && after.result.output, [1]);
    assert.equal(pool.stats().workers, 1);
  } finally {
    await pool.close();
  }
});

test('worker threads: stop() ends a running and a queued agent', async () => {
  const { pool, events } = await poolWith(['busy', 'echo'], { size: 1, createWorker: () => new NodeThreadWorker() });
  try {
    const long = request('busy', '2000000000', { fuel: 100_000_000_000, timeoutMs: 60_000 });
    const queued = request('echo', '{}');
    const started = nextEvent(pool, 'spawn', (e) => e.taskId === long.taskId);
    const running = pool.run(long);
    const waiting = pool.run(queued);
    await started;
    assert.equal(pool.stop(queued.taskId, 'not needed'), true);
    assert.equal(code(await waiting), 'AGENT_STOPPED');
    assert.equal(pool.stop(long.taskId, 'operator'), true);
    assert.equal(code(await running), 'AGENT_STOPPED');
    assert.equal(pool.stop(long.taskId), false, 'a finished task cannot be stopped again');
    assert.ok(events.some((e) => e.type === 'replace' && e.reason === 'operator'));
    const after = await pool.run(request('echo', '"again"'));
    assert.equal(after.ok && after.result.output, 'again');
  } finally {
    await pool.close();
  }
});

test('worker threads: a worker that dies is WORKER_CRASHED and is replaced', async () => {
  const threads: NodeThreadWorker[] = [];
  const { pool, events } = await poolWith(['busy', 'echo'], {
    size: 1,
    createWorker: () => {
      const w = new NodeThreadWorker();
      threads.push(w);
      return w;
    },
  });
  try {
    const long = request('busy', '2000000000', { fuel: 100_000_000_000, timeoutMs: 60_000 });
    const started = nextEvent(pool, 'spawn', (e) => e.taskId === long.taskId);
    const running = pool.run(long);
    await started;
    await threads[0].thread.terminate(); // dies without the pool asking
    assert.equal(code(await running), 'WORKER_CRASHED');
    assert.ok(events.some((e) => e.type === 'replace' && e.reason.startsWith('crash')));
    const after = await pool.run(request('echo', 'true'));
    assert.equal(after.ok && after.result.output, true);
    assert.equal(threads.length, 2);
  } finally {
    await pool.close();
  }
});

test('worker threads: warm spawn time', async () => {
  const { pool } = await poolWith(['echo'], { size: 2, createWorker: () => new NodeThreadWorker() });
  try {
    for (let i = 0; i < 300; i++) {
      const out = await pool.run(request('echo', '{"x":1}'));
      assert.ok(out.ok);
    }
    const s = pool.stats();
    console.log(`warm spawn over worker threads: p50 ${s.spawnP50Ms.toFixed(3)} ms, p99 ${s.spawnP99Ms.toFixed(3)} ms`);
    assert.ok(s.spawnP50Ms < 20, 'spawn is far below a worker start');
  } finally {
    await pool.close();
  }
});

test('close() answers waiting runs with AGENT_STOPPED', async () => {
  const { pool } = await poolWith(['busy'], { size: 1, createWorker: () => new NodeThreadWorker() });
  const long = request('busy', '2000000000', { fuel: 100_000_000_000, timeoutMs: 60_000 });
  const started = nextEvent(pool, 'spawn');
  const a = pool.run(long);
  const b = pool.run(request('busy', '1'));
  await started;
  await pool.close();
  assert.deepEqual([code(await a), code(await b)], ['AGENT_STOPPED', 'AGENT_STOPPED']);
  assert.equal(code(await pool.run(request('busy', '1'))), 'AGENT_STOPPED');
});
