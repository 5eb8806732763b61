/**
 * Ties a node's inference runtime to an element: listens to its events (downloads, loads,
 * unloads, tokens), asks it for its models and its weight store's models (on those events and
 * every couple of seconds, one question in flight at a time), samples generation throughput once a
 * second into a bounded series, and re-renders the host at most a few times a second.
 */
import type { ReactiveController, ReactiveControllerHost } from 'lit';
import { AppError, type ModelCapability } from '../shared';
import type { CachedModelInfo, InferenceEvent, InferenceRuntime, InferenceRuntimeStats } from '../worker/inference';
import { RenderThrottle } from './render-throttle';

export interface ThroughputSample {
  /** Epoch ms at the end of the interval. */
  t: number;
  /** Tokens generated per second over the interval, all sequences together. */
  tokensPerSec: number;
}

/** A model's weights coming from the coordinator into the weight store. */
export interface DownloadProgress {
  model: string;
  loadedBytes: number;
  totalBytes: number;
  /** Epoch ms of the last progress event. */
  updatedAt: number;
  /** All bytes arrived (or the model loaded); the bar stays a moment, then goes. */
  done: boolean;
}

/** What the model was loaded with, from its `load` event. */
export interface LoadInfo {
  ms: number;
  at: number;
}

export interface InferenceView {
  stats: InferenceRuntimeStats;
  models: ModelCapability[];
  cached: CachedModelInfo[];
  downloads: DownloadProgress[];
  loads: ReadonlyMap<string, LoadInfo>;
  throughput: ThroughputSample[];
}

export interface InferenceControllerOptions {
  /** Least time between re-renders. */
  renderMs?: number;
  /** How often models() and cached() are asked when nothing happens. */
  pollMs?: number;
  /** Least time between two questions, however many events arrive. */
  minPollMs?: number;
  /** Throughput samples kept (one a second). */
  samples?: number;
  /** An unanswered question is given up after this long, so a stuck worker cannot stop the polling. */
  askTimeoutMs?: number;
}

/** A finished download's bar stays this long. */
const DONE_LINGER_MS = 3_000;
/** A download with no progress for this long is dropped (its task failed or moved on). */
const STALE_MS = 60_000;
/** Downloads tracked at once. */
const MAX_DOWNLOADS = 32;

export class InferenceController implements ReactiveController {
  readonly #host: ReactiveControllerHost;
  readonly #render: RenderThrottle;
  readonly #pollMs: number;
  readonly #minPollMs: number;
  readonly #samples: number;
  readonly #askTimeoutMs: number;
  #runtime: InferenceRuntime | null = null;
  #unsubscribe: (() => void) | null = null;
  #pollTimer: ReturnType<typeof setTimeout> | null = null;
  #sampler: ReturnType<typeof setInterval> | null = null;
  #connected = false;
  #polling = false;
  #pollAgain = false;
  #lastPoll = 0;
  /** Bumped on every attach, so answers for a runtime that was replaced are dropped. */
  #epoch = 0;
  #models: ModelCapability[] = [];
  #cached: CachedModelInfo[] = [];
  readonly #downloads = new Map<string, DownloadProgress>();
  readonly #loads = new Map<string, LoadInfo>();
  #throughput: ThroughputSample[] = [];
  #tokens = 0;
  #lastSampleT = 0;
  view: InferenceView | null = null;

  constructor(host: ReactiveControllerHost, opts: InferenceControllerOptions = {}) {
    this.#host = host;
    this.#render = new RenderThrottle(() => this.#refresh(), opts.renderMs ?? 250);
    this.#pollMs = opts.pollMs ?? 2_000;
    this.#minPollMs = opts.minPollMs ?? 500;
    this.#samples = opts.samples ?? 120;
    this.#askTimeoutMs = opts.askTimeoutMs ?? 10_000;
    host.addController(this);
  }

  get runtime(): InferenceRuntime | null {
    return this.#runtime;
  }

