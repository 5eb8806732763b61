/**
 * AgentPool: the page's agent runtime. A warm pool of Web Workers, each running
 * one agent at a time; a queue when all are busy; a wall-clock deadline per run
 * (the worker is terminated and replaced); stop(taskId); crash recovery;
 * lifecycle events; spawn-time percentiles.
 *
 * Modules: the pool's ModuleCache is the one owner, an LRU bounded by
 * `maxModules`/`maxModuleBytes`. Each slot mirrors the keys its worker holds;
 * when the cache evicts a module the pool posts `dropModules` to every worker
 * holding one of its keys, on the same port as runs, so a run already posted
 * finishes first and a later run re-posts the module (or, if the hash is gone,
 * ends AGENT_MODULE_MISSING on the pool side). Workers keep no bound of their own.
 *
 * Wasm memory: every memory reserves ~8 GiB of address space until it is collected, and a
 * renderer has room for about 124 at once across the page and all its workers (see
 * ./memories.ts). Workers reuse memories; the pool recycles a worker (terminating it gives
 * everything back at once) when its uncollected memories pass a budget, and after a run
 * that left more than `recycleMemoryBytes` of memory, so a hog's memory returns to the
 * system when it ends. A run that still finds no room (NODE_RESOURCE_EXHAUSTED) is tried
 * once more on a fresh worker, with the workers holding garbage recycled first; a second
 * refusal goes back to the coordinator, which retries the task (another node, maybe).
 */
import { proxy, wrap, type Endpoint, type Remote } from 'comlink';
import { AppError, serializeError, type ErrorCode, type HostMemoryDescriptor } from '../../shared';
import { isAgentStartNotice, type AgentWorkerApi, type WorkerRunAnswer } from './worker-api';
import { DEFAULT_MAX_MODULE_BYTES, DEFAULT_MAX_MODULES, ModuleCache, type PreparedModule } from './module-cache';
import { wallClock } from './run';
import type { AgentEvent, AgentRunOutcome, AgentRunRequest, AgentRuntime, AgentRuntimeStats, ModelBridge } from './types';

/**
 * What the pool needs of a worker: a DOM `Worker` fits; tests pass worker-like
 * objects. It must dispatch an `error` event when the worker dies.
 */
export interface WorkerLike extends Endpoint {
  terminate(): void;
}

export interface AgentPoolOptions {
  /** Workers kept warm (default: hardware threads - 1, between 1 and 4). */
  size?: number;
  /** Makes one worker (default: a module Web Worker on ./agent-worker.ts). */
  createWorker?: () => WorkerLike;
  /**
   * Most agent modules (distinct hashes) kept, each with its compiled memory-cap variants;
   * past it the least recently run or added goes and `hasModule` answers false (default 64).
   */
  maxModules?: number;
  /**
   * Most module bytes kept: instrumented bytes plus the bytes of each compiled variant
   * (default 256 MiB). The most recently used module stays even if it alone is larger.
   */
  maxModuleBytes?: number;
  /** A worker whose run ended with more Wasm memory than this is recycled, so the memory returns (default 64 MiB). */
  recycleMemoryBytes?: number;
  /**
   * A worker holding this many memories it let go but the engine has not collected is recycled
   * (default: 48 over the pool's workers, at least 4): the renderer's room is shared.
   */
  maxUncollectedMemories?: number;
}

export const DEFAULT_RECYCLE_MEMORY_BYTES = 64 << 20;
/** Uncollected memories the pool lets its workers hold together (the renderer has room for ~124, shared with other pages). */
const UNCOLLECTED_BUDGET = 48;

const SPAWN_SAMPLES = 1024;
/** Consecutive workers that may die before answering their first ping before the pool gives up. */
const MAX_START_FAILURES = 5;

type SlotState = 'starting' | 'idle' | 'busy' | 'dead';

interface Slot {
  id: number;
  worker: WorkerLike;
  api: Remote<AgentWorkerApi>;
  state: SlotState;
  modules: Set<string>;
  job: Job | null;
  createdAt: number;
  /** Memories the worker let go that are not collected yet, as its last answer said. */
  uncollected: number;
  onMessage: (ev: MessageEvent) => void;
  onError: (ev: Event) => void;
}

