/**
 * The seam between the node's connection and its runtimes: the connection accepts a lease and
 * hands it to the runner for the task's kind; the runner runs it in its runtime and reports back
 * through the host exactly once (`finish`), with progress on the way.
 */
import { MAX_NODE_SPANS, type Assignment, type ErrorInfo, type LeaseId, type NodeSpan, type PartMessage, type ProgressMessage, type TaskKind, type TaskResult } from '../../shared';
import type { RunningTask } from './events';

/** A lease the node holds, as the connection and the runners share it. */
export interface Lease extends RunningTask {
  leaseId: LeaseId;
  /** Set when the coordinator cancelled the task (the reason). */
  cancelled: string | null;
  /** Set once the lease was finished (its result queued for the coordinator). */
  ended: boolean;
  /**
   * Set when the assignment carried a `traceparent`: `t0` is performance.now() when the node took it, and
   * `spans` the phases measured since (sent back in the result).
   */
  trace?: { t0: number; spans: NodeSpan[] };
}

/** Records a phase of a traced lease, from two performance.now() readings. */
export function addSpan(lease: Lease, name: string, start: number, end: number, attributes?: Record<string, number>): void {
  const t = lease.trace;
  if (!t || t.spans.length >= MAX_NODE_SPANS || !(end >= start)) return;
  t.spans.push({ name, startMs: Math.max(0, start - t.t0), endMs: Math.max(0, end - t.t0), ...(attributes ? { attributes } : {}) });
}

/** How a run ended. Failures carry the wire error (with details such as stderr for agents). */
export type RunOutcome = { ok: true; result: TaskResult; durationMs: number } | { ok: false; error: ErrorInfo };

export interface RunnerHost {
  /** Ends the lease (once; later calls for the same lease are ignored). */
  finish(lease: Lease, outcome: RunOutcome): void;
  /** Sends progress for a lease the node still holds. */
  progress(lease: Lease, progress: ProgressMessage['progress']): void;
  /** Sends one piece of a result file too large for the result message (task.part); false: not sent (lease ended, socket closed). */
  part(lease: Lease, part: Pick<PartMessage, 'name' | 'total' | 'offset' | 'data'>): boolean;
  /** The runner's advertised capabilities changed (models loaded, say): send them soon. */
  capabilitiesChanged(): void;
}

export interface TaskRunner {
  readonly kind: TaskKind;
  /** Starts a lease of this runner's kind (deadline and draining were checked by the connection). */
  start(a: Assignment, lease: Lease): void;
  /** The coordinator cancelled the lease: stop it; the runner still calls finish (CANCELLED). */
  cancel(lease: Lease): void;
  /** Runs in progress now (not waiting). */
  readonly running: number;
  /** Leases waiting inside the runner (for a worker, a module, a batch slot). */
  readonly waiting: number;
}