  set runtime(runtime: InferenceRuntime | null) {
    if (runtime === this.#runtime) return;
    this.#detach();
    this.#runtime = runtime;
    this.#models = [];
    this.#cached = [];
    this.#downloads.clear();
    this.#loads.clear();
    this.#throughput = [];
    this.view = null;
    if (this.#connected) this.#attach();
    else this.#host.requestUpdate();
  }

  hostConnected(): void {
    this.#connected = true;
    this.#attach();
  }

  hostDisconnected(): void {
    this.#connected = false;
    this.#detach();
  }

  #attach(): void {
    const runtime = this.#runtime;
    if (!runtime || this.#unsubscribe) return;
    this.#epoch++;
    this.#unsubscribe = runtime.on((e) => this.#onEvent(e));
    this.#tokens = 0;
    this.#lastSampleT = performance.now();
    this.#sampler = setInterval(() => this.#sample(), 1000);
    this.#poll();
    this.#render.render();
  }

  #detach(): void {
    this.#unsubscribe?.();
    this.#unsubscribe = null;
    this.#render.cancel();
    if (this.#pollTimer !== null) clearTimeout(this.#pollTimer);
    if (this.#sampler !== null) clearInterval(this.#sampler);
    this.#pollTimer = this.#sampler = null;
    this.#polling = this.#pollAgain = false;
  }

  #onEvent(e: InferenceEvent): void {
    switch (e.type) {
      case 'tokens':
        this.#tokens += e.tokens;
        return; // drawn at the next sample, not per token
      case 'download': {
        if (!this.#downloads.has(e.model) && this.#downloads.size >= MAX_DOWNLOADS) return;
        const total = Math.max(0, e.totalBytes);
        this.#downloads.set(e.model, { model: e.model, loadedBytes: Math.min(e.loadedBytes, total || e.loadedBytes), totalBytes: total, updatedAt: Date.now(), done: total > 0 && e.loadedBytes >= total });
        break;
      }
      case 'load': {
        this.#loads.set(e.model, { ms: e.ms, at: Date.now() });
        const d = this.#downloads.get(e.model);
        if (d) this.#downloads.set(e.model, { ...d, loadedBytes: d.totalBytes || d.loadedBytes, done: true, updatedAt: Date.now() });
        break;
      }
      case 'unload':
        this.#loads.delete(e.model);
        break;
      case 'adapter':
        break; // the models panel shows it after the poll below
      default: {
        const never: never = e;
        void never;
        return;
      }
    }
    this.#poll();
    this.#render.request();
  }

  #sample(): void {
    const now = performance.now();
    const tokensPerSec = (this.#tokens * 1000) / Math.max(1, now - this.#lastSampleT);
    this.#tokens = 0;
    this.#lastSampleT = now;
    this.#throughput.push({ t: Date.now(), tokensPerSec });
    if (this.#throughput.length > this.#samples) this.#throughput.shift();
    const wall = Date.now();
    for (const [name, d] of this.#downloads) {
      if ((d.done && wall - d.updatedAt > DONE_LINGER_MS) || wall - d.updatedAt > STALE_MS) this.#downloads.delete(name);
    }
    this.#render.request();
  }

  /** Asks models() and cached(): at once when idle, else once the answer in flight is in (never two at a time, never closer than minPollMs). */
  #poll(): void {
    if (!this.#runtime || !this.#unsubscribe) return;
    if (this.#polling) {
      this.#pollAgain = true;
      return;
    }
    const wait = this.#lastPoll + this.#minPollMs - performance.now();
    if (wait > 0) {
      if (this.#pollTimer !== null) clearTimeout(this.#pollTimer);
      this.#pollTimer = setTimeout(() => void this.#ask(), wait);
      return;
    }
    void this.#ask();
  }

  async #ask(): Promise<void> {
    const runtime = this.#runtime;
    const epoch = this.#epoch;
    if (!runtime || !this.#unsubscribe) return;
    if (this.#pollTimer !== null) clearTimeout(this.#pollTimer);
    this.#pollTimer = null;
    this.#polling = true;
    this.#lastPoll = performance.now();
    const [models, cached] = await Promise.allSettled([bounded(runtime.models(), this.#askTimeoutMs), bounded(runtime.cached(), this.#askTimeoutMs)]);
    if (epoch !== this.#epoch || !this.#unsubscribe) return;
    this.#polling = false;
    // A failed question keeps the last answer: the worker may be busy or gone.
    if (models.status === 'fulfilled') this.#models = models.value;
    if (cached.status === 'fulfilled') {
      this.#cached = cached.value;
      for (const c of cached.value) {
        const d = this.#downloads.get(c.name);
        if (d && !d.done && c.complete) this.#downloads.set(c.name, { ...d, loadedBytes: d.totalBytes || d.loadedBytes, done: true, updatedAt: Date.now() });
      }
    }
    this.#render.request();
    if (this.#pollAgain) {
      this.#pollAgain = false;
      this.#poll();
    } else {
      this.#pollTimer = setTimeout(() => void this.#ask(), this.#pollMs);
    }
  }

  #refresh(): void {
    const runtime = this.#runtime;
    if (!runtime) return;
    this.view = {
      stats: runtime.stats(),
      models: this.#models,
      cached: this.#cached,
      downloads: [...this.#downloads.values()],
      loads: new Map(this.#loads),
      throughput: [...this.#throughput],
    };
    this.#host.requestUpdate();
  }
}

/** `p`, or a rejection once `ms` passed without an answer. */
function bounded<T>(p: Promise<T>, ms: number): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new AppError('INTERNAL', `The inference worker did not answer within ${ms} ms.`)), ms);
  });
  return Promise.race([p, late]).finally(() => clearTimeout(timer));
}
