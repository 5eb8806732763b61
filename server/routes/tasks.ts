/**
 * Task routes: submit (one or a batch), read, long-poll, server-sent events,
 * cancel, list, and Layer 3's verdicts.
 */
import { createHash } from 'node:crypto';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import {
  AppError,
  LIMITS,
  MODEL_MODULE,
  TERMINAL_STATES,
  checkAgentPayload,
  newTaskId,
  parseTaskId,
  type TaskId,
  type TaskSpec,
  type TaskState,
} from '../../shared';
import { compileResponseFormat } from '../../worker/inference/constrain';
import { tenantOf } from '../access';
import type { Context } from '../context';
import { openEventStream } from '../http';
import type { ModelCatalog } from '../openai/models';
import type { InsertOutcome, NewTask, StoredTask } from '../journal';
import { SPOT_CHECK, replicationOf } from '../quorum';
import { effectiveLimits } from '../registry';
import type { TaskEvent } from '../watch';
import { ReasonSchema, TaskListQuerySchema, VerdictSchema, WaitQuerySchema, checkCompiled, checkDescribed, parseSubmission } from '../validate';
import { untracedTraceparent } from '../tracing';
import { checkBlobRefs } from './blobs';
import { checkTrainDatasets } from './datasets';

const MAX_WAIT_MS = 120_000;
const SSE_KEEPALIVE_MS = 15_000;

