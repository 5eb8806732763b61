/**
 * The inference runtime behind a Web Worker, over comlink: `exposeInference(runtime)` in the worker,
 * `RemoteInference` (an `InferenceRuntime`) in the page. Progress callbacks and event listeners
 * cross as comlink proxies; `stats()` is answered from a copy refreshed on every event and a timer,
 * since the interface's stats() is synchronous.
 */
import { expose, proxy, transfer, wrap, type Endpoint, type Remote } from 'comlink';
import { AppError, deserializeError, serializeError, type ErrorInfo, type ModelCapability } from '../../shared';
import type { CachedModelInfo, GenerateRunOutcome, GenerateRunRequest, GenerationProgress, InferenceEvent, InferenceRuntime, InferenceRuntimeStats } from './types';
import type { TrainProgress, TrainRunOutcome, TrainRunRequest } from './train';

/** What the worker serves. */
export interface InferenceWorkerApi {
  /**
   * `progress`: how many progress calls were made. They travel on the callback proxy's own port, so
   * they may arrive after the answer; the page waits for them before it hands the outcome on.
   */
  generate(req: GenerateRunRequest, onProgress?: (p: GenerationProgress) => void): Promise<{ outcome: GenerateRunOutcome; progress: number }>;
  cancel(taskId: string, reason?: string): boolean;
  models(): Promise<ModelCapability[]>;
  cached(): Promise<CachedModelInfo[]>;
  stats(): InferenceRuntimeStats;
  subscribe(listener: (e: InferenceEvent) => void): void;
  load(model: string): Promise<unknown>;
  close(): Promise<void>;
  trains(): boolean;
  /** As generate: `progress` counts the progress calls made (they may arrive after the answer). */
  train(req: TrainRunRequest, onProgress?: (p: TrainProgress) => void): Promise<{ outcome: TrainRunOutcome; progress: number }>;
}

/** Runs `call` with a progress callback that counts its calls (the page waits for that many before it hands the outcome on). */
async function counted<P, O>(call: (cb: ((p: P) => void) | undefined) => Promise<O>, onProgress?: (p: P) => void): Promise<{ outcome: O; progress: number }> {
  let progress = 0;
  const outcome = await call(
    onProgress
      ? (p) => {
          progress++;
          void onProgress(p);
        }
      : undefined,
  );
  return { outcome, progress };
}

/** In the worker: serves `runtime` on `endpoint` (the worker's global scope by default). */
export function exposeInference(runtime: InferenceRuntime & { load?(model: string): Promise<unknown> }, endpoint?: Endpoint): void {
  const api: InferenceWorkerApi = {
    generate: (req, onProgress) => counted((cb) => runtime.generate(req, cb), onProgress),
    cancel: (taskId, reason) => runtime.cancel(taskId, reason),
    models: () => runtime.models(),
    cached: () => runtime.cached(),
    stats: () => runtime.stats(),
    subscribe(listener) {
      runtime.on((e) => void listener(e));
    },
    load: async (model) => {
      if (!runtime.load) throw new Error('This runtime cannot load models ahead of a task.');
      return runtime.load(model);
    },
    close: () => runtime.close(),
    trains: () => runtime.trains === true,
    train: async (req, onProgress) => {
      if (!runtime.train) return { outcome: { ok: false, error: serializeError(new AppError('MODEL_UNSUPPORTED', 'This runtime does not train.')) }, progress: 0 };
      const answer = await counted((cb) => runtime.train!(req, cb), onProgress);
      // The adapter's bytes move to the page rather than being copied.
      return answer.outcome.ok ? transfer(answer, [answer.outcome.result.adapter.safetensors.buffer as ArrayBuffer]) : answer;
    },
  };
  const ep = endpoint ?? (globalThis as unknown as Endpoint);
  expose(api, ep);
  ep.postMessage({ type: READY });
}

const READY = 'inference.ready';
/** Longest the page waits for progress calls still in flight when a generation's answer arrives. */
const PROGRESS_GRACE_MS = 5_000;
const FAILED = 'inference.failed';

/** In the worker: tells the page that setting up failed (it rejects `RemoteInference.connect`). */
export function reportInferenceFailure(err: unknown, endpoint?: Endpoint): void {
  const ep = endpoint ?? (globalThis as unknown as Endpoint);
  ep.postMessage({ type: FAILED, error: serializeError(err) });
}

