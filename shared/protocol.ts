/**
 * The wire contract: task schemas for the HTTP API and the messages between the
 * coordinator and browser nodes over WebSocket. One TypeBox definition gives both
 * the runtime check (server and browser) and the static type.
 *
 * Messages are a discriminated union on `type`; handlers switch on it and end in
 * `assertNever`, so a new message cannot be ignored by accident.
 */
import { Type, type Static, type TSchema } from '@sinclair/typebox';
import { Value } from '@sinclair/typebox/value';
import { AppError, type ErrorCode, type ErrorInfo } from './errors';
import type { LeaseId, NodeId, TaskId } from './ids';
import { LIMITS } from './limits';

export const PROTOCOL_VERSION = 1;

// ---------------------------------------------------------------- task specs

const Name = Type.String({ pattern: '^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$' });

// The agent payload, its checks and the agent result live in agent-payload.ts.
export * from './agent-payload';
import { AgentPayloadSchema, type AgentResult } from './agent-payload';

export const ChatMessageSchema = Type.Object(
  {
    role: Type.Union([Type.Literal('system'), Type.Literal('user'), Type.Literal('assistant')]),
    content: Type.String(),
  },
  { additionalProperties: false },
);

/** Most alternatives `logprobs` may ask for (OpenAI's `top_logprobs` cap). */
export const MAX_TOP_LOGPROBS = 20;

export const ResponseFormatSchema = Type.Union([
  Type.Object({ type: Type.Literal('text') }, { additionalProperties: false }),
  Type.Object({ type: Type.Literal('json_object') }, { additionalProperties: false }),
  Type.Object(
    {
      type: Type.Literal('json_schema'),
      /** A JSON Schema (the subset in docs/api.md: type, properties, required, items, enum, const, anyOf, min/max). */
      schema: Type.Unknown(),
      name: Type.Optional(Type.String({ maxLength: 64 })),
    },
    { additionalProperties: false },
  ),
]);
export type ResponseFormat = Static<typeof ResponseFormatSchema>;

export const GeneratePayloadSchema = Type.Object(
  {
    model: Name,
    adapter: Type.Optional(Name),
    prompt: Type.Optional(Type.String()),
    messages: Type.Optional(Type.Array(ChatMessageSchema, { minItems: 1, maxItems: 256 })),
    maxNewTokens: Type.Optional(Type.Integer({ minimum: 1, maximum: 4096 })),
    temperature: Type.Optional(Type.Number({ minimum: 0, maximum: 10 })),
    topK: Type.Optional(Type.Integer({ minimum: 0, maximum: 1000 })),
    topP: Type.Optional(Type.Number({ minimum: 0, maximum: 1 })),
    seed: Type.Optional(Type.Integer({ minimum: 0, maximum: 0xffffffff })),
    /** Stop when the text ends with one of these (the stop string is not part of the text). */
    stop: Type.Optional(Type.Array(Type.String({ minLength: 1, maxLength: 256 }), { maxItems: 16 })),
    /** Log-probabilities of each generated token, with this many alternatives (0: the chosen token only). */
    logprobs: Type.Optional(Type.Integer({ minimum: 0, maximum: MAX_TOP_LOGPROBS })),
    /** Constrained decoding: the output always parses as JSON (and validates against the schema). */
    responseFormat: Type.Optional(ResponseFormatSchema),
    /** Send tokens as `task.progress` while generating (default true). */
    stream: Type.Optional(Type.Boolean()),
  },
  { additionalProperties: false },
);

export const LoraConfigSchema = Type.Object(
  {
    rank: Type.Integer({ minimum: 1, maximum: 256 }),
    alpha: Type.Number({ exclusiveMinimum: 0 }),
    dropout: Type.Optional(Type.Number({ minimum: 0, maximum: 0.9 })),
    targetModules: Type.Array(
      Type.Union([
        Type.Literal('q_proj'), Type.Literal('k_proj'), Type.Literal('v_proj'), Type.Literal('o_proj'),
        Type.Literal('gate_proj'), Type.Literal('up_proj'), Type.Literal('down_proj'),
      ]),
      { minItems: 1, uniqueItems: true },
    ),
  },
  { additionalProperties: false },
);