export function taskRoutes(app: FastifyInstance, ctx: Context, models: ModelCatalog): void {
  app.post('/v1/tasks', async (req, reply) => {
    if (ctx.shuttingDown()) throw new AppError('SHUTTING_DOWN', 'The coordinator is shutting down; submit to another one or retry after it restarts.');
    const { specs, batch } = parseSubmission(req.body);
    bindTenant(specs, batch, tenantOf(req));
    for (const [i, spec] of specs.entries()) if (spec.webhook !== undefined) ctx.webhooks.check(spec.webhook, batch ? `/tasks/${i}/webhook` : '/webhook');
    await checkGenerate(specs, batch, models);
    checkTrainDatasets(specs, batch, ctx, tenantOf(req));
    await models.weigh(specs.flatMap((s) => (s.kind === 'train' ? [s.payload.model] : [])));
    checkBlobRefs(specs, batch, ctx, tenantOf(req));
    const outcomes = await submitSpecsAsync(ctx, specs, batch, req.headers.traceparent);
    void reply.code(outcomes.some((o) => o.created) ? 202 : 200);
    return batch ? { ids: outcomes.map((o) => o.id) } : { id: outcomes[0]!.id };
  });

  app.get('/v1/tasks', async (req) => {
    const q = checkDescribed(TaskListQuerySchema, req.query);
    const limit = q.limit === undefined ? 100 : Number(q.limit);
    const opts: { state?: TaskState; tenant?: string; limit: number; before?: number } = { limit };
    if (q.state) opts.state = q.state as TaskState;
    const own = tenantOf(req);
    if (own !== null && q.tenant !== undefined && q.tenant !== own) {
      throw new AppError('FORBIDDEN', `This token is bound to tenant ${own}; it lists only that tenant's tasks.`, { tenant: own });
    }
    if (own !== null) opts.tenant = own;
    else if (q.tenant) opts.tenant = q.tenant;
    if (q.cursor !== undefined) opts.before = parseCursor(q.cursor);
    const page = ctx.journal.pageTasks(opts);
    return { tasks: page.tasks.map((t) => ctx.scheduler.withWaiting(t)), nextCursor: page.next === null ? null : cursorFor(page.next) };
  });

  app.get('/v1/tasks/:id', async (req) => ctx.scheduler.withWaiting(getTask(ctx, req)));

  // A train task's latest checkpoint (adapter and optimizer, worker/training/checkpoint.ts): what a node that takes
  // the task after a lost one goes on from.
  app.get('/v1/tasks/:id/checkpoint', async (req, reply) => {
    const task = getTask(ctx, req);
    const cp = task.kind === 'train' ? ctx.journal.checkpointBytes(task.id) : null;
    if (!cp) {
      throw new AppError('CHECKPOINT_NOT_FOUND', `Task ${task.id} has no checkpoint${task.kind === 'train' ? ' yet (its node sends one every checkpointEvery steps)' : ': only train tasks checkpoint'}.`, { id: task.id });
    }
    void reply.header('x-checkpoint-step', String(cp.step)).header('x-checkpoint-sha256', cp.sha256).header('etag', `"${cp.sha256}"`).type('application/octet-stream');
    if (req.headers['if-none-match'] === `"${cp.sha256}"`) return reply.code(304).send();
    return reply.send(cp.bytes);
  });

  app.get('/v1/tasks/:id/wait', async (req) => {
    const task = getTask(ctx, req);
    if (isTerminal(task.state)) return task;
    const raw = checkDescribed(WaitQuerySchema, req.query).timeoutMs;
    const timeoutMs = raw === undefined ? 30_000 : Number(raw);
    if (!Number.isFinite(timeoutMs) || timeoutMs < 0 || timeoutMs > MAX_WAIT_MS) {
      throw new AppError('SCHEMA_VIOLATION', `timeoutMs must be a number from 0 to ${MAX_WAIT_MS}.`, { errors: [{ path: '/timeoutMs', message: 'Out of range' }] });
    }
    return new Promise<StoredTask>((resolve) => {
      let done = false;
      const finish = (record: StoredTask | null): void => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        off();
        req.raw.off('close', onClose);
        const now = record ?? ctx.journal.getTask(task.id) ?? task;
        resolve(ctx.scheduler.withWaiting(now));
      };
      const off = ctx.watch.on(task.id, (e) => {
        if (e.type === 'record') finish(e.record);
        else if (e.type === 'closing') finish(null);
      });
      const timer = setTimeout(() => finish(null), timeoutMs);
      const onClose = (): void => finish(task);
      req.raw.on('close', onClose);
    });
  });

  app.get('/v1/tasks/:id/events', async (req, reply) => {
    const task = getTask(ctx, req);
    streamEvents(ctx, task, req, reply);
  });

  app.post('/v1/tasks/:id/cancel', async (req) => {
    const task = getTask(ctx, req);
    const body = checkCompiled(ReasonSchema, req.body ?? {});
    const reason = body.reason?.slice(0, 1000) ?? 'Cancelled by the caller.';
    ctx.scheduler.cancel(task.id, reason);
    return ctx.journal.getTask(task.id);
  });

  app.post('/v1/tasks/:id/verdict', async (req) => {
    const task = getTask(ctx, req);
    const body = checkCompiled(VerdictSchema, req.body);
    if (!isTerminal(task.state)) {
      throw new AppError('TASK_NOT_TERMINAL', `Task ${task.id} is ${task.state}; post a verdict once it has ended (GET /v1/tasks/${task.id}/wait).`, { state: task.state });
    }
    ctx.metrics.verdict(task.verdict?.verdict ?? null, body.verdict, ctx.clock.now());
    // The verdict marks the reputation of the node that ran it (of a replicated task: the agreeing replicas' nodes).
    ctx.scheduler.reputation.applied(ctx.journal.setVerdict(task, body.verdict, body.reason ?? null));
    ctx.journal.event('verdict', task.id, task.nodeId, { verdict: body.verdict, reason: body.reason ?? null });
    return ctx.journal.getTask(task.id);
  });
}

/**
 * generate tasks are checked before they are journaled, so a bad one is refused at once rather than
 * failing on a node (or waiting for one): the model must be served here or held by a connected node
 * (when this coordinator serves model folders),
 * prompt and messages exclusive, a response_format schema one constrained decoding supports.
 */
async function checkGenerate(specs: readonly TaskSpec[], batch: boolean, models: ModelCatalog): Promise<void> {
  const known = new Map<string, boolean>();
  for (const [i, spec] of specs.entries()) {
    // An agent that calls the node's model names it: the same check of model and adapter.
    if (spec.kind === 'agent' && spec.payload.model !== undefined) {
      await checkModel(batch ? `/tasks/${i}/payload` : '/payload', spec.payload.model, spec.payload.adapter, models, known);
      continue;
    }
    if (spec.kind !== 'generate') continue;
    const at = batch ? `/tasks/${i}/payload` : '/payload';
    const p = spec.payload;
    if ((p.prompt === undefined) === (p.messages === undefined)) {
      throw new AppError('SCHEMA_VIOLATION', `${at}: a generate task takes prompt or messages (exactly one).`, { errors: [{ path: at, message: 'prompt xor messages' }] });
    }
    if (p.responseFormat) {
      try {
        compileResponseFormat(p.responseFormat);
      } catch (err) {
        if (err instanceof AppError) throw new AppError(err.code, `${at}/responseFormat: ${err.message}`, err.details);
        throw err;
      }
    }
    await checkModel(at, p.model, p.adapter, models, known);
  }
}

