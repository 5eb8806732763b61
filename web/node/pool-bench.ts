/**
 * The node measuring its own agent pool, in the page: warm spawn latency,
 * cold start of a new worker, raw throughput (no coordinator) and memory per
 * agent. The benchmark script and the page's "measure" button call it.
 */
import { DEFAULT_AGENT_LIMITS } from '../../shared';
import type { AgentEvent, AgentRunOutcome, AgentRunRequest, AgentRuntime } from '../../worker';

export interface PoolBenchOptions {
  agentName: string;
  moduleHash: string;
  /** The module's bytes, handed to runtimes that do not have it. */
  bytes: Uint8Array;
  input?: unknown;
  /** Sequential runs for warm spawn latency (after `warmup`). */
  warmRuns?: number;
  warmup?: number;
  /** Tasks for raw throughput, kept `rawConcurrency` in flight. */
  rawTasks?: number;
  rawConcurrency?: number;
  /** Makes a fresh runtime of `size` workers, for cold spawn and memory; without it those are skipped. */
  createRuntime?: (size: number) => AgentRuntime;
  coldRuns?: number;
  memoryWorkers?: number;
}

export interface PoolBenchResult {
  spawnWarmP50Ms: number;
  spawnWarmP99Ms: number;
  /** From `new` runtime (one worker) to the first agent's `_start`, as the runtime reports it. */
  spawnColdP50Ms: number | null;
  /** The same, measured outside: new runtime → first run resolved. */
  coldFirstRunP50Ms: number | null;
  rawTasks: number;
  rawMs: number;
  rawTasksPerMin: number;
  memoryPerAgentMB: number | null;
  memoryMethod: string;
  failures: Record<string, number>;
  /** Wall time of each phase. */
  phaseMs: { warm: number; raw: number; cold: number; memory: number };
}

interface UAMemory {
  bytes: number;
  breakdown: { bytes: number; types: string[]; attribution: { scope: string; url: string }[] }[];
}

const MEASURE_TIMEOUT_MS = 10_000;

export function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[i]!;
}

export async function benchPool(runtime: AgentRuntime, opts: PoolBenchOptions): Promise<PoolBenchResult> {
  const stdin = new TextEncoder().encode(JSON.stringify(opts.input ?? {}));
  const failures: Record<string, number> = {};
  let seq = 0;
  const request = (prefix: string): AgentRunRequest => ({
    taskId: `${prefix}-${++seq}`,
    agentName: opts.agentName,
    moduleHash: opts.moduleHash,
    stdin,
    args: [],
    env: {},
    files: {},
    limits: DEFAULT_AGENT_LIMITS,
  });
  const count = (o: AgentRunOutcome): AgentRunOutcome => {
    if (!o.ok) failures[o.error.code] = (failures[o.error.code] ?? 0) + 1;
    return o;
  };
  if (!runtime.hasModule(opts.moduleHash)) await runtime.addModule(opts.moduleHash, opts.bytes);

  const phase0 = performance.now();
  // Warm spawn: one at a time, so each run finds an idle warm worker and a compiled module.
  const warm: number[] = [];
  const off = runtime.on((e: AgentEvent) => {
    if (e.type === 'spawn' && e.warm && e.taskId.startsWith('warm-')) warm.push(e.spawnMs);
  });
  try {
    for (let i = 0; i < (opts.warmup ?? 20); i++) count(await runtime.run(request('prewarm')));
    for (let i = 0; i < (opts.warmRuns ?? 300); i++) count(await runtime.run(request('warm')));
  } finally {
    off();
  }
  warm.sort((a, b) => a - b);

  const phase1 = performance.now();
  // Raw throughput: the pool kept busy, no coordinator.
  const rawTasks = opts.rawTasks ?? 3000;
  const conc = Math.max(1, opts.rawConcurrency ?? runtime.stats().workers * 4);
  let started = 0;
  const t0 = performance.now();
  const lane = async (): Promise<void> => {
    while (started < rawTasks) {
      started++;
      count(await runtime.run(request('raw')));
    }
  };
  await Promise.all(Array.from({ length: Math.min(conc, rawTasks) }, lane));
  const rawMs = performance.now() - t0;

  // Cold spawn: a runtime with one new worker.
  let spawnColdP50Ms: number | null = null;
  let coldFirstRunP50Ms: number | null = null;
  if (opts.createRuntime) {
    const cold: number[] = [];
    const first: number[] = [];
    for (let i = 0; i < (opts.coldRuns ?? 5); i++) {
      const c0 = performance.now();
      const rt = opts.createRuntime(1);
      const offCold = rt.on((e) => {
        if (e.type === 'spawn') cold.push(e.spawnMs);
      });
      try {
        await rt.addModule(opts.moduleHash, opts.bytes);
        count(await rt.run(request('cold')));
        first.push(performance.now() - c0);
      } finally {
        offCold();
        await rt.close();
      }
    }
    cold.sort((a, b) => a - b);
    first.sort((a, b) => a - b);
    spawnColdP50Ms = cold.length ? percentile(cold, 50) : null;
    coldFirstRunP50Ms = percentile(first, 50);
  }

  const phase3 = performance.now();
  const memory = await measureMemory(opts, request, count);
  const phase4 = performance.now();
  return {
    spawnWarmP50Ms: percentile(warm, 50),
    spawnWarmP99Ms: percentile(warm, 99),
    spawnColdP50Ms,
    coldFirstRunP50Ms,
    rawTasks,
    rawMs,
    rawTasksPerMin: (rawTasks * 60_000) / rawMs,
    memoryPerAgentMB: memory.mb,
    memoryMethod: memory.method,
    failures,
    phaseMs: { warm: phase1 - phase0, raw: rawMs, cold: phase3 - phase1 - rawMs, memory: phase4 - phase3 },
  };
}

