/**
 * The OpenAPI 3.1 document of the coordinator's HTTP API, built from the same TypeBox schema objects the
 * routes validate with (request bodies, queries), so the document cannot drift from the checks. One table,
 * OPERATIONS, from `METHOD /route/:pattern` (the keys of server/access.ts's ACCESS) to what the document
 * says of it; roles come from ACCESS itself. Response schemas (the routes do not validate their answers)
 * are written here in TypeBox and checked against live answers by server/openapi.test.ts.
 *
 * Shared schemas go under components/schemas: any subschema whose JSON equals a named component is
 * written as a `$ref` to it (TypeBox's Optional() clones a schema, so identity would miss them).
 */
import { Type, type TSchema } from '@sinclair/typebox';
import {
  AgentLimitsSchema,
  AgentPayloadSchema,
  AgentTaskSpecSchema,
  CapabilitiesSchema,
  ERRORS,
  ERROR_CODES,
  GeneratePayloadSchema,
  GenerateTaskSpecSchema,
  LIMITS,
  LoraConfigSchema,
  NAME_PATTERN,
  NodeMessageSchema,
  NodeMetricsSchema,
  PoolViewSchema,
  ResponseFormatSchema,
  TaskBatchSchema,
  TaskSpecSchema,
  TrainPayloadSchema,
  TrainTaskSpecSchema,
  WAIT_REASONS,
  WhoamiSchema,
  type ErrorCode,
} from '../shared';
import { ACCESS, type Access } from './access';
import { MaintenanceSchema } from './maintenance';
import { ChatCompletionRequestSchema, CompletionRequestSchema } from './openai/schemas';
import { UploadSchema } from './routes/adapters';
import {
  AgentConfigSchema,
  CapsSchema,
  NodeListQuerySchema,
  QuotaSchema,
  ReasonSchema,
  TaskListQuerySchema,
  VerdictSchema,
  WaitQuerySchema,
} from './validate';

// ---------------------------------------------------------------- path parameters

const UUID_PATTERN = '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$';
const SHA256_PATTERN = '^[0-9a-f]{64}$';
const TaskId = Type.String({ pattern: UUID_PATTERN, description: 'A task id (UUID) as the submit answered it.' });
const NodeId = Type.String({ pattern: UUID_PATTERN, description: 'A node id (UUID) from GET /v1/nodes.' });
const Name = Type.String({ pattern: NAME_PATTERN });
const Rest = Type.String({ description: 'The rest of the path (may hold `/`).' });
const Params = {
  id: Type.Object({ id: TaskId }),
  node: Type.Object({ id: NodeId }),
  name: Type.Object({ name: Name }),
};

// ---------------------------------------------------------------- answers

const Nullable = <S extends TSchema>(s: S) => Type.Union([s, Type.Null()]);
const Int = Type.Integer();

export const ErrorInfoSchema = Type.Object(
  {
    code: Type.String(),
    name: Type.String(),
    message: Type.String(),
    stack: Type.Optional(Type.String()),
    details: Type.Optional(Type.Record(Type.String(), Type.Unknown())),
  },
  { description: 'An error as a task record or a node carries it (serializeError).' },
);

/** Every error answer of the project's routes: `{ error: { code, message, details? } }` (server/http.ts errorBody). */
export const ErrorBodySchema = Type.Object(
  {
    error: Type.Object(
      {
        code: Type.Union(ERROR_CODES.map((c) => Type.Literal(c)), { description: 'A stable code from shared/errors.ts (docs/errors.md).' }),
        message: Type.String({ description: 'What went wrong and what to do.' }),
        details: Type.Optional(Type.Record(Type.String(), Type.Unknown())),
      },
      { additionalProperties: false },
    ),
  },
  { additionalProperties: false },
);

/** The OpenAI-compatible routes' error shape (server/openai/errors.ts). */
export const OpenAiErrorBodySchema = Type.Object({
  error: Type.Object({
    message: Type.String(),
    type: Type.Union([Type.Literal('invalid_request_error'), Type.Literal('rate_limit_error'), Type.Literal('server_error')]),
    param: Nullable(Type.String()),
    code: Type.String({ description: "The project's code in lower case (model_not_found, schema_violation, …)." }),
  }),
});

export const TaskRecordSchema = Type.Object(
  {
    id: TaskId,
    kind: Type.Union([Type.Literal('agent'), Type.Literal('generate'), Type.Literal('train')]),
    state: Type.Union(['queued', 'leased', 'succeeded', 'failed', 'dead', 'cancelled'].map((s) => Type.Literal(s))),
    priority: Int,
    attempts: Int,
    maxAttempts: Int,
    idempotencyKey: Nullable(Type.String()),
    tenant: Nullable(Type.String()),
    nodeId: Nullable(Type.String()),
    createdAt: Int,
    updatedAt: Int,
    runAfter: Int,
    deadline: Nullable(Int),
    payload: Type.Union([AgentPayloadSchema, GeneratePayloadSchema, TrainPayloadSchema]),
    result: Type.Unknown({ description: 'null until it succeeded: an agent, generate or train result (docs/api.md).' }),
    error: Nullable(ErrorInfoSchema),
    moduleHash: Nullable(Type.String()),
    labels: Nullable(Type.Record(Type.String(), Type.String())),
    webhook: Nullable(Type.String()),
    finishedAt: Nullable(Int),
    verdict: Nullable(Type.Object({ verdict: Type.Union([Type.Literal('pass'), Type.Literal('fail')]), reason: Nullable(Type.String()) })),
    waiting: Nullable(
      Type.Object(
        { reason: Type.Union(WAIT_REASONS.map((r) => Type.Literal(r))), since: Int, message: Type.String() },
        { description: 'While queued: why it has not started (docs/api.md "Scheduling").' },
      ),
    ),
    replication: Nullable(
      Type.Object({ replicas: Int, quorum: Int, maxReplicas: Int, spotCheck: Type.Optional(Type.Boolean()) }),
    ),
    replicas: Type.Optional(
      Type.Array(
        Type.Object({
          replica: Int,
          state: Type.String(),
          nodeId: Nullable(Type.String()),
          attempts: Int,
          digest: Nullable(Type.String()),
          agreed: Nullable(Type.Boolean()),
          result: Type.Unknown(),
          error: Nullable(ErrorInfoSchema),
        }),
      ),
    ),
    trace: Nullable(
      Type.Object({
        traceId: Type.String({ pattern: '^[0-9a-f]{32}$' }),
        spanId: Type.String({ pattern: '^[0-9a-f]{16}$', description: "The task's submit span (docs/api.md \"Tracing\")." }),
      }),
    ),
  },
  { description: 'A task as the journal holds it (TaskRecord in shared/protocol.ts plus the coordinator fields).' },
);

