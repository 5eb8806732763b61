/**
 * Request and message checks, compiled once with TypeBox's TypeCompiler. Errors
 * name the path of the first violations so a caller can fix its request.
 */
import { Type, type Static, type TSchema } from '@sinclair/typebox';
import { TypeCompiler, type TypeCheck } from '@sinclair/typebox/compiler';
import {
  AgentLimitsSchema,
  AgentTaskSpecSchema,
  AppError,
  GenerateTaskSpecSchema,
  LIMITS,
  NodeMessageSchema,
  TrainTaskSpecSchema,
  type ErrorCode,
  type NodeMessage,
  type TaskSpec,
} from '../shared';

const SPEC_CHECKS = {
  agent: TypeCompiler.Compile(AgentTaskSpecSchema),
  generate: TypeCompiler.Compile(GenerateTaskSpecSchema),
  train: TypeCompiler.Compile(TrainTaskSpecSchema),
} as const;

const NODE_MESSAGE = TypeCompiler.Compile(NodeMessageSchema);

/** Body of `POST /v1/tasks/:id/verdict`. */
export const VerdictSchema = Type.Object(
  { verdict: Type.Union([Type.Literal('pass'), Type.Literal('fail')]), reason: Type.Optional(Type.String({ maxLength: 4096 })) },
  { additionalProperties: false },
);
/** Body of `PUT /v1/quotas/:tenant`. */
export const QuotaSchema = Type.Object(
  {
    maxQueued: Type.Optional(Type.Integer({ minimum: 0 })),
    agentLimits: Type.Optional(AgentLimitsSchema),
    weight: Type.Optional(Type.Number({ exclusiveMinimum: 0, maximum: 1000, description: 'Share against other tenants of the same priority (default 1).' })),
    maxLeased: Type.Optional(Type.Integer({ minimum: 1, maximum: 1_000_000, description: 'Most tasks leased at once; the rest wait with reason quota.' })),
  },
  { additionalProperties: false },
);
/** Body of `POST /v1/tasks/:id/cancel` and `POST /v1/nodes/:id/drain` (optional). */
export const ReasonSchema = Type.Object({ reason: Type.Optional(Type.String({ description: 'Why (kept up to 1,000 characters for a cancel, 500 for a drain).' })) });
/** Body of `PUT /v1/nodes/:id/caps`. */
export const CapsSchema = Type.Object(
  {
    maxLeases: Type.Union([Type.Integer({ minimum: 0, maximum: 1_000_000 }), Type.Null()], {
      description: 'integer 0 to 1000000, or null for no cap beyond the coordinator\'s',
    }),
  },
  { additionalProperties: false },
);
/** Query of `GET /v1/tasks` (query values are text). */
export const TaskListQuerySchema = Type.Object({
  state: Type.Optional(
    Type.Union(['queued', 'leased', 'succeeded', 'failed', 'dead', 'cancelled'].map((s) => Type.Literal(s)), {
      description: 'one of queued, leased, succeeded, failed, dead, cancelled',
    }),
  ),
  limit: Type.Optional(Type.String({ pattern: '^(1000|[1-9][0-9]{0,2})$', description: 'an integer from 1 to 1000 (default 100)' })),
  tenant: Type.Optional(Type.String({ description: 'only this tenant\'s tasks' })),
  cursor: Type.Optional(Type.String({ maxLength: 200, description: 'the nextCursor of the previous page' })),
});
/** Query of `GET /v1/tasks/:id/wait`. */
export const WaitQuerySchema = Type.Object({
  timeoutMs: Type.Optional(Type.String({ pattern: '^[0-9]{1,6}(\\.[0-9]+)?$', description: 'milliseconds to wait, 0 to 120000 (default 30000)' })),
});
/** Query of `GET /v1/nodes`. */
export const NodeListQuerySchema = Type.Object({
  all: Type.Optional(Type.String({ description: '1: every known node, not only the connected ones' })),
});

/** Config of an agent version: default limits and a description. */
export const AgentConfigSchema = Type.Object(
  {
    limits: Type.Optional(AgentLimitsSchema),
    description: Type.Optional(Type.String({ maxLength: 4096 })),
    /** Same input, same output on every node (no clock, no randomness): its tasks may be spot-checked (--spot-check). */
    deterministic: Type.Optional(Type.Boolean()),
    /** false: the version's tasks run with exactly the env they give (no AGENT_TASK_ID/AGENT_NAME) unless a task says otherwise. */
    injectEnv: Type.Optional(Type.Boolean()),
    /**
     * Host import namespaces the module uses beside WASI: `agent_model` (the node's model; its tasks name a
     * model and run on nodes with JSPI). A module importing one its version does not declare is refused.
     */
    imports: Type.Optional(Type.Array(Type.Literal('agent_model'), { maxItems: 1 })),
  },
  { additionalProperties: false },
);
export type AgentConfig = Static<typeof AgentConfigSchema>;