/** A model (and adapter) a task names must be served here or held by a connected node, when this coordinator serves model folders. */
async function checkModel(at: string, model: string, adapter: string | undefined, models: ModelCatalog, known: Map<string, boolean>): Promise<void> {
  if (!models.servesModels) return; // nothing to check against: the nodes say
  if (!known.has(model)) known.set(model, await models.has(model));
  if (!known.get(model)) {
    throw new AppError('MODEL_NOT_FOUND', `${at}/model: no model ${model} is served here or held by a connected node; GET /v1/models lists them.`, { model });
  }
  if (adapter !== undefined && !(await models.hasAdapter(model, adapter))) {
    throw new AppError('ADAPTER_NOT_FOUND', `${at}/adapter: ${model} has no adapter ${adapter} here; GET /v1/adapters lists them (upload one with PUT /v1/adapters/${model}/${adapter}).`, {
      model,
      adapter,
    });
  }
}

/**
 * Journals checked specs the way every submit does (tenant quotas, effective limits,
 * one transaction) and wakes the scheduler. `batch` only shapes error paths.
 * Used by the OpenAI-compatible routes (which watch the tasks in the same turn of the event loop).
 */
export function submitSpecs(ctx: Context, specs: readonly TaskSpec[], batch: boolean, traceHeader?: unknown): InsertOutcome[] {
  const s = startSubmit(ctx, specs, batch, traceHeader);
  let outcomes: InsertOutcome[];
  try {
    outcomes = ctx.journal.insertTasks(s.tasks);
  } catch (err) {
    s.failed(err);
    throw err;
  }
  return s.journaled(outcomes);
}

/**
 * submitSpecs for POST /v1/tasks: on a shared journal a batch that cannot conflict is committed on the store's
 * asynchronous lane (Journal.insertTasksAsync), so the coordinator serves others while the server commits it.
 */
export async function submitSpecsAsync(ctx: Context, specs: readonly TaskSpec[], batch: boolean, traceHeader?: unknown): Promise<InsertOutcome[]> {
  const s = startSubmit(ctx, specs, batch, traceHeader);
  let outcomes: InsertOutcome[];
  try {
    outcomes = await ctx.journal.insertTasksAsync(s.tasks);
  } catch (err) {
    s.failed(err);
    throw err;
  }
  return s.journaled(outcomes);
}

/** A submit's tasks (quotas checked, trace begun) and what follows its insert: the span, the metrics, the wakeup. */
function startSubmit(ctx: Context, specs: readonly TaskSpec[], batch: boolean, traceHeader: unknown) {
  // The tasks' trace context: a child of the caller's `traceparent` when it is valid, else a new trace (server/tracing.ts).
  const traced = ctx.tracing ? ctx.tracing.submit(traceHeader, specs.length) : null;
  const traceparent = traced ? traced.traceparent : untracedTraceparent(traceHeader);
  let tasks: NewTask[];
  try {
    checkTenantQuotas(ctx, specs);
    tasks = specs.map((spec, i) => toNewTask(ctx, spec, batch ? `/tasks/${i}` : '', traceparent));
  } catch (err) {
    if (traced) ctx.tracing!.refused(traced, err);
    throw err;
  }
  const t0 = traced ? Date.now() : 0;
  return {
    tasks,
    failed(err: unknown): void {
      if (traced) ctx.tracing!.journaled(traced, t0, Date.now(), 0, err);
    },
    journaled(outcomes: InsertOutcome[]): InsertOutcome[] {
      let created = 0;
      for (let i = 0; i < outcomes.length; i++) {
        if (outcomes[i]!.created) {
          created++;
          ctx.metrics.submittedTasks(tasks[i]!.kind, 1);
        }
      }
      if (traced) ctx.tracing!.journaled(traced, t0, Date.now(), created);
      if (created) ctx.scheduler.submitted();
      return outcomes;
    },
  };
}