/** Waits for the worker's ready (or failed) notice: messages sent before it exposes its API would be lost. */
function ready(endpoint: Endpoint, timeoutMs: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      endpoint.removeEventListener('message', onMessage);
      reject(new AppError('INTERNAL', `The inference worker did not start within ${timeoutMs} ms.`));
    }, timeoutMs);
    function onMessage(ev: Event): void {
      const data = (ev as MessageEvent).data as { type?: unknown; error?: ErrorInfo } | null;
      if (data?.type !== READY && data?.type !== FAILED) return;
      clearTimeout(timer);
      endpoint.removeEventListener('message', onMessage);
      if (data.type === READY) resolve();
      else reject(deserializeError(data.error ?? { code: 'INTERNAL', name: 'AppError', message: 'The inference worker failed to start.' }));
    }
    endpoint.addEventListener('message', onMessage);
  });
}

const EMPTY_STATS: InferenceRuntimeStats = {
  active: 0,
  waiting: 0,
  maxSequences: 1,
  tokensGenerated: 0,
  tokensPerSec: 0,
  gpuMemoryBytes: 0,
  gpuBudgetBytes: 0,
};

/** In the page: the runtime in a worker, seen as an InferenceRuntime. */
export class RemoteInference implements InferenceRuntime {
  readonly #remote: Remote<InferenceWorkerApi>;
  readonly #listeners = new Set<(e: InferenceEvent) => void>();
  readonly #timer: ReturnType<typeof setInterval>;
  #stats: InferenceRuntimeStats;
  #closed = false;
  readonly trains: boolean;

  private constructor(remote: Remote<InferenceWorkerApi>, stats: InferenceRuntimeStats, refreshMs: number, trains: boolean) {
    this.#remote = remote;
    this.#stats = stats;
    this.trains = trains;
    this.#timer = setInterval(() => void this.#refresh(), refreshMs);
  }

  /** Connects to a worker that called exposeInference; answers once its first stats arrived. */
  static async connect(endpoint: Endpoint, refreshMs = 500, startTimeoutMs = 60_000): Promise<RemoteInference> {
    await ready(endpoint, startTimeoutMs);
    const remote = wrap<InferenceWorkerApi>(endpoint);
    const stats = await remote.stats();
    const r = new RemoteInference(remote, stats ?? EMPTY_STATS, refreshMs, await remote.trains());
    await remote.subscribe(
      proxy((e: InferenceEvent) => {
        void r.#refresh();
        for (const l of r.#listeners) {
          try {
            l(e);
          } catch {
            // a listener's fault is not the runtime's
          }
        }
      }),
    );
    return r;
  }

  async #refresh(): Promise<void> {
    if (this.#closed) return;
    try {
      this.#stats = await this.#remote.stats();
    } catch {
      // the worker is gone; the last figures stay
    }
  }

  generate(req: GenerateRunRequest, onProgress?: (p: GenerationProgress) => void): Promise<GenerateRunOutcome> {
    return this.#withProgress((cb) => this.#remote.generate(req, cb), onProgress);
  }

  train(req: TrainRunRequest, onProgress?: (p: TrainProgress) => void): Promise<TrainRunOutcome> {
    return this.#withProgress((cb) => this.#remote.train(req, cb), onProgress);
  }

  /** A call whose progress travels on a callback proxy: the answer waits for the progress calls still in flight. */
  async #withProgress<P, O>(call: (cb: ((p: P) => void) | undefined) => Promise<{ outcome: O; progress: number }>, onProgress?: (p: P) => void): Promise<O> {
    let got = 0;
    let want = Infinity;
    let caughtUp: (() => void) | null = null;
    const cb = onProgress
      ? proxy((p: P) => {
          got++;
          onProgress(p);
          if (got >= want) caughtUp?.();
        })
      : undefined;
    void this.#refresh();
    try {
      const { outcome, progress } = await call(cb);
      if (got < progress) {
        // The last progress calls are still on their way: the result must not overtake them.
        await new Promise<void>((resolve) => {
          want = progress;
          caughtUp = resolve;
          setTimeout(resolve, PROGRESS_GRACE_MS);
        });
      }
      return outcome;
    } finally {
      void this.#refresh();
    }
  }

  cancel(taskId: string, reason?: string): boolean {
    void this.#remote.cancel(taskId, reason);
    return true;
  }

  models(): Promise<ModelCapability[]> {
    return this.#remote.models();
  }

  cached(): Promise<CachedModelInfo[]> {
    return this.#remote.cached();
  }

  load(model: string): Promise<unknown> {
    return this.#remote.load(model);
  }

  stats(): InferenceRuntimeStats {
    return this.#stats;
  }

  on(listener: (e: InferenceEvent) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  async close(): Promise<void> {
    this.#closed = true;
    clearInterval(this.#timer);
    await this.#remote.close();
  }
}