export const TrainPayloadSchema = Type.Object(
  {
    model: Name,
    /** Name under which the trained adapter is stored. */
    adapterName: Name,
    /** JSON lines of `{ "messages": [...] }`, inline. */
    dataset: Type.String({ minLength: 1 }),
    lora: LoraConfigSchema,
    steps: Type.Integer({ minimum: 1, maximum: 100_000 }),
    /** Tokens per training row (default 128, at most the model's context less one). */
    seqLen: Type.Optional(Type.Integer({ minimum: 8, maximum: 8192 })),
    learningRate: Type.Optional(Type.Number({ exclusiveMinimum: 0, maximum: 1 })),
    batchSize: Type.Optional(Type.Integer({ minimum: 1, maximum: 256 })),
    gradAccumulation: Type.Optional(Type.Integer({ minimum: 1, maximum: 256 })),
    evalFraction: Type.Optional(Type.Number({ minimum: 0, maximum: 0.5 })),
    seed: Type.Optional(Type.Integer({ minimum: 0 })),
    /**
     * The node checkpoints the run (adapter and optimizer) to the coordinator every this many steps, and an attempt
     * after a lost node goes on from the last one (default: a tenth of the steps, at least 1; 0: no checkpoints).
     */
    checkpointEvery: Type.Optional(Type.Integer({ minimum: 0, maximum: 100_000 })),
  },
  { additionalProperties: false },
);

/** A train task's checkpoint interval: as given, else a tenth of its steps (at least one). */
export function checkpointInterval(p: { steps: number; checkpointEvery?: number }): number {
  return p.checkpointEvery ?? Math.max(1, Math.ceil(p.steps / 10));
}

const Common = {
  /** Higher runs first; 0..9, default 5. */
  priority: Type.Optional(Type.Integer({ minimum: 0, maximum: 9 })),
  /** Per tenant; no control characters. */
  idempotencyKey: Type.Optional(Type.String({ minLength: 1, maxLength: 200, pattern: '^[^\\u0000-\\u001f\\u007f]+$' })),
  maxAttempts: Type.Optional(Type.Integer({ minimum: 1, maximum: LIMITS.maxAttempts })),
  /** Epoch milliseconds after which the task is not started (and fails DEADLINE_EXCEEDED). */
  deadline: Type.Optional(Type.Integer({ minimum: 0 })),
  tenant: Type.Optional(Name),
  /** POSTed the final task record when it ends. */
  webhook: Type.Optional(Type.String({ pattern: '^https?://', maxLength: 2048 })),
  labels: Type.Optional(Type.Record(Type.String({ maxLength: 64 }), Type.String({ maxLength: 256 }))),
};

/** Most replicas one task may run as (replicas and maxReplicas). */
export const MAX_REPLICAS = 7;

/**
 * Untrusted nodes, BOINC's way: run the task as `replicas` copies on distinct nodes and take the output
 * `quorum` of them agree on (canonical JSON); while they disagree, add replicas one at a time up to
 * `maxReplicas`, then fail QUORUM_FAILED. Agent and generate tasks only (a generate task should be
 * deterministic: temperature 0 or a seed). docs/api.md has the defaults.
 */
const Replicated = {
  /** 1..5; default 1 (runs once). */
  replicas: Type.Optional(Type.Integer({ minimum: 1, maximum: 5 })),
  /** Matching outputs needed; default a majority of replicas; at most replicas. */
  quorum: Type.Optional(Type.Integer({ minimum: 1, maximum: 5 })),
  /** Replicas in all, the added ones included; default replicas + 2 (at most MAX_REPLICAS). */
  maxReplicas: Type.Optional(Type.Integer({ minimum: 1, maximum: MAX_REPLICAS })),
};

export const AgentTaskSpecSchema = Type.Object(
  { kind: Type.Literal('agent'), payload: AgentPayloadSchema, ...Common, ...Replicated },
  { additionalProperties: false },
);
export const GenerateTaskSpecSchema = Type.Object(
  { kind: Type.Literal('generate'), payload: GeneratePayloadSchema, ...Common, ...Replicated },
  { additionalProperties: false },
);
export const TrainTaskSpecSchema = Type.Object(
  { kind: Type.Literal('train'), payload: TrainPayloadSchema, ...Common },
  { additionalProperties: false },
);
export const TaskSpecSchema = Type.Union([AgentTaskSpecSchema, GenerateTaskSpecSchema, TrainTaskSpecSchema]);

