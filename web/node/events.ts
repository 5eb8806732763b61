/** What the node client tells the page (and anything else that subscribes). */
import type { ErrorCode, ErrorInfo, NodeId, TaskKind } from '../../shared';

export type ConnectionState = 'idle' | 'connecting' | 'connected' | 'reconnecting' | 'draining' | 'closed';

/** One finished task, as the page lists it. Small on purpose: one is kept per task in a ring. */
export interface TaskEntry {
  taskId: string;
  kind: TaskKind;
  /** Agent name for agent tasks, model for the others. */
  name: string;
  startedAt: number;
  durationMs: number;
  /** `OK` or the error code. */
  code: 'OK' | ErrorCode;
}

/** A task the node holds: running in a worker, or waiting for one. */
export interface RunningTask {
  taskId: string;
  kind: TaskKind;
  name: string;
  /** When the node received it. */
  startedAt: number;
  running: boolean;
}

/** A training run on this node (the last few are kept), as the page draws it. */
export interface TrainingCurve {
  taskId: string;
  model: string;
  adapterName: string;
  /** Optimizer steps the run takes. */
  total: number;
  /** Step numbers and their losses (at most MAX_CURVE_POINTS: past that, every other point is dropped). */
  steps: number[];
  loss: number[];
  /** Steps with a held-out loss, and those losses. */
  evalSteps: number[];
  evalLoss: number[];
  tokensPerSec: number;
  /** `running`, then `OK` or the error code. */
  state: 'running' | 'OK' | ErrorCode;
}

export type NodeEvent =
  | { type: 'state'; state: ConnectionState; attempt: number; delayMs?: number }
  | { type: 'welcome'; nodeId: NodeId; heartbeatIntervalMs: number; leaseMs: number }
  | { type: 'task.start'; task: RunningTask }
  | { type: 'task.end'; entry: TaskEntry }
  | { type: 'drain'; reason: string }
  | { type: 'train.step'; taskId: string; step: number; loss: number }
  | { type: 'error'; error: ErrorInfo };

export type NodeListener = (e: NodeEvent) => void;