const COMPILED = new Map<TSchema, TypeCheck<TSchema>>();

/** Checks `value` with a compiled schema; throws `code` with up to five violations and their paths. */
export function checkCompiled<S extends TSchema>(
  schema: S,
  value: unknown,
  code: ErrorCode = 'SCHEMA_VIOLATION',
  prefix = '',
): Static<S> {
  let check = COMPILED.get(schema) as TypeCheck<S> | undefined;
  if (!check) {
    check = TypeCompiler.Compile(schema);
    COMPILED.set(schema, check as unknown as TypeCheck<TSchema>);
  }
  return run(check, value, code, prefix);
}

function run<S extends TSchema>(check: TypeCheck<S>, value: unknown, code: ErrorCode, prefix: string): Static<S> {
  if (check.Check(value)) return value as Static<S>;
  const errors = [...check.Errors(value)].slice(0, 5).map((e) => ({ path: prefix + (e.path || '') || '/', message: e.message }));
  const first = errors[0];
  throw new AppError(code, first ? `${first.path}: ${first.message}` : 'The value does not match the schema.', { errors });
}

/**
 * Checks a query or body with a compiled schema whose properties carry a `description`: the message
 * names the field and says what it takes (`/limit: an integer from 1 to 1000`), as a hand-written check would.
 */
export function checkDescribed<S extends TSchema>(schema: S, value: unknown): Static<S> {
  try {
    return checkCompiled(schema, value);
  } catch (err) {
    if (!(err instanceof AppError)) throw err;
    const first = (err.details?.errors as { path: string }[] | undefined)?.[0];
    const prop = first ? (schema as unknown as { properties?: Record<string, TSchema> }).properties?.[first.path.split('/')[1] ?? ''] : undefined;
    if (!first || typeof prop?.description !== 'string') throw err;
    throw new AppError('SCHEMA_VIOLATION', `${first.path}: must be ${prop.description}.`, err.details);
  }
}

/** Checks one task spec, choosing the schema by `kind` so the error path points inside the right payload. */
export function checkSpec(value: unknown, prefix = ''): TaskSpec {
  const kind = value && typeof value === 'object' ? (value as { kind?: unknown }).kind : undefined;
  if (kind !== 'agent' && kind !== 'generate' && kind !== 'train') {
    throw new AppError('SCHEMA_VIOLATION', `${prefix}/kind: must be 'agent', 'generate' or 'train'.`, {
      errors: [{ path: `${prefix}/kind`, message: "Expected 'agent', 'generate' or 'train'" }],
    });
  }
  return run(SPEC_CHECKS[kind] as TypeCheck<TSchema>, value, 'SCHEMA_VIOLATION', prefix) as TaskSpec;
}

/** `POST /v1/tasks` takes one spec or `{ tasks: [...] }`. */
export function parseSubmission(body: unknown): { specs: TaskSpec[]; batch: boolean } {
  if (body === null || typeof body !== 'object' || Array.isArray(body)) {
    throw new AppError('SCHEMA_VIOLATION', 'The body must be a task spec object or { "tasks": [...] }.', {
      errors: [{ path: '/', message: 'Expected object' }],
    });
  }
  if (!('tasks' in body)) return { specs: [checkSpec(body)], batch: false };
  const tasks = (body as { tasks: unknown }).tasks;
  const extra = Object.keys(body).filter((k) => k !== 'tasks');
  if (extra.length) {
    throw new AppError('SCHEMA_VIOLATION', `/${extra[0]}: a batch body holds only "tasks".`, {
      errors: [{ path: `/${extra[0]}`, message: 'Unexpected property' }],
    });
  }
  if (!Array.isArray(tasks) || tasks.length === 0) {
    throw new AppError('SCHEMA_VIOLATION', '/tasks: must be a non-empty array of task specs.', {
      errors: [{ path: '/tasks', message: 'Expected non-empty array' }],
    });
  }
  if (tasks.length > LIMITS.maxBatch) {
    throw new AppError('BATCH_TOO_LARGE', `The batch holds ${tasks.length} tasks; send at most ${LIMITS.maxBatch} per request.`, {
      count: tasks.length,
      max: LIMITS.maxBatch,
    });
  }
  return { specs: tasks.map((t, i) => checkSpec(t, `/tasks/${i}`)), batch: true };
}

/** Parses and checks one socket message from a node (compiled check; PROTOCOL_ERROR on failure). */
export function parseNodeMessage(raw: string): NodeMessage {
  let value: unknown;
  try {
    value = JSON.parse(raw);
  } catch {
    throw new AppError('PROTOCOL_ERROR', 'A node message was not JSON; send one JSON object per WebSocket message.');
  }
  return run(NODE_MESSAGE, value, 'PROTOCOL_ERROR', '');
}