/** `POST /v1/tasks` takes one spec or `{ tasks: [...] }`. */
export const TaskBatchSchema = Type.Object(
  { tasks: Type.Array(TaskSpecSchema, { minItems: 1 }) },
  { additionalProperties: false },
);

export type GeneratePayload = Static<typeof GeneratePayloadSchema>;
export type TrainPayload = Static<typeof TrainPayloadSchema>;
export type LoraConfig = Static<typeof LoraConfigSchema>;
export type ChatMessage = Static<typeof ChatMessageSchema>;
export type TaskSpec = Static<typeof TaskSpecSchema>;
export type TaskKind = TaskSpec['kind'];
export const TASK_KINDS: readonly TaskKind[] = ['agent', 'generate', 'train'];

// ---------------------------------------------------------------- task records

export type TaskState = 'queued' | 'leased' | 'succeeded' | 'failed' | 'dead' | 'cancelled';
export const TERMINAL_STATES: readonly TaskState[] = ['succeeded', 'failed', 'dead', 'cancelled'];

/** One generated token's log-probability, with the most likely alternatives when asked. */
export interface TokenLogprob {
  id: number;
  token: string;
  logprob: number;
  top?: { id: number; token: string; logprob: number }[];
}

/** Which implementation ran a model on a node, and on what. */
export type InferenceBackendKind = 'engine' | 'transformers';
export type InferenceDevice = 'webgpu' | 'wasm';

export interface GenerateResult {
  text: string;
  /** The generated token ids (a stop token included when one ended the text). */
  tokens: number[];
  /** `stop`: EOS or a stop string; `length`: maxNewTokens or the context's end. */
  finishReason: 'stop' | 'length';
  usage: { promptTokens: number; completionTokens: number };
  logprobs?: TokenLogprob[];
  backend: InferenceBackendKind;
  device: InferenceDevice;
  /** From the run's start on the node to its first token. */
  ttftMs: number;
  durationMs: number;
  tokensPerSec: number;
}

/** A train task's result: the run's summary and where the adapter went. */
export interface TrainResult {
  adapterName: string;
  /**
   * In the task record: the registry version the coordinator stored (`GET /v1/adapters/:base/:name@version`).
   * From the node: the PEFT files, which the coordinator takes out of the result when it stores them.
   */
  adapter: TrainedAdapterRef | TrainedAdapterFiles;
  steps: number;
  /** Loss of every optimizer step. */
  trainLoss: number[];
  trainLossBefore: number | null;
  trainLossAfter: number | null;
  evalLossBefore: number | null;
  evalLoss: number | null;
  trainTokens: number;
  tokensPerSec: number;
  durationMs: number;
  /** What became of the conversations (worker/training's DatasetReport). */
  dataset: unknown;
  warnings: string[];
  /** The step of the checkpoint this attempt went on from (an earlier attempt's node was lost); absent: from the start. */
  resumedFrom?: number;
}

export interface TrainedAdapterRef {
  /** `BASE:NAME@VERSION`, as generate's `adapter` and the OpenAI routes take `BASE:NAME`. */
  id: string;
  base: string;
  name: string;
  version: number;
}

export interface TrainedAdapterFiles {
  /** adapter_config.json. */
  config: string;
  /**
   * adapter_model.safetensors (its metadata holds the engine's fingerprint of the base it was trained on): base64,
   * or, for a file too large for one socket message, the `task.part` messages sent before the result.
   */
  safetensors: string | PartRef;
}

/** A file sent in `task.part` messages before the result that names it: its name, size and SHA-256 (hex). */
export interface PartRef {
  part: string;
  bytes: number;
  sha256: string;
}

export type TaskResult = AgentResult | GenerateResult | TrainResult;

/**
 * Why a queued task has not started: `backoff` (retrying after a failed attempt), `quota` (its tenant holds its
 * maxLeased), `no_capable_node` (no connected node can run it: kind, WebGPU, a model too large for every
 * node's memory), `circuit_open` (the nodes that could are failing and rest), `capacity` (they are busy).
 */
export const WAIT_REASONS = ['backoff', 'quota', 'no_capable_node', 'circuit_open', 'capacity'] as const;
export type WaitReason = (typeof WAIT_REASONS)[number];

