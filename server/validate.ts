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
  { maxQueued: Type.Optional(Type.Integer({ minimum: 0 })), agentLimits: Type.Optional(AgentLimitsSchema) },
  { additionalProperties: false },
);
/** Config of an agent version: default limits and a description. */
export const AgentConfigSchema = Type.Object(
  {
    limits: Type.Optional(AgentLimitsSchema),
    description: Type.Optional(Type.String({ maxLength: 4096 })),
    /** Same input, same output on every node (no clock, no randomness): its tasks may be spot-checked (--spot-check). */
    deterministic: Type.Optional(Type.Boolean()),
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
