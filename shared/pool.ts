/**
 * The operator's view of the pool (`GET /v1/pool`) and of the caller's own token (`GET /v1/whoami`):
 * what the coordinator answers and the operator page (web/ops/) reads. TypeBox, so the OpenAPI
 * document can show the same shapes.
 */
import { Type, type Static } from '@sinclair/typebox';

/** What a node is doing, the first that holds: disconnected, draining, circuit open, excluded by reputation, unhealthy (heartbeats late), healthy. */
export const POOL_NODE_STATES = ['disconnected', 'draining', 'circuit-open', 'excluded', 'unhealthy', 'healthy'] as const;
export type PoolNodeState = (typeof POOL_NODE_STATES)[number];

export const PoolNodeSchema = Type.Object({
  id: Type.String(),
  name: Type.String(),
  state: Type.Union(POOL_NODE_STATES.map((s) => Type.Literal(s))),
  draining: Type.Boolean(),
  /** Leases held ÷ maxConcurrent (above 1 when tasks wait queued on the node). */
  load: Type.Number(),
  held: Type.Integer(),
  maxConcurrent: Type.Integer(),
  circuit: Type.Object({ state: Type.Union([Type.Literal('closed'), Type.Literal('open'), Type.Literal('half-open')]), consecutiveFailures: Type.Integer(), opens: Type.Integer() }),
  reputation: Type.Object({ score: Type.Number(), excluded: Type.Boolean() }),
  tasksDone: Type.Integer(),
  tasksFailed: Type.Integer(),
  lastSeen: Type.Number(),
});
export type PoolNode = Static<typeof PoolNodeSchema>;

/** One sample of the coordinator's history ring (taken every few seconds). */
export const PoolSampleSchema = Type.Object({
  at: Type.Number(),
  /** Tasks that ended (succeeded, failed, dead, cancelled) in the minute before `at`. */
  throughputPerMin: Type.Number(),
  /** Submit → end, over the tasks that ended in that minute; null when none did. */
  latencyP50Ms: Type.Union([Type.Number(), Type.Null()]),
  latencyP95Ms: Type.Union([Type.Number(), Type.Null()]),
  queued: Type.Integer(),
  leased: Type.Integer(),
  nodes: Type.Integer(),
});
export type PoolSample = Static<typeof PoolSampleSchema>;

/** An attempt that ended in an error (retried or not). */
export const PoolErrorSchema = Type.Object({
  code: Type.String(),
  taskId: Type.String(),
  nodeId: Type.Union([Type.String(), Type.Null()]),
  message: Type.String(),
  at: Type.Number(),
});
export type PoolError = Static<typeof PoolErrorSchema>;

export const PoolViewSchema = Type.Object({
  at: Type.Number(),
  nodes: Type.Array(PoolNodeSchema),
  queue: Type.Object({
    /** Tasks in the journal by state. */
    byState: Type.Record(Type.String(), Type.Integer()),
    /** Queued tasks by priority, highest first. */
    queuedByPriority: Type.Array(Type.Object({ priority: Type.Integer(), count: Type.Integer() })),
  }),
  /** Oldest first; `sampleMs` apart. */
  history: Type.Array(PoolSampleSchema),
  sampleMs: Type.Integer(),
  /** Newest first. A tenant-bound token sees its own tenant's tasks only. */
  lastErrors: Type.Array(PoolErrorSchema),
  /** Attempts that ended in an error since the coordinator started, by code. */
  errorsByCode: Type.Record(Type.String(), Type.Integer()),
});
export type PoolView = Static<typeof PoolViewSchema>;

export const WhoamiSchema = Type.Object({
  /** False when no token or an unknown one was sent (roles is then empty). */
  authenticated: Type.Boolean(),
  /** Non-secret token id (`tok-…`), `open` when the coordinator runs without --auth. */
  id: Type.String(),
  roles: Type.Array(Type.String()),
  tenant: Type.Union([Type.String(), Type.Null()]),
});
export type Whoami = Static<typeof WhoamiSchema>;