/** What each wait reason means, where no more precise message is at hand. */
export const WAIT_MESSAGES: Record<WaitReason, string> = {
  backoff: 'Waiting to retry after a failed attempt.',
  quota: "Its tenant holds as many leased tasks as its quota's maxLeased allows.",
  no_capable_node: 'No connected node can run it.',
  circuit_open: 'The nodes that could run it are failing and resting (circuit open).',
  capacity: 'The nodes that can run it are busy.',
};

/** A queued task's `waiting`: why it waits, since when (ms), in words. */
export interface TaskWaiting {
  reason: WaitReason;
  since: number;
  message: string;
}

/** What `GET /v1/tasks/:id` answers. */
export interface TaskRecord {
  id: TaskId;
  kind: TaskKind;
  state: TaskState;
  priority: number;
  attempts: number;
  maxAttempts: number;
  idempotencyKey: string | null;
  tenant: string | null;
  nodeId: NodeId | null;
  createdAt: number;
  updatedAt: number;
  /** Not before this time (backoff after a failed attempt). */
  runAfter: number;
  deadline: number | null;
  payload: TaskSpec['payload'];
  result: TaskResult | null;
  error: ErrorInfo | null;
  /** W3C trace context: the task's trace and its submit span (docs/api.md "Tracing"); null for tasks journaled before traces. */
  trace: { traceId: string; spanId: string } | null;
  /** While queued: why it has not started (null in any other state). */
  waiting: TaskWaiting | null;
}

// ---------------------------------------------------------------- node capabilities

export const WebGpuInfoSchema = Type.Object({
  vendor: Type.String(),
  architecture: Type.String(),
  description: Type.String(),
  isFallbackAdapter: Type.Boolean(),
  features: Type.Array(Type.String()),
  maxBufferSize: Type.Number(),
  maxStorageBufferBindingSize: Type.Number(),
});

/** Largest `maxConcurrent` a node may advertise (workers in its pool). */
export const MAX_NODE_CONCURRENCY = 1024;
/** Largest `queueDepth` a node may advertise (agent tasks held beyond those running). */
export const MAX_QUEUE_DEPTH = 65_536;

/** Most adapters a node advertises per model. */
export const MAX_MODEL_ADAPTERS = 64;

/** Largest `inference.memoryBudgetBytes` a node may advertise (1 PiB). */
export const MAX_MEMORY_BUDGET_BYTES = 2 ** 50;

/** Largest `inference.maxSequences` a node may advertise. */
export const MAX_NODE_SEQUENCES = 256;

export const ModelCapabilitySchema = Type.Object({
  name: Type.String({ maxLength: 128 }),
  backend: Type.Union([Type.Literal('engine'), Type.Literal('transformers')]),
  device: Type.Union([Type.Literal('webgpu'), Type.Literal('wasm')]),
  /** On the GPU (or in the WASM session) now, not only in the weight store. */
  loaded: Type.Boolean(),
  /** Measured decode speed of one sequence, when the node has measured it. */
  tokensPerSec: Type.Optional(Type.Number({ minimum: 0, maximum: 1e7 })),
  /** LoRA adapters of this model loaded on the node's GPU now (the router sends their requests here first). */
  adapters: Type.Optional(Type.Array(Type.String({ maxLength: 128 }), { maxItems: MAX_MODEL_ADAPTERS })),
});
export const InferenceCapabilitiesSchema = Type.Object({
  /** generate tasks the node runs at once (continuous batching across models). */
  maxSequences: Type.Integer({ minimum: 1, maximum: MAX_NODE_SEQUENCES }),
  models: Type.Array(ModelCapabilitySchema, { maxItems: 256 }),
  /**
   * Bytes of GPU memory the node's inference runtime keeps to (models, caches, a training run): the router
   * sends it no model whose weights need more (server/scheduler.ts needOf). Absent: not bounded here.
   */
  memoryBudgetBytes: Type.Optional(Type.Integer({ minimum: 0, maximum: MAX_MEMORY_BUDGET_BYTES })),
});
export type ModelCapability = Static<typeof ModelCapabilitySchema>;
export type InferenceCapabilities = Static<typeof InferenceCapabilitiesSchema>;