/** The optional W3C trace context header of the routes that submit tasks (docs/api.md "Tracing"). */
const TraceparentHeaderSchema = Type.Object({
  traceparent: Type.Optional(
    Type.String({
      description: "W3C trace context (`00-<trace id>-<span id>-<flags>`): the tasks continue the caller's trace. A malformed one is ignored (a fresh trace starts), never an error.",
      examples: ['00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01'],
    }),
  ),
});

const SubmittedSchema = Type.Union([
  Type.Object({ id: TaskId }, { additionalProperties: false }),
  Type.Object({ ids: Type.Array(TaskId) }, { additionalProperties: false }),
]);

export const NodeViewSchema = Type.Object({
  id: NodeId,
  name: Type.String(),
  connected: Type.Boolean(),
  healthy: Type.Boolean(),
  draining: Type.Boolean(),
  connectedAt: Type.Number(),
  lastSeen: Type.Number(),
  capabilities: CapabilitiesSchema,
  workers: Int,
  queueDepth: Int,
  window: Int,
  caps: Type.Object({ leaseCap: Int, maxLeases: Nullable(Int) }),
  held: Int,
  running: Int,
  queued: Int,
  load: Type.Number({ minimum: 0, maximum: 1 }),
  metrics: Nullable(NodeMetricsSchema),
  circuit: Type.Object({ state: Type.String(), consecutiveFailures: Int, opens: Int }),
  reputation: Type.Object({ agreed: Int, outvoted: Int, pass: Int, fail: Int, score: Type.Number(), excluded: Type.Boolean() }),
  tasksDone: Int,
  tasksFailed: Int,
});

export const AgentVersionSchema = Type.Object({
  verdicts: Type.Object({ pass: Int, fail: Int }),
  name: Name,
  version: Name,
  sha256: Type.String({ pattern: SHA256_PATTERN }),
  size: Int,
  config: AgentConfigSchema,
  createdAt: Int,
  moduleUrl: Type.String(),
});
export const AgentSchema = Type.Object({ name: Name, latest: Nullable(Type.String()), versions: Type.Array(AgentVersionSchema) });

const KpiSchema = Type.Object({ value: Nullable(Type.Number()), target: Type.String(), unit: Type.String(), pass: Nullable(Type.Boolean()) });
const QuotaViewSchema = Type.Object({ maxQueued: Nullable(Int), agentLimits: Nullable(AgentLimitsSchema), weight: Nullable(Type.Number()), maxLeased: Nullable(Int) });

export const AdapterVersionSchema = Type.Object({
  base: Type.String(),
  name: Type.String(),
  version: Int,
  sha256: Type.String(),
  size: Int,
  createdAt: Int,
  files: Type.Array(Type.Object({ path: Type.String(), url: Type.String() })),
});
export const AdapterSchema = Type.Object({ id: Type.String(), base: Type.String(), name: Type.String(), latest: Int, versions: Type.Array(AdapterVersionSchema) });

export const DatasetSchema = Type.Object({
  id: Type.String({ pattern: '^sha256:[0-9a-f]{64}$' }),
  sha256: Type.String({ pattern: SHA256_PATTERN }),
  bytes: Int,
  conversations: Int,
  createdAt: Int,
  contentUrl: Type.String(),
});

export const BlobSchema = Type.Object({
  blob: Type.String({ pattern: '^sha256:[0-9a-f]{64}$' }),
  sha256: Type.String({ pattern: SHA256_PATTERN }),
  bytes: Int,
  createdAt: Int,
  url: Type.String(),
});

export const ModelObjectSchema = Type.Object({
  id: Type.String(),
  object: Type.Literal('model'),
  created: Int,
  owned_by: Type.Literal('exec-node'),
  served: Type.Boolean(),
  nodes: Type.Array(
    Type.Object({
      nodeId: Type.String(),
      nodeName: Type.String(),
      loaded: Type.Boolean(),
      backend: Nullable(Type.String()),
      device: Nullable(Type.String()),
      tokensPerSec: Nullable(Type.Number()),
    }),
  ),
  parent: Type.Optional(Type.String()),
});

const ManifestSchema = Type.Object({
  name: Type.String(),
  files: Type.Array(Type.Object({ path: Type.String(), size: Int, sha256: Type.String() })),
  totalBytes: Int,
});

const Usage = Type.Object({ prompt_tokens: Int, completion_tokens: Int, total_tokens: Int });
const ChatCompletionSchema = Type.Object({
  id: Type.String(),
  object: Type.Literal('chat.completion'),
  created: Int,
  model: Type.String(),
  choices: Type.Array(
    Type.Object({
      index: Int,
      message: Type.Object({ role: Type.Literal('assistant'), content: Nullable(Type.String()) }),
      finish_reason: Type.String(),
    }),
  ),
  usage: Usage,
});
const TextCompletionSchema = Type.Object({
  id: Type.String(),
  object: Type.Literal('text_completion'),
  created: Int,
  model: Type.String(),
  choices: Type.Array(Type.Object({ index: Int, text: Type.String(), finish_reason: Type.String() })),
  usage: Usage,
});

