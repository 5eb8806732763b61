/**
 * Runs a planned OpenAI request through the pool: its tasks are journaled the
 * same way as `POST /v1/tasks` (so durability, priority and retries are the
 * same), then the answer waits for them to end, or streams their tokens as
 * server-sent events. A caller that goes away cancels its tasks, so the nodes
 * free the batch slots.
 */
import type { FastifyReply } from 'fastify';
import {
  AppError,
  TERMINAL_STATES,
  isErrorCode,
  type GenerateResult,
  type ProgressMessage,
  type TaskId,
  type TokenLogprob,
} from '../../shared';
import type { Context } from '../context';
import { openEventStream } from '../http';
import type { StoredTask } from '../journal';
import { submitSpecs } from '../routes/tasks';
import { checkSpec } from '../validate';
import type { TaskEvent } from '../watch';
import { openAiError } from './errors';
import type { Plan } from './request';
import { ID_PREFIX, answer, chunk, fingerprint, usageChunk, usageOf, type AnswerMeta, type Api, type ChunkPiece } from './response';

const SSE_KEEPALIVE_MS = 15_000;
const DISCONNECTED = 'The client disconnected before the completion ended.';

type TokensProgress = Extract<ProgressMessage['progress'], { kind: 'tokens' }>;

/** Journals the plan's tasks; answers their ids (the `x-task-ids` header names them for GET /v1/tasks/:id). */
function submit(ctx: Context, plan: Plan, traceHeader: unknown): TaskId[] {
  if (ctx.shuttingDown()) throw new AppError('SHUTTING_DOWN', 'The coordinator is shutting down; retry on another one or after it restarts.');
  const specs = plan.specs.map((s) => checkSpec(s));
  return submitSpecs(ctx, specs, false, traceHeader).map((o) => o.id as TaskId);
}

function metaFor(ctx: Context, api: Api, plan: Plan, ids: readonly TaskId[]): AnswerMeta {
  return { id: ID_PREFIX[api] + ids[0]!, created: Math.floor(ctx.clock.now() / 1000), model: plan.model.id, systemFingerprint: null };
}

/** The task's error as an AppError (codes a node sent that the table does not know become INTERNAL). */
function failure(record: StoredTask): AppError {
  if (record.state === 'cancelled') return new AppError('CANCELLED', record.error?.message ?? 'The task was cancelled.');
  const e = record.error;
  if (!e) return new AppError('INTERNAL', `Task ${record.id} ended ${record.state} without an error.`);
  return new AppError(isErrorCode(e.code) ? e.code : 'INTERNAL', e.message, { taskId: record.id, ...(e.details ?? {}) });
}

function cancelAll(ctx: Context, ids: readonly TaskId[], reason: string): void {
  for (const id of ids) ctx.scheduler.cancel(id, reason);
}

/** Non-streamed: waits for every task, then answers one completion object (or throws the first failure). */
export async function completeWhole(ctx: Context, api: Api, plan: Plan, reply: FastifyReply): Promise<Record<string, unknown>> {
  const ids = submit(ctx, plan, reply.request.headers.traceparent);
  void reply.header('x-task-ids', ids.join(','));
  const meta = metaFor(ctx, api, plan, ids);
  const records = await new Promise<StoredTask[]>((resolve, reject) => {
    const ended = new Map<TaskId, StoredTask>();
    let settled = false;
    const offs: Array<() => void> = [];
    const settle = (fn: () => void): void => {
      if (settled) return;
      settled = true;
      for (const off of offs) off();
      reply.raw.off('close', onClose);
      fn();
    };
    const onRecord = (record: StoredTask): void => {
      if (settled) return;
      if (record.state !== 'succeeded') {
        settle(() => reject(failure(record)));
        cancelAll(ctx, ids, `Another choice of the same request failed (${record.error?.code ?? record.state}).`);
        return;
      }
      ended.set(record.id, record);
      if (ended.size === ids.length) settle(() => resolve(ids.map((id) => ended.get(id)!)));
    };
    const onClose = (): void => {
      if (settled || reply.raw.writableFinished) return;
      settle(() => reject(new AppError('CANCELLED', DISCONNECTED)));
      cancelAll(ctx, ids, DISCONNECTED);
    };
    for (const id of ids) {
      offs.push(
        ctx.watch.on(id, (e) => {
          if (e.type === 'record') onRecord(e.record);
          else if (e.type === 'closing') settle(() => reject(new AppError('SHUTTING_DOWN', `The coordinator is shutting down; the tasks stay journaled (GET /v1/tasks/${id}).`)));
        }),
      );
    }
    reply.raw.on('close', onClose);
    for (const id of ids) {
      const record = ctx.journal.getTask(id);
      if (record && TERMINAL_STATES.includes(record.state)) onRecord(record);
    }
  });
  const results = records.map((r) => r.result as GenerateResult);
  return answer(api, { ...meta, systemFingerprint: fingerprint(results[0]!) }, plan.choices, results, plan.logprobs);
}

/** What one choice has streamed, and what the attempt now running has produced. */
interface ChoiceStream {
  index: number;
  taskId: TaskId;
  attempt: number;
  /** Text sent to the client. */
  sent: string;
  sentLogprobs: number;
  /** The running attempt's text and logprobs (a retried task starts again from nothing). */
  acc: string;
  accLogprobs: TokenLogprob[];
  result: GenerateResult | null;
}