export const CapabilitiesSchema = Type.Object({
  kinds: Type.Array(Type.Union([Type.Literal('agent'), Type.Literal('generate'), Type.Literal('train')])),
  /** Agent runs the node takes at once (its worker pool size). */
  maxConcurrent: Type.Integer({ minimum: 1, maximum: MAX_NODE_CONCURRENCY }),
  /**
   * Agent tasks the node is willing to hold beyond those running, queued on the node
   * so its workers never wait for the next assignment. The coordinator leases it at
   * most `maxConcurrent + queueDepth` agent tasks; without it, `maxConcurrent ×
   * (prefetch − 1)`. Never applies to generate/train (at most `maxConcurrent`).
   */
  queueDepth: Type.Optional(Type.Integer({ minimum: 0, maximum: MAX_QUEUE_DEPTH })),
  webgpu: Type.Union([WebGpuInfoSchema, Type.Null()]),
  /** Models whose weights are in the node's store. */
  models: Type.Array(Type.String()),
  /** Text generation: sequences the node decodes at once, and per model the backend and device it uses. */
  inference: Type.Optional(InferenceCapabilitiesSchema),
  adapters: Type.Array(Type.String()),
  /** Module hashes the node has compiled. */
  modules: Type.Optional(Type.Array(Type.String())),
  /**
   * The node runs agents that call its model (agent_model imports): it has JavaScript Promise Integration
   * (WebAssembly.Suspending) and the inference runtime. Absent: false.
   */
  jspi: Type.Optional(Type.Boolean()),
  userAgent: Type.Optional(Type.String()),
});
export type Capabilities = Static<typeof CapabilitiesSchema>;
export type WebGpuInfo = Static<typeof WebGpuInfoSchema>;

/**
 * Largest value the coordinator takes for each figure a node reports (heartbeat metrics, and the
 * timings in its task results). A value that is not finite, negative or above its bound is dropped
 * (not exported, counted in `coordinator_node_metrics_rejected_total`); the rest of the message
 * stands, so one bad gauge costs the node that gauge, not its heartbeat and leases.
 */
export const NODE_METRIC_BOUNDS = {
  running: 1_048_576,
  workers: 65_536,
  tasksDone: Number.MAX_SAFE_INTEGER,
  tasksFailed: Number.MAX_SAFE_INTEGER,
  /** Milliseconds (one hour). */
  spawnP50Ms: 3.6e6,
  spawnP99Ms: 3.6e6,
  /** Bytes (1 PiB). */
  memoryBytes: 2 ** 50,
  agentMemoryBytes: 2 ** 50,
  gpuMemoryBytes: 2 ** 50,
  tokensPerSec: 1e7,
} as const satisfies Record<string, number>;

/** Bounds on the timings a task result carries (agent `spawnMs`, generate `ttftMs` and `tokensPerSec`), checked the same way. */
export const RESULT_METRIC_BOUNDS = { spawnMs: 3.6e6, ttftMs: 3.6e6, tokensPerSec: 1e7 } as const;

export const NodeMetricsSchema = Type.Object({
  running: Type.Integer({ minimum: 0 }),
  workers: Type.Integer({ minimum: 0 }),
  tasksDone: Type.Integer({ minimum: 0 }),
  tasksFailed: Type.Integer({ minimum: 0 }),
  // Magnitudes are checked value by value against NODE_METRIC_BOUNDS where the coordinator takes them.
  spawnP50Ms: Type.Optional(Type.Number()),
  spawnP99Ms: Type.Optional(Type.Number()),
  memoryBytes: Type.Optional(Type.Number()),
  /** Memory one agent run used (median of the node's recent runs' linear memory). */
  agentMemoryBytes: Type.Optional(Type.Number()),
  gpuMemoryBytes: Type.Optional(Type.Number()),
  tokensPerSec: Type.Optional(Type.Number()),
});
export type NodeMetrics = Static<typeof NodeMetricsSchema>;

// ---------------------------------------------------------------- messages: node → coordinator

const ErrorInfoSchema = Type.Object({
  code: Type.String(),
  name: Type.String(),
  message: Type.String(),
  stack: Type.Optional(Type.String()),
  details: Type.Optional(Type.Record(Type.String(), Type.Unknown())),
});

const Id = Type.String({ minLength: 1, maxLength: 64 });