interface Job {
  req: AgentRunRequest;
  requestedAt: number;
  resolve: (outcome: AgentRunOutcome) => void;
  slot: Slot | null;
  dispatchedAt: number;
  timer: ReturnType<typeof setTimeout> | undefined;
  warm: boolean;
  done: boolean;
  /** Whether it was already tried again after NODE_RESOURCE_EXHAUSTED. */
  retried: boolean;
  /** The spawn time its worker reported (set once the agent started). */
  spawnMs?: number;
  /** The node's model, for a module importing agent_model (proxied to the worker). */
  model?: ModelBridge;
}

function defaultCreateWorker(): WorkerLike {
  return new Worker(new URL('./agent-worker.ts', import.meta.url), { type: 'module', name: 'agent' });
}

function defaultSize(): number {
  const threads = typeof navigator !== 'undefined' && navigator.hardwareConcurrency ? navigator.hardwareConcurrency : 2;
  return Math.max(1, Math.min(4, threads - 1));
}

function failure(code: ErrorCode, message: string, extra: { durationMs?: number } = {}): AgentRunOutcome {
  return { ok: false, error: serializeError(new AppError(code, message)), ...extra };
}

function percentile(sorted: Float64Array, p: number): number {
  if (sorted.length === 0) return 0;
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)];
}

export class AgentPool implements AgentRuntime {
  readonly #size: number;
  readonly #createWorker: () => WorkerLike;
  readonly #cache: ModuleCache;
  readonly #recycleBytes: number;
  readonly #maxUncollected: number;
  #recycled = 0;
  #resourceRetries = 0;
  readonly #slots = new Map<number, Slot>();
  readonly #queue: Job[] = [];
  readonly #running = new Map<string, Job>();
  readonly #listeners = new Set<(e: AgentEvent) => void>();
  readonly #spawn = new Float64Array(SPAWN_SAMPLES);
  #spawnCount = 0;
  /** Linear memory of the latest runs, for the node's memory-per-agent figure. */
  readonly #memory = new Float64Array(SPAWN_SAMPLES);
  #memoryCount = 0;
  #nextWorkerId = 1;
  #startFailures = 0;
  #closed = false;
  #readyWaiters: (() => void)[] = [];