const MaintenanceStateSchema = Type.Object({
  on: Type.Boolean(),
  reason: Nullable(Type.String()),
  since: Type.Number({ description: 'When the current state began (ms since the epoch).' }),
});

/** Named schemas: written once under components/schemas, referenced by `$ref` wherever they appear. */
export const COMPONENTS: Readonly<Record<string, TSchema>> = {
  Error: ErrorBodySchema,
  OpenAiError: OpenAiErrorBodySchema,
  ErrorInfo: ErrorInfoSchema,
  TaskSpec: TaskSpecSchema,
  AgentTaskSpec: AgentTaskSpecSchema,
  GenerateTaskSpec: GenerateTaskSpecSchema,
  TrainTaskSpec: TrainTaskSpecSchema,
  TaskBatch: TaskBatchSchema,
  AgentPayload: AgentPayloadSchema,
  GeneratePayload: GeneratePayloadSchema,
  TrainPayload: TrainPayloadSchema,
  AgentLimits: AgentLimitsSchema,
  LoraConfig: LoraConfigSchema,
  ResponseFormat: ResponseFormatSchema,
  TaskRecord: TaskRecordSchema,
  Capabilities: CapabilitiesSchema,
  NodeMetrics: NodeMetricsSchema,
  NodeView: NodeViewSchema,
  NodeMessage: NodeMessageSchema,
  AgentConfig: AgentConfigSchema,
  AgentVersion: AgentVersionSchema,
  Agent: AgentSchema,
  AdapterVersion: AdapterVersionSchema,
  Adapter: AdapterSchema,
  Dataset: DatasetSchema,
  Model: ModelObjectSchema,
  Kpi: KpiSchema,
  Quota: QuotaViewSchema,
  PoolView: PoolViewSchema,
  Maintenance: MaintenanceStateSchema,
};

// ---------------------------------------------------------------- the table

export interface Body {
  /** Media types the route reads. */
  types: readonly string[];
  /** The JSON form's schema (absent: bytes, described in `description`). */
  schema?: TSchema;
  description?: string;
  required?: boolean;
  example?: unknown;
}

export interface Answer {
  description: string;
  /** Default application/json. */
  type?: string;
  schema?: TSchema;
  example?: unknown;
}

export interface Operation {
  summary: string;
  tag: string;
  description?: string;
  params?: TSchema;
  query?: TSchema;
  /** Request headers the route reads (an object schema, one property per header). */
  headers?: TSchema;
  body?: Body;
  /** The main success answer(s), by status. */
  ok: Readonly<Record<number, Answer>>;
  /** Codes this route answers beyond the shared ones (auth, body, INTERNAL). */
  errors?: readonly ErrorCode[];
  /** Errors in OpenAI's shape (the OpenAI-compatible routes). */
  openAiErrors?: true;
}

const JSON_TYPE = ['application/json'];
const bytes = (type: string, description: string): Answer => ({ description, type, schema: Type.String({ contentMediaType: type }) });

const TASK_EXAMPLE = {
  id: '0b7c1c5e-2f4a-4d8e-9a61-3c2b1d0e9f87',
  kind: 'agent',
  state: 'succeeded',
  priority: 5,
  attempts: 1,
  maxAttempts: 3,
  idempotencyKey: null,
  tenant: null,
  nodeId: '5d7e0a41-8c3b-4f29-b6d1-2e9a7c4f0b13',
  createdAt: 1767225600000,
  updatedAt: 1767225600042,
  runAfter: 1767225600000,
  deadline: null,
  payload: { agent: 'hello', version: '1.0.0', input: { name: 'world' }, limits: { memoryMB: 64, fuel: 1000000000, timeoutMs: 30000, maxStdoutBytes: 1048576, maxStderrBytes: 65536 } },
  result: { exitCode: 0, output: { greeting: 'hello, world' }, stderr: '', fuelUsed: 12345, durationMs: 3, memoryBytes: 131072 },
  error: null,
  moduleHash: 'a3f1c0d4e5b6978812345678901234567890abcdef1234567890abcdef123456',
  labels: null,
  webhook: null,
  finishedAt: 1767225600042,
  verdict: null,
  replication: null,
  trace: { traceId: '4bf92f3577b34da6a3ce929d0e0e4736', spanId: '7d3c9a0b5e1f2468' },
  waiting: null,
};