/**
 * Memory one running agent costs: the JS heap of one agent worker plus the linear memory
 * one run of the agent reports. Worker heaps come from the breakdown of
 * performance.measureUserAgentSpecificMemory (needs cross-origin isolation): the entries
 * attributed to a DedicatedWorkerGlobalScope, averaged over the live workers (the pool's and
 * K fresh ones). Without it, or if it does not answer in time, only linear memory is counted
 * and the method says so.
 */
async function measureMemory(
  opts: PoolBenchOptions,
  request: (prefix: string) => AgentRunRequest,
  count: (o: AgentRunOutcome) => AgentRunOutcome,
): Promise<{ mb: number | null; method: string }> {
  if (!opts.createRuntime) return { mb: null, method: 'skipped: no runtime factory' };
  const k = Math.max(1, opts.memoryWorkers ?? 4);
  const perf = performance as Performance & { measureUserAgentSpecificMemory?: () => Promise<UAMemory> };
  const rt = opts.createRuntime(k);
  try {
    await rt.addModule(opts.moduleHash, opts.bytes);
    const outs = await Promise.all(Array.from({ length: k }, () => rt.run(request('mem')).then(count)));
    const linear = Math.max(0, ...outs.map((o) => (o.ok ? o.result.memoryBytes : 0)));
    const linearOnly = (why: string) => ({ mb: linear / 2 ** 20, method: `agent linear memory only (${why})` });
    if (!globalThis.crossOriginIsolated || !perf.measureUserAgentSpecificMemory) {
      return linearOnly('page not cross-origin isolated: no measureUserAgentSpecificMemory');
    }
    let timer: ReturnType<typeof setTimeout> | undefined;
    const m = await Promise.race([
      perf.measureUserAgentSpecificMemory(),
      new Promise<null>((resolve) => (timer = setTimeout(() => resolve(null), MEASURE_TIMEOUT_MS))),
    ]).finally(() => clearTimeout(timer));
    if (!m) return linearOnly(`measureUserAgentSpecificMemory did not answer within ${MEASURE_TIMEOUT_MS} ms`);
    let workerBytes = 0;
    let workers = 0;
    for (const b of m.breakdown) {
      if (b.attribution.some((a) => a.scope === 'DedicatedWorkerGlobalScope')) {
        workerBytes += b.bytes;
        workers++;
      }
    }
    if (workers === 0) return linearOnly('the memory breakdown listed no worker');
    const perWorker = workerBytes / workers;
    return {
      mb: (perWorker + linear) / 2 ** 20,
      method: `measureUserAgentSpecificMemory: mean JS heap of ${workers} live agent workers (${Math.round(perWorker)} B) + the agent's linear memory (${linear} B)`,
    };
  } finally {
    await rt.close();
  }
}
