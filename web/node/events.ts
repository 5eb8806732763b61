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

export type NodeEvent =
  | { type: 'state'; state: ConnectionState; attempt: number; delayMs?: number }
  | { type: 'welcome'; nodeId: NodeId; heartbeatIntervalMs: number; leaseMs: number }
  | { type: 'task.start'; task: RunningTask }
  | { type: 'task.end'; entry: TaskEntry }
  | { type: 'drain'; reason: string }
  | { type: 'error'; error: ErrorInfo };

export type NodeListener = (e: NodeEvent) => void;