/** `METHOD /route` → what the document says of it. Every registered route has an entry (server/openapi.test.ts). */
export const OPERATIONS: Readonly<Record<string, Operation>> = {
  // ---- tasks
  'POST /v1/tasks': {
    tag: 'Tasks',
    summary: 'Submit one task or a batch',
    description: `One task spec, or \`{ "tasks": [spec, …] }\` with at most ${LIMITS.maxBatch} specs, journaled in one transaction before the answer.`,
    headers: TraceparentHeaderSchema,
    body: {
      types: JSON_TYPE,
      schema: Type.Union([TaskSpecSchema, TaskBatchSchema]),
      required: true,
      example: { kind: 'agent', payload: { agent: 'hello', input: { name: 'world' } }, priority: 5, idempotencyKey: 'order-7' },
    },
    ok: {
      202: { description: 'Accepted: queued (`{ id }`, or `{ ids }` for a batch, in order).', schema: SubmittedSchema, example: { id: TASK_EXAMPLE.id } },
      200: { description: 'Every task already existed under its idempotency key with the same spec.', schema: SubmittedSchema },
    },
    errors: ['SCHEMA_VIOLATION', 'BATCH_TOO_LARGE', 'AGENT_NOT_FOUND', 'AGENT_VERSION_NOT_FOUND', 'IDEMPOTENCY_CONFLICT', 'MODEL_NOT_FOUND', 'ADAPTER_NOT_FOUND', 'DATASET_NOT_FOUND', 'RESPONSE_FORMAT_UNSUPPORTED', 'WEBHOOK_URL_REFUSED', 'RATE_LIMITED', 'SHUTTING_DOWN'],
  },
  'GET /v1/tasks': {
    tag: 'Tasks',
    summary: 'List tasks, newest first, a page at a time',
    query: TaskListQuerySchema,
    ok: { 200: { description: 'A page; pass `nextCursor` back as `cursor` (null on the last page).', schema: Type.Object({ tasks: Type.Array(TaskRecordSchema), nextCursor: Nullable(Type.String()) }) } },
    errors: ['SCHEMA_VIOLATION'],
  },
  'GET /v1/tasks/:id': {
    tag: 'Tasks',
    summary: 'Read a task record',
    params: Params.id,
    ok: { 200: { description: 'The task record.', schema: TaskRecordSchema, example: TASK_EXAMPLE } },
    errors: ['INVALID_ID', 'TASK_NOT_FOUND'],
  },
  'GET /v1/tasks/:id/checkpoint': {
    tag: 'Tasks',
    summary: "A train task's latest checkpoint (adapter and optimizer state)",
    params: Params.id,
    ok: { 200: bytes('application/octet-stream', 'safetensors with the run in its metadata; `x-checkpoint-step` and `x-checkpoint-sha256` say which (`etag`, 304 on `if-none-match`).') },
    errors: ['INVALID_ID', 'TASK_NOT_FOUND', 'CHECKPOINT_NOT_FOUND'],
  },
  'GET /v1/tasks/:id/wait': {
    tag: 'Tasks',
    summary: 'Long-poll until the task ends or the timeout passes',
    params: Params.id,
    query: WaitQuerySchema,
    ok: { 200: { description: 'The record, terminal or as it is when timeoutMs passed.', schema: TaskRecordSchema } },
    errors: ['INVALID_ID', 'TASK_NOT_FOUND', 'SCHEMA_VIOLATION'],
  },
  'GET /v1/tasks/:id/events': {
    tag: 'Tasks',
    summary: 'Server-sent events: state changes, progress, then the final record',
    params: Params.id,
    ok: { 200: { description: '`event: state`, `event: progress`, then `event: record` and the stream ends.', type: 'text/event-stream', schema: Type.String() } },
    errors: ['INVALID_ID', 'TASK_NOT_FOUND'],
  },
  'POST /v1/tasks/:id/cancel': {
    tag: 'Tasks',
    summary: 'Cancel a queued or leased task',
    params: Params.id,
    body: { types: JSON_TYPE, schema: ReasonSchema, required: false, example: { reason: 'No longer needed.' } },
    ok: { 200: { description: 'The record (cancelled, or as it was when already ended).', schema: TaskRecordSchema } },
    errors: ['INVALID_ID', 'TASK_NOT_FOUND', 'SCHEMA_VIOLATION'],
  },
  'POST /v1/tasks/:id/verdict': {
    tag: 'Tasks',
    summary: "Record Layer 3's verdict on an ended task",
    params: Params.id,
    body: { types: JSON_TYPE, schema: VerdictSchema, required: true, example: { verdict: 'fail', reason: 'The output misses the required field.' } },
    ok: { 200: { description: 'The record with its verdict.', schema: TaskRecordSchema } },
    errors: ['SCHEMA_VIOLATION', 'INVALID_ID', 'TASK_NOT_FOUND', 'TASK_NOT_TERMINAL'],
  },

  // ---- OpenAI-compatible
  'GET /v1/models': {
    tag: 'OpenAI-compatible',
    summary: 'List the models (served folders, what nodes hold, BASE:ADAPTER ids)',
    ok: { 200: { description: 'OpenAI-shaped list.', schema: Type.Object({ object: Type.Literal('list'), data: Type.Array(ModelObjectSchema) }) } },
    openAiErrors: true,
  },
  'GET /v1/models/:name': {
    tag: 'OpenAI-compatible',
    summary: 'One model',
    params: Type.Object({ name: Type.String({ description: '`BASE` or `BASE:ADAPTER`.' }) }),
    ok: { 200: { description: 'The model.', schema: ModelObjectSchema } },
    errors: ['MODEL_NOT_FOUND'],
    openAiErrors: true,
  },
  'POST /v1/chat/completions': {
    tag: 'OpenAI-compatible',
    summary: 'Chat completion (journaled generate tasks, one per choice)',
    headers: TraceparentHeaderSchema,
    body: { types: JSON_TYPE, schema: ChatCompletionRequestSchema, required: true, example: { model: 'tiny', messages: [{ role: 'user', content: 'Say hi.' }], max_tokens: 16, temperature: 0 } },
    ok: { 200: { description: 'A `chat.completion`, or with `stream: true` a `text/event-stream` of `chat.completion.chunk`s ending `data: [DONE]`. `x-task-ids` names the tasks.', schema: ChatCompletionSchema } },
    errors: ['SCHEMA_VIOLATION', 'MODEL_NOT_FOUND', 'ADAPTER_NOT_FOUND', 'RESPONSE_FORMAT_UNSUPPORTED', 'RATE_LIMITED'],
    openAiErrors: true,
  },
  'POST /v1/completions': {
    tag: 'OpenAI-compatible',
    summary: 'Text completion (journaled generate tasks, one per prompt and choice)',
    headers: TraceparentHeaderSchema,
    body: { types: JSON_TYPE, schema: CompletionRequestSchema, required: true, example: { model: 'tiny', prompt: 'Once upon a time', max_tokens: 16, seed: 7 } },
    ok: { 200: { description: 'A `text_completion`, or with `stream: true` a `text/event-stream` of chunks ending `data: [DONE]`.', schema: TextCompletionSchema } },
    errors: ['SCHEMA_VIOLATION', 'MODEL_NOT_FOUND', 'ADAPTER_NOT_FOUND', 'RESPONSE_FORMAT_UNSUPPORTED', 'RATE_LIMITED'],
    openAiErrors: true,
  },

  // ---- nodes
  'GET /v1/nodes/ws': {
    tag: 'Nodes',
    summary: 'The node socket (WebSocket upgrade)',
    description: 'JSON text frames: node → coordinator messages are `NodeMessage` (hello first; its `token` is the join token when the coordinator runs with --auth); the coordinator answers welcome, task.assign, task.cancel, drain, error. docs/api.md "Nodes" has the protocol.',
    ok: { 101: { description: 'Switching protocols: the socket is open.', schema: NodeMessageSchema } },
    errors: ['NOT_FOUND'],
  },
  'GET /v1/nodes': {
    tag: 'Nodes',
    summary: 'List the connected nodes (all known with all=1)',
    query: NodeListQuerySchema,
    ok: { 200: { description: 'The node views.', schema: Type.Object({ nodes: Type.Array(NodeViewSchema) }) } },
  },
  'POST /v1/nodes/:id/drain': {
    tag: 'Nodes',
    summary: 'Drain a node: no new tasks, running ones finish',
    params: Params.node,
    body: { types: JSON_TYPE, schema: ReasonSchema, required: false, example: { reason: 'Host maintenance.' } },
    ok: { 200: { description: 'The node view.', schema: NodeViewSchema } },
    errors: ['INVALID_ID', 'NODE_NOT_FOUND', 'SCHEMA_VIOLATION'],
  },
  'PUT /v1/nodes/:id/caps': {
    tag: 'Nodes',
    summary: "Cap the leases one node holds at once (the allocator's cap)",
    params: Params.node,
    body: { types: JSON_TYPE, schema: CapsSchema, required: true, example: { maxLeases: 8 } },
    ok: { 200: { description: 'The node view.', schema: NodeViewSchema } },
    errors: ['INVALID_ID', 'NODE_NOT_FOUND', 'SCHEMA_VIOLATION'],
  },

  // ---- operations
  'GET /healthz': {
    tag: 'Operations',
    summary: 'Liveness: the process runs',
    ok: { 200: { description: 'Alive.', schema: Type.Object({ status: Type.Literal('ok'), uptimeMs: Type.Number() }), example: { status: 'ok', uptimeMs: 5230 } } },
  },
  'GET /readyz': {
    tag: 'Operations',
    summary: 'Readiness: takes work (503 SHUTTING_DOWN while closing)',
    ok: { 200: { description: 'Ready.', schema: Type.Object({ status: Type.Literal('ready'), nodes: Int, duplicatesDropped: Int }) } },
    errors: ['SHUTTING_DOWN'],
  },
  'GET /metrics': {
    tag: 'Operations',
    summary: 'Prometheus metrics (text exposition)',
    ok: { 200: bytes('text/plain', 'Prometheus text format 0.0.4.') },
  },
  'GET /v1/kpis': {
    tag: 'Operations',
    summary: 'The KPIs against their targets',
    ok: { 200: { description: 'Each KPI `{ value, target, unit, pass }` (value and pass null without data).', schema: Type.Object({ at: Int, uptimeMs: Type.Number(), pass: Type.Boolean(), kpis: Type.Record(Type.String(), KpiSchema) }) } },
  },
  'GET /v1/maintenance': {
    tag: 'Operations',
    summary: 'Maintenance mode: on or off, why, since when',
    ok: { 200: { description: 'The state (kept in memory: a restarted coordinator starts out of maintenance).', schema: MaintenanceStateSchema } },
  },
  'PUT /v1/maintenance': {
    tag: 'Operations',
    summary: 'Enter or leave maintenance mode (coordinator_maintenance 1, alerts silenced)',
    body: { types: JSON_TYPE, schema: MaintenanceSchema, required: true, example: { on: true, reason: 'Upgrading the nodes.' } },
    ok: { 200: { description: 'The new state.', schema: MaintenanceStateSchema, example: { on: true, reason: 'Upgrading the nodes.', since: 1767225600000 } } },
    errors: ['SCHEMA_VIOLATION'],
  },
  'GET /v1/pool': {
    tag: 'Operations',
    summary: "The operator page's view: nodes, the queue, history, the last errors",
    ok: { 200: { description: 'The pool view (a tenant-bound token sees its own tenant\'s errors only).', schema: PoolViewSchema } },
  },
  'GET /v1/whoami': {
    tag: 'Operations',
    summary: "The caller's own token: id, roles, tenant",
    ok: { 200: { description: 'Who the token sent is (authenticated false without a known token).', schema: WhoamiSchema, example: { authenticated: true, id: 'tok-3f2a9c1d0b7e', roles: ['refiner'], tenant: null } } },
  },
  'GET /openapi.json': {
    tag: 'Operations',
    summary: 'This document (OpenAPI 3.1)',
    ok: { 200: { description: 'The OpenAPI document.', schema: Type.Object({ openapi: Type.String(), info: Type.Object({}), paths: Type.Object({}) }) } },
  },
  'GET /docs': {
    tag: 'Operations',
    summary: 'This document as a page to read',
    ok: { 200: bytes('text/html', 'The API reference, rendered on the server (no scripts).') },
  },

  // ---- agents and modules
  'PUT /v1/agents/:name/versions/:version': {
    tag: 'Agents',
    summary: 'Publish an agent version (the WASM module)',
    description: 'Optional config (AgentConfig) as JSON in the `config` query or the `x-agent-config` header.',
    params: Type.Object({ name: Name, version: Name }),
    query: Type.Object({ config: Type.Optional(Type.String({ description: 'AgentConfig as JSON (URL-encoded).' })) }),
    body: { types: ['application/wasm', 'application/octet-stream'], required: true, description: `The module bytes, at most ${LIMITS.maxWasmBytes} bytes.` },
    ok: {
      201: { description: 'A new version.', schema: AgentVersionSchema },
      200: { description: 'The same bytes again (no-op).', schema: AgentVersionSchema },
    },
    errors: ['INVALID_ID', 'WASM_TOO_LARGE', 'WASM_INVALID', 'WASM_FORBIDDEN_IMPORT', 'WASM_MISSING_EXPORT', 'AGENT_VERSION_EXISTS', 'SCHEMA_VIOLATION'],
  },
  'GET /v1/agents': {
    tag: 'Agents',
    summary: 'List agents and their versions',
    ok: { 200: { description: 'Versions oldest first.', schema: Type.Object({ agents: Type.Array(AgentSchema) }) } },
  },
  'GET /v1/agents/:name': {
    tag: 'Agents',
    summary: 'One agent and its versions',
    params: Params.name,
    ok: { 200: { description: 'The agent.', schema: AgentSchema } },
    errors: ['INVALID_ID', 'AGENT_NOT_FOUND'],
  },
  'GET /v1/modules/:sha256': {
    tag: 'Agents',
    summary: 'A module by content hash (immutable, cacheable)',
    params: Type.Object({ sha256: Type.String({ pattern: SHA256_PATTERN }) }),
    ok: { 200: bytes('application/wasm', 'The module bytes (`etag`, 304 on `if-none-match`).') },
    errors: ['INVALID_ID', 'NOT_FOUND'],
  },

  // ---- adapters
  'PUT /v1/adapters/:base/:name': {
    tag: 'Adapters',
    summary: 'Upload a LoRA adapter version (PEFT layout)',
    description: 'adapter_model.safetensors as application/octet-stream with adapter_config.json in `x-adapter-config` (or the `config` query), or the JSON form.',
    params: Type.Object({ base: Name, name: Name }),
    query: Type.Object({ config: Type.Optional(Type.String()), fingerprint: Type.Optional(Type.String()) }),
    body: { types: ['application/octet-stream', 'application/json'], schema: UploadSchema, required: true },
    ok: { 201: { description: 'The new version.', schema: AdapterVersionSchema } },
    errors: ['ADAPTER_INVALID', 'ADAPTER_MISMATCH', 'MODEL_NOT_FOUND', 'SCHEMA_VIOLATION'],
  },
  'POST /v1/adapters/:base/:name/merge': {
    tag: 'Adapters',
    summary: 'Merge an adapter version into its base: a model of its own (safetensors and ONNX)',
    description: 'W + alpha/r · B·A in float32 for each adapted projection, written as the model folder `BASE-NAME-vN` (the base\'s config and tokenizer, model.safetensors, onnx/model.onnx) and served as that model id by /v1/models and generate.',
    params: Type.Object({ base: Name, name: Type.String({ description: '`name` (the latest version) or `name@N`.' }) }),
    ok: {
      201: { description: 'Merged now.', schema: Type.Object({ model: Type.String(), base: Type.String(), adapter: Type.String(), files: Type.Array(Type.Object({ path: Type.String(), size: Type.Integer() })) }) },
      200: { description: 'That version was merged before: the same model.' },
    },
    errors: ['ADAPTER_NOT_FOUND', 'MODEL_NOT_FOUND', 'MODEL_TOO_LARGE', 'ADAPTER_INVALID', 'ADAPTER_MISMATCH'],
  },
  'GET /v1/adapters': {
    tag: 'Adapters',
    summary: 'List adapters',
    ok: { 200: { description: 'Every adapter with its versions.', schema: Type.Object({ adapters: Type.Array(AdapterSchema) }) } },
  },
  'GET /v1/adapters/:base/:name': {
    tag: 'Adapters',
    summary: 'One adapter (all versions), or one version with name@N',
    params: Type.Object({ base: Type.String(), name: Type.String({ description: '`name` or `name@N`.' }) }),
    ok: { 200: { description: 'The adapter, or the version asked for.', schema: Type.Union([AdapterSchema, AdapterVersionSchema]) } },
    errors: ['ADAPTER_NOT_FOUND'],
  },
  'GET /v1/adapters/:base/:name/:file': {
    tag: 'Adapters',
    summary: 'A file of the latest (or name@N) version',
    params: Type.Object({ base: Type.String(), name: Type.String(), file: Type.Union([Type.Literal('adapter_config.json'), Type.Literal('adapter_model.safetensors')]) }),
    ok: { 200: bytes('application/octet-stream', 'The file, byte-identical to the upload (adapter_config.json as application/json).') },
    errors: ['ADAPTER_NOT_FOUND', 'NOT_FOUND'],
  },

  // ---- datasets
  'POST /v1/datasets': {
    tag: 'Datasets',
    summary: 'Upload a training dataset (JSON lines)',
    body: { types: ['application/x-ndjson', 'application/jsonl'], required: true, description: `One {"messages":[…]} conversation per line, UTF-8, at most ${LIMITS.maxDatasetBytes} bytes.` },
    ok: {
      201: { description: "New to the caller's tenant.", schema: DatasetSchema },
      200: { description: 'These bytes were uploaded before.', schema: DatasetSchema },
    },
    errors: ['DATASET_INVALID'],
  },
  'GET /v1/datasets': {
    tag: 'Datasets',
    summary: "List the tenant's datasets",
    ok: { 200: { description: 'Oldest first.', schema: Type.Object({ datasets: Type.Array(DatasetSchema) }) } },
  },
  'GET /v1/datasets/:sha256': {
    tag: 'Datasets',
    summary: 'One dataset record',
    params: Type.Object({ sha256: Type.String({ description: 'The hex digest or sha256:<hex>.' }) }),
    ok: { 200: { description: 'The record.', schema: DatasetSchema } },
    errors: ['INVALID_ID', 'DATASET_NOT_FOUND'],
  },
  'GET /v1/datasets/:sha256/content': {
    tag: 'Datasets',
    summary: 'The uploaded bytes',
    params: Type.Object({ sha256: Type.String({ description: 'The hex digest or sha256:<hex>.' }) }),
    ok: { 200: bytes('application/x-ndjson', 'The dataset as uploaded (`etag`, 304 on `if-none-match`).') },
    errors: ['INVALID_ID', 'DATASET_NOT_FOUND'],
  },

  // ---- blobs
  'POST /v1/blobs': {
    tag: 'Blobs',
    summary: 'Upload a blob (an agent input named by a mount)',
    body: { types: ['application/octet-stream'], required: true, description: `Any bytes, at most ${LIMITS.maxBlobBytes} (BLOB_TOO_LARGE, measured while the body streams).` },
    ok: {
      201: { description: "New to the caller's tenant.", schema: BlobSchema },
      200: { description: 'These bytes were uploaded before.', schema: BlobSchema },
    },
    errors: ['BLOB_TOO_LARGE'],
  },
  'GET /v1/blobs': {
    tag: 'Blobs',
    summary: "List the tenant's blobs",
    ok: { 200: { description: 'Oldest first.', schema: Type.Object({ blobs: Type.Array(BlobSchema) }) } },
  },
  'GET /v1/blobs/:sha256': {
    tag: 'Blobs',
    summary: 'The bytes of a blob (HEAD: its length)',
    params: Type.Object({ sha256: Type.String({ description: 'The hex digest or sha256:<hex>.' }) }),
    ok: { 200: bytes('application/octet-stream', 'The bytes as uploaded (`etag`, 304 on `if-none-match`).') },
    errors: ['INVALID_ID', 'BLOB_NOT_FOUND'],
  },

  // ---- quotas
  'PUT /v1/quotas/:tenant': {
    tag: 'Quotas',
    summary: "Replace a tenant's quota",
    params: Type.Object({ tenant: Name }),
    body: { types: JSON_TYPE, schema: QuotaSchema, required: false, example: { maxQueued: 1000, agentLimits: { memoryMB: 128, timeoutMs: 10000 }, weight: 2, maxLeased: 500 } },
    ok: { 200: { description: 'The quota.', schema: Type.Composite([Type.Object({ tenant: Name }), QuotaViewSchema]) } },
    errors: ['SCHEMA_VIOLATION', 'INVALID_ID'],
  },
  'GET /v1/quotas': {
    tag: 'Quotas',
    summary: 'Every quota (a tenant-bound token: its own)',
    ok: { 200: { description: 'Tenant → quota.', schema: Type.Object({ quotas: Type.Record(Type.String(), QuotaViewSchema) }) } },
  },

  // ---- files
  'GET /v1/models/:name/manifest': {
    tag: 'Files',
    summary: "A model folder's manifest (sizes and SHA-256 digests)",
    params: Params.name,
    ok: { 200: { description: 'The manifest (registry adapters joined as adapters/<name>/…).', schema: ManifestSchema } },
    errors: ['INVALID_ID', 'MODEL_NOT_FOUND'],
  },
  'GET /models/:name/*': {
    tag: 'Files',
    summary: "A model folder's file (Range requests)",
    params: Type.Object({ name: Name, path: Rest }),
    ok: { 200: bytes('application/octet-stream', 'The file (206 for a Range).') },
    errors: ['INVALID_ID', 'MODEL_NOT_FOUND', 'MODEL_FILE_MISSING', 'NOT_FOUND'],
  },
  'GET /ort/*': {
    tag: 'Files',
    summary: "onnxruntime-web's files for the nodes",
    params: Type.Object({ path: Rest }),
    ok: { 200: bytes('application/octet-stream', 'The file.') },
    errors: ['NOT_FOUND'],
  },
  'GET /*': {
    tag: 'Files',
    summary: 'The node page (the built dist/ folder)',
    params: Type.Object({ path: Rest }),
    ok: { 200: bytes('text/html', 'The page and its assets.') },
    errors: ['NOT_FOUND'],
  },
};