/**
 * Streamed: `data: {chunk}` per token progress, interleaved by choice index; a
 * final chunk per choice with its finish_reason; the usage chunk when asked;
 * `data: [DONE]`. A failure is one `data: {error}` event, then the stream ends.
 */
export function completeStream(ctx: Context, api: Api, plan: Plan, reply: FastifyReply): void {
  const ids = submit(ctx, plan, reply.request.headers.traceparent);
  const meta = metaFor(ctx, api, plan, ids);
  const alternatives = plan.logprobs;
  const res = openEventStream(reply, { 'x-task-ids': ids.join(',') });
  const send = (data: unknown): void => {
    res.write(`data: ${JSON.stringify(data)}\n\n`);
  };
  const piece = (p: ChunkPiece): void => send(chunk(api, meta, p, alternatives, plan.includeUsage));

  const choices: ChoiceStream[] = plan.choices.map((c, i) => ({
    index: c.index,
    taskId: ids[i]!,
    attempt: 0,
    sent: '',
    sentLogprobs: 0,
    acc: '',
    accLogprobs: [],
    result: null,
  }));
  let done = false;
  const offs: Array<() => void> = [];
  const keepAlive = setInterval(() => res.write(': keep-alive\n\n'), SSE_KEEPALIVE_MS);
  keepAlive.unref();
  const finish = (error: AppError | null): void => {
    if (done) return;
    done = true;
    for (const off of offs) off();
    clearInterval(keepAlive);
    if (error) {
      send(openAiError(error).body);
    } else {
      if (plan.includeUsage) send(usageChunk(api, meta, usageOf(plan.choices, choices.map((c) => c.result!))));
      res.write('data: [DONE]\n\n');
    }
    res.end();
  };
  const fail = (error: AppError, reason: string): void => {
    finish(error);
    cancelAll(ctx, ids, reason);
  };

  /** Sends whatever of the attempt's text goes past what the client already has. */
  const advance = (c: ChoiceStream, text: string, logprobs: readonly TokenLogprob[]): void => {
    if (!text.startsWith(c.sent) && !c.sent.startsWith(text)) {
      fail(
        new AppError('INFERENCE_FAILED', `Task ${c.taskId} was retried after part of its text was streamed, and the retry wrote different text; send a seed or temperature 0 so a retry repeats it, or send the request again.`, { taskId: c.taskId }),
        'The stream ended: a retry diverged from the text already streamed.',
      );
      return;
    }
    if (text.length <= c.sent.length && logprobs.length <= c.sentLogprobs) return;
    const delta = text.length > c.sent.length ? text.slice(c.sent.length) : '';
    const p: ChunkPiece = { index: c.index, text: delta, offset: c.sent.length };
    if (logprobs.length > c.sentLogprobs) p.logprobs = logprobs.slice(c.sentLogprobs);
    c.sent = text.length > c.sent.length ? text : c.sent;
    c.sentLogprobs = Math.max(c.sentLogprobs, logprobs.length);
    piece(p);
  };

  const onEvent = (c: ChoiceStream, e: TaskEvent): void => {
    if (done) return;
    switch (e.type) {
      case 'state':
        // A new attempt begins from nothing; what it writes is matched against what was sent.
        if (e.state === 'leased' && e.attempts !== c.attempt) {
          c.attempt = e.attempts;
          c.acc = '';
          c.accLogprobs = [];
        }
        return;
      case 'progress': {
        const progress = e.progress as ProgressMessage['progress'];
        if (progress.kind !== 'tokens') return;
        const tokens: TokensProgress = progress;
        c.acc += tokens.text;
        if (tokens.logprobs) c.accLogprobs.push(...tokens.logprobs);
        advance(c, c.acc, c.accLogprobs);
        return;
      }
      case 'record': {
        const record = e.record;
        if (record.state !== 'succeeded') {
          fail(failure(record), `Another choice of the same request failed (${record.error?.code ?? record.state}).`);
          return;
        }
        const result = record.result as GenerateResult;
        advance(c, result.text, result.logprobs ?? []);
        if (done) return;
        c.result = result;
        piece({ index: c.index, finish: result.finishReason });
        if (choices.every((x) => x.result)) finish(null);
        return;
      }
      case 'closing':
        finish(new AppError('SHUTTING_DOWN', `The coordinator is shutting down; the tasks stay journaled (GET /v1/tasks/${c.taskId}).`));
        return;
    }
  };

  for (const c of choices) offs.push(ctx.watch.on(c.taskId, (e) => onEvent(c, e)));
  res.on('close', () => {
    if (done) return;
    done = true;
    for (const off of offs) off();
    clearInterval(keepAlive);
    cancelAll(ctx, ids, DISCONNECTED);
  });
  if (api === 'chat') for (const c of choices) piece({ index: c.index, role: 'assistant', text: '' });
  for (const c of choices) {
    const record = ctx.journal.getTask(c.taskId);
    if (record && TERMINAL_STATES.includes(record.state)) onEvent(c, { type: 'record', record });
  }
}