/** GET /v1/tasks cursors are opaque to callers: base64url of `{ v: 1, before: seq }`. */
function cursorFor(before: number): string {
  return Buffer.from(JSON.stringify({ v: 1, before })).toString('base64url');
}

function parseCursor(raw: unknown): number {
  let before: unknown;
  if (typeof raw === 'string' && raw.length <= 200) {
    try {
      const parsed = JSON.parse(Buffer.from(raw, 'base64url').toString('utf8')) as { v?: unknown; before?: unknown } | null;
      if (parsed?.v === 1) before = parsed.before;
    } catch {
      // refused below
    }
  }
  if (typeof before !== 'number' || !Number.isSafeInteger(before) || before < 1) {
    throw new AppError('SCHEMA_VIOLATION', 'cursor is not one this coordinator gave; pass the nextCursor of the previous page, or none for the first page.', {
      errors: [{ path: '/cursor', message: 'Unknown cursor' }],
    });
  }
  return before;
}

/**
 * A tenant-bound token submits for its tenant only: a spec without tenant takes the token's,
 * one naming another tenant is FORBIDDEN. Also used by the OpenAI-compatible routes.
 */
export function bindTenant(specs: TaskSpec[], batch: boolean, tenant: string | null): void {
  if (tenant === null) return;
  for (const [i, spec] of specs.entries()) {
    if (spec.tenant !== undefined && spec.tenant !== tenant) {
      throw new AppError('FORBIDDEN', `${batch ? `/tasks/${i}` : ''}/tenant: this token is bound to tenant ${tenant} and may not submit for ${spec.tenant}.`, {
        tenant,
        path: `${batch ? `/tasks/${i}` : ''}/tenant`,
      });
    }
    spec.tenant = tenant;
  }
}

function isTerminal(state: TaskState): boolean {
  return TERMINAL_STATES.includes(state);
}

function getTask(ctx: Context, req: FastifyRequest): StoredTask {
  const id = parseTaskId((req.params as { id: string }).id);
  const task = ctx.journal.getTask(id);
  // Another tenant's task answers as a missing one: a tenant-bound token does not learn it exists.
  const own = tenantOf(req);
  if (!task || (own !== null && task.tenant !== own)) {
    throw new AppError('TASK_NOT_FOUND', `No task has id ${id}; check the id the submit answered.`, { id });
  }
  return task;
}

/** Layer 8 quotas: a tenant with too many tasks queued or leased gets RATE_LIMITED for the whole batch. */
function checkTenantQuotas(ctx: Context, specs: readonly TaskSpec[]): void {
  let perTenant: Map<string, number> | null = null;
  for (const spec of specs) {
    if (!spec.tenant) continue;
    const quota = ctx.registry.quota(spec.tenant);
    if (quota?.maxQueued == null) continue;
    perTenant ??= new Map();
    perTenant.set(spec.tenant, (perTenant.get(spec.tenant) ?? 0) + 1);
  }
  if (!perTenant) return;
  for (const [tenant, n] of perTenant) {
    const max = ctx.registry.quota(tenant)!.maxQueued!;
    const pending = ctx.journal.pendingForTenant(tenant);
    if (pending + n > max) {
      throw new AppError('RATE_LIMITED', `Tenant ${tenant} has ${pending} tasks pending and may have ${max}; retry when some have finished.`, {
        tenant,
        pending,
        maxQueued: max,
        submitted: n,
      });
    }
  }
}

