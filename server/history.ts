/**
 * The pool's recent past, for the operator page (GET /v1/pool): a bounded ring of samples taken every
 * few seconds (throughput, task latency p50/p95, queue depth, connected nodes) and a bounded list of the
 * last attempt errors. Throughput and latency come from the metrics' own window (Metrics.recent, passed in
 * with each sample); the errors from the attempts the scheduler reports ended (`Scheduler.endedListeners`).
 */
import { ERRORS, isErrorCode, type PoolError, type PoolSample, type TaskId } from '../shared';
import type { Ended, Journal } from './journal';

export interface HistoryOptions {
  /** Time between samples. Default 5000 ms. */
  sampleMs?: number;
  /** Samples kept. Default 720 (an hour at 5 s). */
  points?: number;
  /** Errors kept. Default 50. */
  errors?: number;
}

/** What a sample reads from the coordinator at the time it is taken. */
export interface HistoryGauges {
  queued: number;
  leased: number;
  nodes: number;
  /** Tasks that ended in the last HISTORY_WINDOW_S, and their latencies (ms, ascending): Metrics.recent. */
  ended: number;
  latenciesMs: readonly number[];
}

/** The window a sample's throughput and latency cover. */
export const HISTORY_WINDOW_S = 60;

interface ErrorEntry {
  code: string;
  taskId: TaskId;
  nodeId: string | null;
  at: number;
  /** Read from the journal when first shown (the task's error then); undefined until then. */
  message?: string;
  tenant?: string | null;
}

export class History {
  readonly sampleMs: number;
  readonly #points: number;
  readonly #maxErrors: number;
  readonly #samples: PoolSample[] = [];
  readonly #errors: ErrorEntry[] = [];
  readonly #byCode = new Map<string, number>();

  constructor(opts: HistoryOptions = {}) {
    this.sampleMs = Math.max(50, Math.round(opts.sampleMs ?? 5_000));
    this.#points = Math.max(2, opts.points ?? 720);
    this.#maxErrors = Math.max(1, opts.errors ?? 50);
  }

  /** One attempt ended (the scheduler calls this once its end is journaled): its error, if any, is kept. */
  ended(e: Ended, now: number): void {
    if (!e.errorCode) return;
    this.#byCode.set(e.errorCode, (this.#byCode.get(e.errorCode) ?? 0) + 1);
    this.#errors.unshift({ code: e.errorCode, taskId: e.taskId, nodeId: e.nodeId, at: now });
    if (this.#errors.length > this.#maxErrors) this.#errors.length = this.#maxErrors;
  }

  /** Takes a sample now (the coordinator's timer calls this every sampleMs). */
  sample(now: number, gauges: HistoryGauges): PoolSample {
    const point: PoolSample = {
      at: now,
      throughputPerMin: Math.round((gauges.ended * 60) / HISTORY_WINDOW_S),
      latencyP50Ms: percentile(gauges.latenciesMs, 0.5),
      latencyP95Ms: percentile(gauges.latenciesMs, 0.95),
      queued: gauges.queued,
      leased: gauges.leased,
      nodes: gauges.nodes,
    };
    this.#samples.push(point);
    if (this.#samples.length > this.#points) this.#samples.splice(0, this.#samples.length - this.#points);
    return point;
  }

  /** The samples, oldest first. */
  samples(): readonly PoolSample[] {
    return this.#samples;
  }

  /** Attempts that ended in an error since start, by code. */
  errorsByCode(): Record<string, number> {
    return Object.fromEntries(this.#byCode);
  }

  /**
   * The last errors, newest first, each with its message as the journal holds it (read once per entry);
   * with `tenant`, only that tenant's tasks.
   */
  lastErrors(journal: Journal, tenant: string | null): PoolError[] {
    const out: PoolError[] = [];
    for (const e of this.#errors) {
      if (e.message === undefined) {
        const task = journal.getTask(e.taskId);
        e.tenant = task?.tenant ?? null;
        e.message = task?.error && task.error.code === e.code ? task.error.message : isErrorCode(e.code) ? ERRORS[e.code].message : e.code;
      }
      if (tenant !== null && e.tenant !== tenant) continue;
      out.push({ code: e.code, taskId: e.taskId, nodeId: e.nodeId, message: e.message, at: e.at });
    }
    return out;
  }
}

/** The nearest-rank percentile of sorted values, null for none. */
function percentile(sorted: readonly number[], p: number): number | null {
  if (sorted.length === 0) return null;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(p * sorted.length) - 1))]!;
}