// ---------------------------------------------------------------- the document

/** fastify's `/models/:name/*` → OpenAPI's `/models/{name}/{path}` (the wildcard is the `path` parameter). */
export function openApiPath(url: string): string {
  return url.replace(/:([A-Za-z0-9_]+)/g, '{$1}').replace(/\*$/, '{path}');
}

type Json = null | boolean | number | string | Json[] | { [k: string]: Json };
export type OpenApiDocument = { openapi: string; info: Record<string, Json>; paths: Record<string, Record<string, Json>> } & Record<string, Json>;

/** Shared codes: what every route of a kind may answer besides its own. */
function sharedErrors(method: string, access: Access | undefined, op: Operation): ErrorCode[] {
  const codes: ErrorCode[] = ['INTERNAL'];
  if (access && 'roles' in access) codes.push('UNAUTHORIZED', 'FORBIDDEN');
  if (op.body) codes.push('BAD_JSON', 'BODY_TOO_LARGE', 'UNSUPPORTED_MEDIA_TYPE');
  if (method !== 'GET') codes.push('CROSS_SITE_REFUSED');
  return codes;
}

/** JSON of a TypeBox schema (symbols dropped), with subschemas equal to a component written as `$ref`s. */
function refsFor(): (schema: TSchema, self?: string) => Json {
  const byJson = new Map<string, string>();
  const plain = (s: unknown): Json => JSON.parse(JSON.stringify(s)) as Json;
  for (const [name, s] of Object.entries(COMPONENTS)) byJson.set(JSON.stringify(plain(s)), name);
  const walk = (node: Json, self: string | undefined): Json => {
    if (Array.isArray(node)) return node.map((n) => walk(n, self));
    if (node === null || typeof node !== 'object') return node;
    const name = byJson.get(JSON.stringify(node));
    if (name !== undefined && name !== self) return { $ref: `#/components/schemas/${name}` };
    return Object.fromEntries(Object.entries(node).map(([k, v]) => [k, k === 'properties' || k === 'patternProperties' || k === '$defs' ? walkMap(v, self) : walk(v, self)]));
  };
  const walkMap = (map: Json, self: string | undefined): Json =>
    map && typeof map === 'object' && !Array.isArray(map) ? Object.fromEntries(Object.entries(map).map(([k, v]) => [k, walk(v, self)])) : map;
  return (schema, self) => {
    const json = plain(schema);
    if (self === undefined) return walk(json, undefined);
    // A component's own top level stays inline; its parts may name other components.
    return json && typeof json === 'object' && !Array.isArray(json)
      ? Object.fromEntries(Object.entries(json).map(([k, v]) => [k, k === 'properties' || k === 'patternProperties' ? walkMap(v, self) : walk(v, self)]))
      : json;
  };
}