  constructor(options: AgentPoolOptions = {}) {
    this.#size = Math.max(1, Math.floor(options.size ?? defaultSize()));
    this.#createWorker = options.createWorker ?? defaultCreateWorker;
    this.#recycleBytes = options.recycleMemoryBytes ?? DEFAULT_RECYCLE_MEMORY_BYTES;
    this.#maxUncollected = options.maxUncollectedMemories ?? Math.max(4, Math.floor(UNCOLLECTED_BUDGET / this.#size));
    this.#cache = new ModuleCache({
      maxModules: options.maxModules ?? DEFAULT_MAX_MODULES,
      maxBytes: options.maxModuleBytes ?? DEFAULT_MAX_MODULE_BYTES,
      onEvict: (_hash, keys) => this.#dropEverywhere(keys),
    });
    for (let i = 0; i < this.#size; i++) this.#startWorker();
  }

  /** Resolves once every worker of the pool has started (answered its first ping). */
  ready(): Promise<void> {
    if (this.#allStarted()) return Promise.resolve();
    return new Promise((resolve) => this.#readyWaiters.push(resolve));
  }

  hasModule(hash: string): boolean {
    return this.#cache.has(hash);
  }

  async addModule(hash: string, bytes: Uint8Array): Promise<void> {
    await this.#cache.add(hash, bytes);
  }

  /** Holds a module the node compiled itself from the coordinator's prepared bytes (ModuleCache.addCompiled). */
  addCompiledModule(hash: string, module: WebAssembly.Module, memory: HostMemoryDescriptor, byteLength: number): void {
    this.#cache.addCompiled(hash, module, memory, byteLength);
  }

  on(listener: (e: AgentEvent) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  run(req: AgentRunRequest, model?: ModelBridge): Promise<AgentRunOutcome> {
    const requestedAt = wallClock();
    if (this.#closed) return Promise.resolve(failure('AGENT_STOPPED', 'The agent runtime is closed; create a new AgentPool.'));
    if (!this.#cache.has(req.moduleHash)) {
      return Promise.resolve(
        failure('AGENT_MODULE_MISSING', `No module with hash ${req.moduleHash} is loaded (never added, or evicted as least recently used); call addModule(hash, bytes) before run().`),
      );
    }
    if (this.#running.has(req.taskId) || this.#queue.some((j) => j.req.taskId === req.taskId)) {
      return Promise.resolve(failure('INTERNAL', `Task ${req.taskId} is already running in this runtime; task ids must be unique.`));
    }
    return new Promise((resolve) => {
      const job: Job = { req, requestedAt, resolve, slot: null, dispatchedAt: 0, timer: undefined, warm: true, done: false, retried: false, ...(model ? { model } : {}) };
      this.#queue.push(job);
      this.#pump();
    });
  }

  stop(taskId: string, reason = 'stopped by request'): boolean {
    const queued = this.#queue.findIndex((j) => j.req.taskId === taskId);
    if (queued >= 0) {
      const [job] = this.#queue.splice(queued, 1);
      this.#emit({ type: 'stop', taskId, workerId: 0, reason });
      this.#finish(job, failure('AGENT_STOPPED', `The agent was stopped before it started: ${reason}.`));
      return true;
    }
    const job = this.#running.get(taskId);
    if (!job) return false;
    this.#kill(job, 'AGENT_STOPPED', `The agent was stopped: ${reason}.`, reason);
    return true;
  }

  stats(): AgentRuntimeStats {
    let idle = 0;
    let running = 0;
    for (const s of this.#slots.values()) {
      if (s.state === 'idle') idle++;
      else if (s.state === 'busy') running++;
    }
    const n = Math.min(this.#spawnCount, SPAWN_SAMPLES);
    const sorted = this.#spawn.slice(0, n).sort();
    return {
      workers: this.#slots.size,
      idle,
      running,
      queued: this.#queue.length,
      compiledModules: this.#cache.compiledCount,
      moduleBytes: this.#cache.bytes,
      evictedModules: this.#cache.evictions,
      recycledWorkers: this.#recycled,
      resourceRetries: this.#resourceRetries,
      spawnP50Ms: percentile(sorted, 50),
      spawnP99Ms: percentile(sorted, 99),
      agentMemoryBytes: percentile(this.#memory.slice(0, Math.min(this.#memoryCount, SPAWN_SAMPLES)).sort(), 50),
    };
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    for (const job of this.#queue.splice(0)) this.#finish(job, failure('AGENT_STOPPED', 'The agent runtime closed before the agent started.'));
    for (const job of [...this.#running.values()]) this.#finish(job, failure('AGENT_STOPPED', 'The agent runtime closed while the agent ran.'));
    for (const slot of [...this.#slots.values()]) this.#retire(slot, 'runtime closed', false);
    this.#wakeReady();
  }

  // ------------------------------------------------------------------ workers

  #startWorker(): void {
    const id = this.#nextWorkerId++;
    const createdAt = performance.now();
    let worker: WorkerLike;
    try {
      worker = this.#createWorker();
    } catch (err) {
      this.#startFailed(`the worker could not be created: ${err instanceof Error ? err.message : String(err)}`);
      return;
    }
    const slot: Slot = {
      id,
      worker,
      api: wrap<AgentWorkerApi>(worker),
      state: 'starting',
      modules: new Set(),
      job: null,
      createdAt,
      uncollected: 0,
      onMessage: (ev) => {
        if (isAgentStartNotice(ev.data)) this.#started(slot, ev.data.taskId, ev.data.spawnMs);
      },
      onError: (ev) => this.#crashed(slot, (ev as ErrorEvent).message || 'the worker raised an error'),
    };
    worker.addEventListener('message', slot.onMessage as EventListener);
    worker.addEventListener('error', slot.onError);
    worker.addEventListener('messageerror', slot.onError);
    this.#slots.set(id, slot);
    slot.api.ping().then(
      () => {
        if (slot.state !== 'starting') return;
        slot.state = 'idle';
        this.#startFailures = 0;
        this.#emit({ type: 'worker.start', workerId: id, startMs: performance.now() - createdAt });
        if (this.#allStarted()) this.#wakeReady();
        this.#pump();
      },
      (err: unknown) => this.#crashed(slot, `the worker did not answer: ${err instanceof Error ? err.message : String(err)}`),
    );
  }

  #allStarted(): boolean {
    for (const s of this.#slots.values()) if (s.state === 'starting') return false;
    return true;
  }

  #wakeReady(): void {
    for (const wake of this.#readyWaiters.splice(0)) wake();
  }

  #startFailed(reason: string): void {
    this.#startFailures++;
    if (this.#startFailures >= MAX_START_FAILURES && ![...this.#slots.values()].some((s) => s.state !== 'starting')) {
      // Workers die before they start: the script is broken; answer the queue instead of looping.
      for (const job of this.#queue.splice(0)) {
        this.#finish(job, failure('WORKER_CRASHED', `Agent workers fail to start (${reason}); check that agent-worker.ts is served and loads.`));
      }
      this.#wakeReady();
      return;
    }
    this.#startWorker();
  }

  /** Terminates a worker and, unless closing, starts its replacement. */
  #retire(slot: Slot, reason: string, replace = true): void {
    if (slot.state === 'dead') return;
    const wasStarting = slot.state === 'starting';
    slot.state = 'dead';
    slot.worker.removeEventListener('message', slot.onMessage as EventListener);
    slot.worker.removeEventListener('error', slot.onError);
    slot.worker.removeEventListener('messageerror', slot.onError);
    slot.worker.terminate();
    this.#slots.delete(slot.id);
    if (!replace || this.#closed) return;
    this.#emit({ type: 'replace', workerId: slot.id, reason });
    if (wasStarting) this.#startFailed(reason);
    else this.#startWorker();
  }

  #crashed(slot: Slot, reason: string): void {
    if (slot.state === 'dead') return;
    const job = slot.job;
    if (job) this.#kill(job, 'WORKER_CRASHED', `The worker running the agent died (${reason}); the task can be retried.`, `crash: ${reason}`);
    else this.#retire(slot, `crash: ${reason}`);
  }

  // ------------------------------------------------------------------ runs

  #pump(): void {
    while (this.#queue.length > 0) {
      const slot = this.#idleSlot();
      if (!slot) return;
      const job = this.#queue.shift() as Job;
      this.#dispatch(slot, job);
    }
  }

  #idleSlot(): Slot | undefined {
    for (const s of this.#slots.values()) if (s.state === 'idle') return s;
    return undefined;
  }

  #dispatch(slot: Slot, job: Job): void {
    slot.state = 'busy';
    slot.job = job;
    job.slot = slot;
    this.#running.set(job.req.taskId, job);
    const ready = this.#cache.peek(job.req.moduleHash, job.req.limits.memoryMB);
    if (ready) {
      this.#send(slot, job, ready);
      return;
    }
    job.warm = false;
    this.#cache.get(job.req.moduleHash, job.req.limits.memoryMB).then(
      () => {
        if (job.done) return;
        // Another compile may have evicted it since: send only what the cache still holds.
        const held = this.#cache.peek(job.req.moduleHash, job.req.limits.memoryMB);
        if (held) {
          this.#send(slot, job, held);
        } else {
          this.#release(slot, job);
          this.#finish(
            job,
            failure('AGENT_MODULE_MISSING', `Module ${job.req.moduleHash} was evicted as least recently used before it ran; call addModule(hash, bytes) again.`),
          );
        }
      },
      (err: unknown) => {
        this.#release(slot, job);
        this.#finish(job, { ok: false, error: serializeError(err) });
      },
    );
  }

  #send(slot: Slot, job: Job, prepared: PreparedModule): void {
    if (!slot.modules.has(prepared.key)) {
      // Same port, so the worker handles loadModule before run: no round trip to wait for.
      void slot.api.loadModule(prepared.key, prepared.module, prepared.capPages, prepared.memory);
      slot.modules.add(prepared.key);
      job.warm = false;
    }
    job.dispatchedAt = performance.now();
    job.timer = setTimeout(
      () => this.#kill(job, 'AGENT_TIMEOUT', `The agent ran past its ${job.req.limits.timeoutMs} ms deadline; raise limits.timeoutMs or give it less work.`, 'timeout'),
      job.req.limits.timeoutMs,
    );
    // The model crosses to the worker as a comlink proxy (its own MessageChannel), released by the worker when the run ends.
    slot.api.run(prepared.key, job.req, job.requestedAt, job.model ? proxy(job.model) : undefined).then(
      (answer) => this.#answered(slot, job, answer),
      (err: unknown) => {
        this.#release(slot, job);
        this.#finish(job, { ok: false, error: serializeError(err) });
      },
    );
  }

  #answered(slot: Slot, job: Job, answer: WorkerRunAnswer): void {
    const { outcome } = answer;
    slot.uncollected = answer.uncollected;
    this.#release(slot, job);
    if (job.done) return;
    const memoryBytes = outcome.ok ? outcome.result.memoryBytes : outcome.memoryBytes;
    const exhausted = !outcome.ok && outcome.error.code === 'NODE_RESOURCE_EXHAUSTED';
    if (exhausted) {
      // Terminating a worker frees its reservations at once; collect the pool's garbage, then try once more.
      for (const s of [...this.#slots.values()]) {
        if (s === slot || (s.state === 'idle' && s.uncollected > 0)) this.#recycle(s, 'Wasm memory exhausted: giving address space back');
      }
      if (!job.retried) {
        job.retried = true;
        this.#resourceRetries++;
        clearTimeout(job.timer);
        job.slot = null;
        job.dispatchedAt = 0;
        this.#running.delete(job.req.taskId);
        this.#queue.unshift(job);
        this.#pump();
        return;
      }
    } else if (memoryBytes !== undefined && memoryBytes > this.#recycleBytes) {
      this.#recycle(slot, `the agent ended with ${memoryBytes >> 20} MiB of memory: giving it back`);
    } else if (answer.uncollected >= this.#maxUncollected) {
      this.#recycle(slot, `${answer.uncollected} Wasm memories not yet collected: giving their address space back`);
    }
    if (memoryBytes !== undefined) this.#memory[this.#memoryCount++ % SPAWN_SAMPLES] = memoryBytes;
    if (outcome.ok && job.spawnMs !== undefined) outcome.result.spawnMs = job.spawnMs;
    this.#finish(job, outcome);
  }

  #recycle(slot: Slot, reason: string): void {
    if (slot.state === 'dead') return;
    this.#recycled++;
    this.#retire(slot, reason);
  }

  /** Tells every worker holding one of these keys to drop it (the cache evicted them). */
  #dropEverywhere(keys: string[]): void {
    if (keys.length === 0) return;
    for (const slot of this.#slots.values()) {
      const held = keys.filter((k) => slot.modules.delete(k));
      if (held.length > 0) slot.api.dropModules(held).catch(() => undefined);
    }
  }

  #started(slot: Slot, taskId: string, spawnMs: number): void {
    const job = slot.job;
    if (!job || job.req.taskId !== taskId) return;
    this.#spawn[this.#spawnCount++ % SPAWN_SAMPLES] = spawnMs;
    job.spawnMs = spawnMs;
    this.#emit({ type: 'spawn', taskId, agentName: job.req.agentName, workerId: slot.id, warm: job.warm, spawnMs });
  }

  /** Gives a worker back after its run (unless it was retired meanwhile). */
  #release(slot: Slot, job: Job): void {
    if (slot.job !== job) return;
    slot.job = null;
    if (slot.state === 'busy') slot.state = 'idle';
  }

  /** Ends a running job by terminating its worker, then replaces the worker. */
  #kill(job: Job, code: ErrorCode, message: string, reason: string): void {
    if (job.done) return;
    const slot = job.slot;
    if (code !== 'WORKER_CRASHED') this.#emit({ type: 'stop', taskId: job.req.taskId, workerId: slot?.id ?? 0, reason });
    const durationMs = job.dispatchedAt ? performance.now() - job.dispatchedAt : 0;
    if (slot) {
      slot.job = null;
      this.#retire(slot, reason);
    }
    this.#finish(job, failure(code, message, { durationMs }));
  }

  #finish(job: Job, outcome: AgentRunOutcome): void {
    if (job.done) return;
    job.done = true;
    clearTimeout(job.timer);
    if (this.#running.get(job.req.taskId) === job) this.#running.delete(job.req.taskId);
    this.#emit({ type: 'exit', taskId: job.req.taskId, agentName: job.req.agentName, workerId: job.slot?.id ?? 0, outcome });
    job.resolve(outcome);
    this.#pump();
  }

  #emit(e: AgentEvent): void {
    for (const l of this.#listeners) {
      try {
        l(e);
      } catch {
        // A faulty listener must not break the runtime.
      }
    }
  }
}
