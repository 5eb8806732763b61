/**
 * AgentPool with bounded module caches: an evicted module is dropped from the
 * workers that hold it, its runs end AGENT_MODULE_MISSING, and it runs again
 * once it is added again.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { expose } from 'comlink';
import { DEFAULT_AGENT_LIMITS, type AgentLimits } from '../../shared';
import { moduleKey, sha256Hex } from './module-cache';
import { AgentPool, type WorkerLike } from './pool';
import { NodeThreadWorker } from './testing/node-workers';
import { buildWatAgents, versioned } from './testing/wat-agents';
import { createAgentWorkerApi, type AgentWorkerApi } from './worker-api';
import type { AgentEvent, AgentRunOutcome, AgentRunRequest } from './types';

const built = await buildWatAgents();
const MB = DEFAULT_AGENT_LIMITS.memoryMB;
const versions = await Promise.all(
  Array.from({ length: 12 }, async (_, i) => {
    const bytes = versioned(built.echo, i);
    return { bytes, hash: await sha256Hex(bytes) };
  }),
);
const v = (i: number) => versions[i].hash;
const busyHash = await sha256Hex(built.busy);

let seq = 0;
function request(hash: string, stdin = '{}', limits: Partial<AgentLimits> = {}): AgentRunRequest {
  return {
    taskId: `e-${++seq}`,
    agentName: 'echo',
    moduleHash: hash,
    stdin: new TextEncoder().encode(stdin),
    args: [],
    env: {},
    files: {},
    limits: { ...DEFAULT_AGENT_LIMITS, ...limits },
  };
}
const code = (o: AgentRunOutcome) => (o.ok ? 'ok' : o.error.code);

/**
 * The real worker API served over a MessageChannel in this thread, with a record of the
 * drops it receives (each also applied) and direct access to the API the pool talks to.
 * Messages on a port are handled in order, so once a run posted after a drop has answered,
 * the drop has arrived: the tests read `drops` then, with nothing to wait for.
 */
class RecordingWorkers {
  readonly apis: AgentWorkerApi[] = [];
  readonly drops: string[][] = [];

  create = (): WorkerLike => {
    const { port1, port2 } = new MessageChannel();
    const api = createAgentWorkerApi((notice) => port2.postMessage(notice));
    this.apis.push(api);
    const recorded: AgentWorkerApi = {
      ...api,
      dropModules: (keys) => {
        api.dropModules(keys);
        this.drops.push(keys);
      },
    };
    expose(recorded, port2);
    return Object.assign(port1 as unknown as WorkerLike, {
      terminate: () => {
        port1.close();
        port2.close();
      },
    });
  };
}

test('an evicted module is dropped from the worker; its run is AGENT_MODULE_MISSING until it is added again', async () => {
  const workers = new RecordingWorkers();
  const pool = new AgentPool({ size: 1, createWorker: workers.create, maxModules: 2 });
  const spawns: Extract<AgentEvent, { type: 'spawn' }>[] = [];
  pool.on((e) => {
    if (e.type === 'spawn') spawns.push(e);
  });
  try {
    await pool.ready();
    await pool.addModule(v(0), versions[0].bytes);
    await pool.addModule(v(1), versions[1].bytes);
    assert.equal(code(await pool.run(request(v(0), '[0]'))), 'ok');
    assert.equal(code(await pool.run(request(v(0), '[0]', { memoryMB: 2 }))), 'ok', 'a second variant of v0 on the worker');
    assert.equal(code(await pool.run(request(v(1), '[1]'))), 'ok');
    assert.equal(pool.stats().compiledModules, 3);

    await pool.addModule(v(2), versions[2].bytes); // v0 is the least recently run
    assert.equal(pool.hasModule(v(0)), false);
    assert.equal(code(await pool.run(request(v(2)))), 'ok', 'posted after the drop: the drop has arrived');
    assert.deepEqual(workers.drops, [[moduleKey(v(0), MB), moduleKey(v(0), 2)]]);
    assert.deepEqual(
      { compiled: pool.stats().compiledModules, evicted: pool.stats().evictedModules },
      { compiled: 2, evicted: 1 },
      'v1 and v2',
    );
    assert.equal(code(await pool.run(request(v(0)))), 'AGENT_MODULE_MISSING');

    // The worker itself no longer holds v0, and still holds v1 and v2.
    const [api] = workers.apis;
    assert.equal(code((await api.run(moduleKey(v(0), MB), request(v(0)), 0)).outcome), 'AGENT_MODULE_MISSING');
    assert.equal(code((await api.run(moduleKey(v(1), MB), request(v(1)), 0)).outcome), 'ok');
    assert.equal(code((await api.run(moduleKey(v(2), MB), request(v(2)), 0)).outcome), 'ok');

    // Added again (v1 goes now): the pool posts it to the worker again, so its first run is cold.
    await pool.addModule(v(0), versions[0].bytes);
    const again = request(v(0), '"again"');
    const out = await pool.run(again);
    assert.equal(out.ok && out.result.output, 'again');
    assert.deepEqual(workers.drops[1], [moduleKey(v(1), MB)]);
    assert.equal(spawns.find((s) => s.taskId === again.taskId)?.warm, false);
    assert.equal(pool.stats().evictedModules, 2);
  } finally {
    await pool.close();
  }
});