function toNewTask(ctx: Context, spec: TaskSpec, path: string, traceparent: string): NewTask {
  const quota = ctx.registry.quota(spec.tenant);
  let replication = replicationOf(spec, path);
  let payload: TaskSpec['payload'] = spec.payload;
  let moduleHash: string | null = null;
  let moduleSize: number | null = null;
  let model: string | null = null;
  if (spec.kind === 'agent') {
    const p = spec.payload;
    const version = ctx.registry.resolve(p.agent, p.version);
    moduleHash = version.moduleHash;
    moduleSize = version.size;
    payload = { ...p, version: version.version, limits: effectiveLimits(version, p.limits, quota?.agentLimits) };
    // The version's config may run its tasks with exactly the env they give; a task's own injectEnv wins.
    if (p.injectEnv === undefined && version.config.injectEnv !== undefined) payload = { ...payload, injectEnv: version.config.injectEnv };
    // Spot checks: a share of the tasks of deterministic agent versions runs on a second node too.
    const spotCheck = ctx.scheduler.options.spotCheck ?? 0;
    if (!replication && version.config.deterministic && spotCheck > 0 && Math.random() < spotCheck) replication = { ...SPOT_CHECK };
    // Mount paths, base64, NUL in args/env, inline size: a coded error before anything is written.
    checkAgentPayload(p, `${path}/payload`);
    // A version that imports agent_model calls the model its task names, on a node that holds it (the router's `model`).
    const callsModel = version.config.imports?.includes(MODEL_MODULE) === true;
    if (callsModel && p.model === undefined) {
      throw new AppError('AGENT_PAYLOAD_INVALID', `${path}/payload/model: ${p.agent}@${version.version} imports ${MODEL_MODULE}; name the model it calls.`, { agent: p.agent, version: version.version });
    }
    if (!callsModel && p.model !== undefined) {
      throw new AppError('AGENT_PAYLOAD_INVALID', `${path}/payload/model: ${p.agent}@${version.version} does not import ${MODEL_MODULE} (config.imports at upload), so it cannot call a model.`, { agent: p.agent, version: version.version });
    }
    if (p.model !== undefined) model = p.model;
  } else {
    model = spec.payload.model;
  }
  const key = spec.idempotencyKey ?? null;
  return {
    id: newTaskId(),
    kind: spec.kind,
    priority: spec.priority ?? 5,
    maxAttempts: spec.maxAttempts ?? LIMITS.defaultMaxAttempts,
    deadline: spec.deadline ?? null,
    idempotencyKey: key,
    specHash: key === null ? null : createHash('sha256').update(canonicalJson(spec)).digest('hex'),
    tenant: spec.tenant ?? null,
    webhook: spec.webhook ?? null,
    moduleHash,
    moduleSize,
    model,
    payload,
    labels: spec.labels ?? null,
    replication,
    traceparent,
  };
}

/** JSON with object keys sorted, so equal specs give equal digests whatever their key order. */
export function canonicalJson(value: unknown): string {
  if (value === null || typeof value !== 'object') return JSON.stringify(value) ?? 'null';
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  const obj = value as Record<string, unknown>;
  const keys = Object.keys(obj).filter((k) => obj[k] !== undefined).sort();
  return `{${keys.map((k) => `${JSON.stringify(k)}:${canonicalJson(obj[k])}`).join(',')}}`;
}

/** Server-sent events: the current state, then state changes and progress, then the final record. */
function streamEvents(ctx: Context, task: StoredTask, req: FastifyRequest, reply: FastifyReply): void {
  const res = openEventStream(reply);
  const write = (event: string, data: unknown): void => {
    res.write(`event: ${event}\ndata: ${JSON.stringify(data)}\n\n`);
  };
  write('state', { state: task.state, attempts: task.attempts, nodeId: task.nodeId, at: task.updatedAt });
  if (isTerminal(task.state)) {
    // A stream that joins after the end still gets the tokens (kept a while for ended tasks).
    for (const e of ctx.watch.backlog(task.id)) if (e.type === 'progress') write('progress', e);
    write('record', task);
    res.end();
    return;
  }
  let closed = false;
  const close = (): void => {
    if (closed) return;
    closed = true;
    off();
    clearInterval(keepAlive);
    res.end();
  };
  // Tokens the running attempt produced before this stream joined.
  for (const e of ctx.watch.backlog(task.id)) if (e.type === 'progress') write('progress', e);
  const off = ctx.watch.on(task.id as TaskId, (e: TaskEvent) => {
    if (e.type === 'record') {
      write('record', e.record);
      close();
    } else if (e.type === 'closing') {
      close();
    } else {
      write(e.type, e.type === 'state' ? { state: e.state, attempts: e.attempts, nodeId: e.nodeId, at: e.at, error: e.error ?? null } : e);
    }
  });
  const keepAlive = setInterval(() => res.write(': keep-alive\n\n'), SSE_KEEPALIVE_MS);
  keepAlive.unref();
  req.raw.on('close', close);
}