function parameters(where: 'path' | 'query' | 'header', schema: TSchema | undefined, ref: (s: TSchema) => Json): Json[] {
  if (!schema) return [];
  const obj = schema as unknown as { properties?: Record<string, TSchema>; required?: string[] };
  return Object.entries(obj.properties ?? {}).map(([name, s]) => {
    const p: Record<string, Json> = { name, in: where, required: where === 'path' || (obj.required ?? []).includes(name), schema: ref(s) };
    if (typeof s.description === 'string') p.description = s.description;
    return p;
  });
}

/** The whole document; `servers` when the caller knows the coordinator's URL. */
export function openApiDocument(opts: { url?: string } = {}): OpenApiDocument {
  const ref = refsFor();
  const paths: Record<string, Record<string, Json>> = {};
  for (const [key, op] of Object.entries(OPERATIONS)) {
    const [method, url] = key.split(' ') as [string, string];
    const access = ACCESS[key];
    const responses: Record<string, Json> = {};
    for (const [status, a] of Object.entries(op.ok)) {
      const media: Record<string, Json> = { schema: a.schema ? ref(a.schema) : {} };
      if (a.example !== undefined) media.example = a.example as Json;
      responses[status] = { description: a.description, content: { [a.type ?? 'application/json']: media } };
    }
    const codes = [...new Set([...(op.errors ?? []), ...sharedErrors(method, access, op)])];
    const byStatus = new Map<number, ErrorCode[]>();
    for (const c of codes) byStatus.set(ERRORS[c].status, [...(byStatus.get(ERRORS[c].status) ?? []), c]);
    for (const [status, cs] of [...byStatus].sort((a, b) => a[0] - b[0])) {
      responses[String(status)] = {
        description: cs.join(', '),
        content: { 'application/json': { schema: { $ref: `#/components/schemas/${op.openAiErrors ? 'OpenAiError' : 'Error'}` } } },
      };
    }
    const operation: Record<string, Json> = {
      operationId: operationId(method, url),
      summary: op.summary,
      tags: [op.tag],
      parameters: [...parameters('path', op.params, ref), ...parameters('query', op.query, ref), ...parameters('header', op.headers, ref)],
      responses,
    };
    if (op.description) operation.description = op.description;
    if (op.body) {
      const content: Record<string, Json> = {};
      for (const t of op.body.types) {
        const isJson = t === 'application/json';
        const media: Record<string, Json> = { schema: isJson && op.body.schema ? ref(op.body.schema) : { type: 'string', contentMediaType: t } };
        if (isJson && op.body.example !== undefined) media.example = op.body.example as Json;
        content[t] = media;
      }
      operation.requestBody = { required: op.body.required ?? false, content, ...(op.body.description ? { description: op.body.description } : {}) };
    }
    // Security from ACCESS: open routes need nothing; role routes a bearer token holding one of the roles.
    if (!access || 'open' in access) operation.security = [];
    else if ('hub' in access) {
      operation.security = [{}, { bearer: ['node'] }];
      operation['x-roles'] = ['node'];
    } else {
      operation.security = [{ bearer: [...access.roles] }];
      operation['x-roles'] = [...access.roles];
      if (access.shared) operation['x-tenant-bound-refused'] = true;
    }
    operation['x-access'] = !access ? 'denied' : 'open' in access ? 'open' : 'hub' in access ? 'node socket' : 'roles';
    (paths[openApiPath(url)] ??= {})[method.toLowerCase()] = operation;
  }
  const schemas: Record<string, Json> = {};
  for (const [name, s] of Object.entries(COMPONENTS)) schemas[name] = ref(s, name);
  return {
    openapi: '3.1.0',
    info: {
      title: 'Execution node coordinator',
      version: '1',
      description:
        'The coordinator of a pool of browser execution nodes: tasks (WASI agents, text generation, LoRA training), the OpenAI-compatible API, nodes, agents, adapters, datasets, quotas. ' +
        'Generated from the TypeBox schemas the routes validate with (server/openapi.ts); docs/api.md is the prose reference. Roles per operation: `x-roles` (admin holds every role).',
    },
    ...(opts.url ? { servers: [{ url: opts.url }] } : {}),
    tags: [...new Set(Object.values(OPERATIONS).map((o) => o.tag))].map((name) => ({ name })),
    paths,
    components: {
      schemas,
      securitySchemes: { bearer: { type: 'http', scheme: 'bearer', description: 'A token from the --auth file (server/auth.ts); its roles decide what it may call.' } },
    },
  };
}

function operationId(method: string, url: string): string {
  const words = url
    .split('/')
    .filter((p) => p && p !== 'v1')
    .map((p) => (p === '*' ? 'Path' : p.startsWith(':') ? `By${cap(p.slice(1))}` : cap(p.replace(/[^A-Za-z0-9]+(.)?/g, (_m, c: string | undefined) => (c ?? '').toUpperCase()))));
  return method.toLowerCase() + (words.join('') || 'Root');
}

function cap(s: string): string {
  return s.charAt(0).toUpperCase() + s.slice(1);
}