export const HelloSchema = Type.Object({
  type: Type.Literal('hello'),
  protocol: Type.Literal(PROTOCOL_VERSION),
  /** Set when reconnecting, so the coordinator keeps the node's leases; honoured only with its `secret`. */
  nodeId: Type.Optional(Id),
  /** The resume secret the coordinator sent in `welcome` for `nodeId`; without the right one the node gets a new id. */
  secret: Type.Optional(Type.String({ maxLength: 128 })),
  /** Join token (a bearer token with the `node` role) when the coordinator runs with --auth; browsers cannot set headers on a WebSocket. */
  token: Type.Optional(Type.String({ maxLength: 4096 })),
  name: Type.String({ maxLength: 128 }),
  capabilities: CapabilitiesSchema,
});

export const HeartbeatSchema = Type.Object({
  type: Type.Literal('heartbeat'),
  /** Leases the node still holds; each is renewed. */
  leases: Type.Array(Id),
  metrics: NodeMetricsSchema,
  capabilities: Type.Optional(CapabilitiesSchema),
});

const TokenAltSchema = Type.Object({ id: Type.Integer({ minimum: 0 }), token: Type.String({ maxLength: 1024 }), logprob: Type.Number() });
const TokenLogprobSchema = Type.Object({
  id: Type.Integer({ minimum: 0 }),
  token: Type.String({ maxLength: 1024 }),
  logprob: Type.Number(),
  top: Type.Optional(Type.Array(TokenAltSchema, { maxItems: MAX_TOP_LOGPROBS })),
});

export const ProgressSchema = Type.Object({
  type: Type.Literal('task.progress'),
  taskId: Id,
  leaseId: Id,
  progress: Type.Union([
    Type.Object({
      kind: Type.Literal('tokens'),
      /** The text added since the last progress message (held back while it may be the start of a stop string). */
      text: Type.String(),
      /** Tokens generated so far. */
      tokens: Type.Integer({ minimum: 0 }),
      /** The ids added since the last progress message. */
      ids: Type.Optional(Type.Array(Type.Integer({ minimum: 0 }), { maxItems: 4096 })),
      logprobs: Type.Optional(Type.Array(TokenLogprobSchema, { maxItems: 4096 })),
    }),
    Type.Object({ kind: Type.Literal('download'), model: Type.String({ maxLength: 128 }), loadedBytes: Type.Integer({ minimum: 0 }), totalBytes: Type.Integer({ minimum: 0 }) }),
    Type.Object({
      kind: Type.Literal('loss'),
      step: Type.Integer({ minimum: 0 }),
      total: Type.Optional(Type.Integer({ minimum: 0 })),
      loss: Type.Number(),
      evalLoss: Type.Optional(Type.Number()),
      tokensPerSec: Type.Optional(Type.Number({ minimum: 0 })),
    }),
    Type.Object({ kind: Type.Literal('log'), line: Type.String() }),
    /** A training checkpoint after `step`, sent before it in task.part messages named checkpoint.safetensors. */
    Type.Object({ kind: Type.Literal('checkpoint'), step: Type.Integer({ minimum: 1 }), bytes: Type.Integer({ minimum: 1 }), sha256: Type.String({ pattern: '^[0-9a-f]{64}$' }) }),
  ]),
});

/** Most node spans one result may carry, and the longest span name (the coordinator drops the rest: server/tracing.ts). */
export const MAX_NODE_SPANS = 16;
export const MAX_NODE_SPAN_NAME = 64;

/**
 * A worker phase the node measured for a task it was assigned with a `traceparent`: milliseconds since
 * the node took the assignment. The coordinator checks each one (see MAX_NODE_SPANS) and records it as a
 * child of the attempt's span.
 */
export interface NodeSpan {
  name: string;
  startMs: number;
  endMs: number;
  attributes?: Record<string, string | number | boolean>;
}

// `spans` is checked span by span where it is recorded (a bad span is dropped, not the result).
export const ResultItemSchema = Type.Union([
  Type.Object({ taskId: Id, leaseId: Id, ok: Type.Literal(true), result: Type.Unknown(), spans: Type.Optional(Type.Unknown()) }),
  Type.Object({ taskId: Id, leaseId: Id, ok: Type.Literal(false), error: ErrorInfoSchema, spans: Type.Optional(Type.Unknown()) }),
]);

/** Results travel in batches: one socket message can end many tasks. */
export const ResultSchema = Type.Object({
  type: Type.Literal('task.result'),
  results: Type.Array(ResultItemSchema, { minItems: 1, maxItems: 4096 }),
});

