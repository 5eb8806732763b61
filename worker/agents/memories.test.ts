import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { HOST_MEMORY_MODULE, HOST_MEMORY_NAME, type AgentLimits } from '../../shared';
import { HostMemories } from './memories';
import { prepareAgentModule } from './module-cache';
import { AgentPool } from './pool';
import { runAgentInThread } from './run';
import { runRequest } from './testing/request';
import { buildWatAgents } from './testing/wat-agents';
import { createAgentWorkerApi } from './worker-api';
import { expose } from 'comlink';
import type { WorkerLike } from './pool';
import type { AgentEvent, AgentRunOutcome, AgentRunRequest } from './types';
import wabtInit from 'wabt';

const bytes = await buildWatAgents();
const wabt = await wabtInit();
const wat = (src: string): Uint8Array => {
  const m = wabt.parseWat('t.wat', src);
  try {
    return m.toBinary({}).buffer;
  } finally {
    m.destroy();
  }
};
/** Prints the byte at 700 as a digit ('0' + value), then stores 7 there: a later run that sees 7 saw the last task's memory. */
const peek = wat(`(module
  (import "wasi_snapshot_preview1" "fd_write" (func $w (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "_start")
    (i32.store8 (i32.const 800) (i32.add (i32.const 48) (i32.load8_u (i32.const 700))))
    (i32.store (i32.const 0) (i32.const 800)) (i32.store (i32.const 4) (i32.const 1))
    (drop (call $w (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))
    (i32.store8 (i32.const 700) (i32.const 7))))`);
/** Grows by `stdin`-free 1280 pages (80 MiB), touching one byte per page, and prints 1. */
const hog = wat(`(module
  (import "wasi_snapshot_preview1" "fd_write" (func $w (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 64) "1")
  (func (export "_start") (local $at i32)
    (drop (memory.grow (i32.const 1280)))
    (local.set $at (i32.const 65536))
    (loop $t (i32.store8 (local.get $at) (i32.const 1)) (local.set $at (i32.add (local.get $at) (i32.const 65536)))
      (br_if $t (i32.lt_u (local.get $at) (i32.const ${1281 * 65536}))))
    (i32.store (i32.const 0) (i32.const 64)) (i32.store (i32.const 4) (i32.const 1))
    (drop (call $w (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))`);

const request = (name: string, limits: Partial<AgentLimits> = {}, taskId = 't'): AgentRunRequest => runRequest(name, { taskId }, limits);
const codeOf = (o: AgentRunOutcome): unknown => (o.ok ? o.result.output : o.error.code);

test('the memory becomes an import with the capped limits; the module still exports it', async () => {
  const p = await prepareAgentModule(bytes.echo, 4);
  assert.deepEqual(p.memory, { initialPages: 2, maximumPages: 64, shared: false });
  const imports = WebAssembly.Module.imports(p.module).filter((i) => i.kind === 'memory');
  assert.deepEqual(imports, [{ module: HOST_MEMORY_MODULE, name: HOST_MEMORY_NAME, kind: 'memory' }]);
  assert.ok(WebAssembly.Module.exports(p.module).some((e) => e.name === 'memory' && e.kind === 'memory'));
  // The cap holds on the host-made memory: the bomb still ends at 4 MiB.
  const bomb = await prepareAgentModule(bytes.bomb, 4);
  const out = runAgentInThread(bomb.module, request('bomb', { memoryMB: 4 }), { capPages: bomb.capPages, memory: bomb.memory });
  assert.equal(codeOf(out), 'AGENT_MEMORY_LIMIT');
});

test('a worker reuses one memory across runs, zeroed: no run sees the last one', async () => {
  const p = await prepareAgentModule(peek, 16);
  const memories = new HostMemories();
  const outs: unknown[] = [];
  for (let i = 0; i < 50; i++) {
    outs.push(codeOf(runAgentInThread(p.module, request('peek'), { capPages: p.capPages, memory: p.memory, memories, memoryKey: 'peek' })));
  }
  assert.deepEqual(new Set(outs), new Set([0]));
  assert.deepEqual(memories.stats(), { created: 1, reused: 49, kept: 1, uncollected: 0 });
});

test('a memory that grew is not reused: it is let go and counted until collected', async () => {
  const p = await prepareAgentModule(hog, 96);
  const memories = new HostMemories();
  for (let i = 0; i < 3; i++) {
    assert.equal(codeOf(runAgentInThread(p.module, request('hog', { memoryMB: 96 }), { capPages: p.capPages, memory: p.memory, memories, memoryKey: 'hog' })), 1);
  }
  const s = memories.stats();
  assert.equal(s.created, 3);
  assert.equal(s.kept, 0);
  assert.ok(s.uncollected <= 3 && s.uncollected >= 0);
});

test('with no address space left, the run is NODE_RESOURCE_EXHAUSTED, not the agent\'s fault', () => {
  const child = fileURLToPath(new URL('./testing/exhaust-child.ts', import.meta.url));
  // 96 GiB of address space: room for a few 8 GiB Wasm reservations only.
  const text = execFileSync('bash', ['-c', `ulimit -v 100663296 && exec node --import tsx "${child}"`], { encoding: 'utf8', timeout: 60_000 });
  const out = JSON.parse(text) as Record<string, string>;
  assert.equal(out.bombWithRoom, 'AGENT_MEMORY_LIMIT');
  assert.ok(Number(out.held) >= 1, text);
  assert.equal(out.echoNoRoom, 'NODE_RESOURCE_EXHAUSTED');
});

/** A worker served over a MessageChannel in this thread (as pool-eviction.test.ts does). */
function channelWorker(): WorkerLike {
  const { port1, port2 } = new MessageChannel();
  expose(createAgentWorkerApi((n) => port2.postMessage(n)), port2);
  return Object.assign(port1 as unknown as WorkerLike, {
    terminate: () => {
      port1.close();
      port2.close();
    },
  });
}

test('the pool recycles a worker after a run that ended above recycleMemoryBytes, not after small ones', async () => {
  const pool = new AgentPool({ size: 1, createWorker: channelWorker, recycleMemoryBytes: 32 << 20 });
  const replaced: string[] = [];
  pool.on((e: AgentEvent) => {
    if (e.type === 'replace') replaced.push(e.reason);
  });
  const { sha256Hex } = await import('./module-cache');
  const hogHash = await sha256Hex(hog);
  const echoHash = await sha256Hex(bytes.echo);
  await pool.addModule(hogHash, hog);
  await pool.addModule(echoHash, bytes.echo);
  await pool.ready();
  for (let i = 0; i < 5; i++) {
    const o = await pool.run({ ...request('echo', {}, `e${i}`), moduleHash: echoHash, stdin: new TextEncoder().encode('{"a":1}') });
    assert.deepEqual(codeOf(o), { a: 1 });
  }
  assert.equal(pool.stats().recycledWorkers, 0);
  const o = await pool.run({ ...request('hog', { memoryMB: 96 }, 'h1'), moduleHash: hogHash });
  assert.equal(codeOf(o), 1);
  assert.equal(pool.stats().recycledWorkers, 1);
  assert.match(replaced[0] ?? '', /80 MiB/);
  await pool.ready();
  const again = await pool.run({ ...request('echo', {}, 'e9'), moduleHash: echoHash, stdin: new TextEncoder().encode('{"b":2}') });
  assert.deepEqual(codeOf(again), { b: 2 });
  await pool.close();
});