test('many versions through a small cache: the bound holds, every run succeeds, every eviction reaches the workers', async () => {
  const workers = new RecordingWorkers();
  const pool = new AgentPool({ size: 2, createWorker: workers.create, maxModules: 3 });
  try {
    await pool.ready();
    for (let i = 0; i < versions.length; i++) {
      await pool.addModule(v(i), versions[i].bytes);
      const outs = await Promise.all([pool.run(request(v(i), `[${i}]`)), pool.run(request(v(i), `[${i}]`))]);
      for (const o of outs) assert.deepEqual(o.ok && o.result.output, [i]);
      assert.ok(pool.stats().compiledModules <= 3);
    }
    const evicted = versions.length - 3;
    assert.equal(pool.stats().evictedModules, evicted);
    // Both workers held each evicted version: each is told once. A drop is posted before the
    // next run on the same port, so every drop has arrived once the last runs answered.
    const drops = workers.drops;
    assert.equal(drops.length, 2 * evicted);
    assert.deepEqual(new Set(drops.flat()), new Set(versions.slice(0, evicted).map((x) => moduleKey(x.hash, MB))));
    assert.deepEqual(
      versions.map((x) => pool.hasModule(x.hash)),
      versions.map((_, i) => i >= evicted),
    );
  } finally {
    await pool.close();
  }
});

test('worker threads: a queued run whose module is evicted before it starts ends AGENT_MODULE_MISSING', async () => {
  const pool = new AgentPool({ size: 1, createWorker: () => new NodeThreadWorker(), maxModules: 2 });
  try {
    await pool.addModule(busyHash, built.busy);
    await pool.addModule(v(0), versions[0].bytes);
    await pool.ready();
    const long = { ...request(busyHash, '2000000000', { fuel: 100_000_000_000, timeoutMs: 60_000 }), agentName: 'busy' };
    const started = new Promise<void>((resolve) => {
      const off = pool.on((e) => {
        if (e.type === 'spawn' && e.taskId === long.taskId) {
          off();
          resolve();
        }
      });
    });
    const running = pool.run(long);
    const queued = pool.run(request(v(0)));
    await started;
    await pool.addModule(v(1), versions[1].bytes); // busy ran last; v0 goes
    assert.equal(pool.hasModule(v(0)), false);
    pool.stop(long.taskId, 'done waiting');
    assert.equal(code(await running), 'AGENT_STOPPED');
    assert.equal(code(await queued), 'AGENT_MODULE_MISSING');
    const after = await pool.run(request(v(1), '"still fine"'));
    assert.equal(after.ok && after.result.output, 'still fine');
  } finally {
    await pool.close();
  }
});