/** Raw bytes one `task.part` carries (base64 in the message: 4/3 of this, below the socket limit). */
export const PART_BYTES = 4 << 20;

/**
 * One piece of a result file too large for a socket message (a train result's adapter_model.safetensors), sent
 * in order before the result, on the connection that holds the lease; the result names the file (PartRef).
 */
export const PartSchema = Type.Object({
  type: Type.Literal('task.part'),
  taskId: Id,
  leaseId: Id,
  name: Type.Union([Type.Literal('adapter_model.safetensors'), Type.Literal('checkpoint.safetensors')]),
  /** Bytes of the whole file: the same in every part. */
  total: Type.Integer({ minimum: 1, maximum: LIMITS.maxResultPartsBytes }),
  /** Where this part's bytes begin: the bytes sent so far. */
  offset: Type.Integer({ minimum: 0, maximum: LIMITS.maxResultPartsBytes }),
  data: Type.String({ minLength: 1, maxLength: Math.ceil(PART_BYTES / 3) * 4 }),
});

export const NodeMessageSchema = Type.Union([HelloSchema, HeartbeatSchema, ProgressSchema, ResultSchema, PartSchema]);
export type PartMessage = Static<typeof PartSchema>;
export type HelloMessage = Static<typeof HelloSchema>;
export type HeartbeatMessage = Static<typeof HeartbeatSchema>;
export type ProgressMessage = Static<typeof ProgressSchema>;
export type ResultMessage = Static<typeof ResultSchema>;
export type NodeMessage = Static<typeof NodeMessageSchema>;
export type ResultItem = {
  taskId: TaskId;
  leaseId: LeaseId;
  /** Worker phases, when the assignment carried a traceparent. */
  spans?: NodeSpan[];
} & ({ ok: true; result: TaskResult } | { ok: false; error: ErrorInfo });

// ---------------------------------------------------------------- messages: coordinator → node

export interface Assignment {
  taskId: TaskId;
  leaseId: LeaseId;
  attempt: number;
  kind: TaskKind;
  payload: TaskSpec['payload'];
  /** For agent tasks: the module to run, fetched from `/v1/modules/:sha256` and cached by hash. */
  module?: { sha256: string; size: number };
  /** Epoch ms; the node should give up after this. */
  deadline: number | null;
  /** W3C trace context of the attempt, when the coordinator records traces: the node may send back `spans` in its result. */
  traceparent?: string;
  /** A train task's latest checkpoint (an earlier attempt's): fetch `/v1/tasks/:id/checkpoint` and go on from it. */
  checkpoint?: { step: number; sha256: string; bytes: number };
}

export type CoordinatorMessage =
  /** `secret` (32 random bytes, base64url) resumes `nodeId` in a later hello; keep it in memory only. */
  | { type: 'welcome'; nodeId: NodeId; secret: string; heartbeatIntervalMs: number; leaseMs: number; serverTime: number }
  | { type: 'task.assign'; tasks: Assignment[] }
  | { type: 'task.cancel'; taskId: TaskId; reason: string }
  | { type: 'drain'; reason: string }
  | { type: 'error'; error: ErrorInfo };

// ---------------------------------------------------------------- helpers

export function assertNever(x: never, what = 'value'): never {
  throw new AppError('PROTOCOL_ERROR', `Unexpected ${what}: ${JSON.stringify(x)?.slice(0, 200)}`);
}

/**
 * Checks `value` against `schema`; throws AppError with `code` and the first
 * few violations (path and message) in `details.errors`.
 */
export function check<S extends TSchema>(schema: S, value: unknown, code: ErrorCode = 'SCHEMA_VIOLATION'): Static<S> {
  if (Value.Check(schema, value)) return value as Static<S>;
  const errors = [...Value.Errors(schema, value)].slice(0, 5).map((e) => ({ path: e.path || '/', message: e.message }));
  const first = errors[0];
  throw new AppError(code, first ? `${first.path}: ${first.message}` : 'Value does not match the schema.', { errors });
}

/** Parses and checks one socket message from a node. */
export function parseNodeMessage(raw: string): NodeMessage {
  let value: unknown;
  try {
    value = JSON.parse(raw);
  } catch {
    throw new AppError('PROTOCOL_ERROR', 'A node message was not JSON.');
  }
  return check(NodeMessageSchema, value, 'PROTOCOL_ERROR');
}
