/**
 * OpenAI request bodies → `generate` task specs: one task per choice (n per
 * prompt), the model id `BASE:ADAPTER` split into model and adapter, OpenAI's
 * sampling fields renamed to the payload's. Pure: no I/O.
 */
import { AppError, NAME_PATTERN, type ChatMessage, type GeneratePayload, type ResponseFormat, type TaskSpec } from '../../shared';
import { compileResponseFormat } from '../../worker/inference/constrain';
import { checkCompiled } from '../validate';
import { badParam } from './errors';
import {
  MAX_GENERATIONS,
  ChatCompletionRequestSchema,
  CompletionRequestSchema,
  type ChatCompletionRequest,
  type ChatMessageIn,
  type CompletionRequest,
} from './schemas';

const NAME = new RegExp(NAME_PATTERN);
/** OpenAI's default `max_tokens` for `/v1/completions`. */
export const COMPLETIONS_DEFAULT_MAX_TOKENS = 16;

export interface ModelId {
  /** As the caller wrote it; echoed in every answer. */
  id: string;
  base: string;
  adapter?: string;
}

/** One choice of the answer: its index and which prompt it answers. */
export interface ChoicePlan {
  index: number;
  prompt: number;
}

export interface Plan {
  model: ModelId;
  stream: boolean;
  includeUsage: boolean;
  specs: TaskSpec[];
  choices: ChoicePlan[];
  /** Chat: the answer's logprobs are asked for. Completions: how many alternatives (null: none). */
  logprobs: number | null;
}

export function parseModelId(id: string): ModelId {
  const colon = id.indexOf(':');
  const base = colon < 0 ? id : id.slice(0, colon);
  const adapter = colon < 0 ? undefined : id.slice(colon + 1);
  if (!NAME.test(base) || (adapter !== undefined && !NAME.test(adapter))) {
    throw badParam('model', `The model \`${id}\` does not exist; a model id is BASE or BASE:ADAPTER (GET /v1/models lists them).`, 'MODEL_NOT_FOUND');
  }
  return adapter === undefined ? { id, base } : { id, base, adapter };
}

export function planChat(body: unknown): Plan {
  const req = checkCompiled(ChatCompletionRequestSchema, body);
  refuseUnsupported(req);
  if (req.tools?.length) throw badParam('tools', 'Tool calls are not supported here; send plain messages.');
  if (req.top_logprobs != null && !req.logprobs) throw badParam('top_logprobs', 'top_logprobs needs logprobs: true.');
  const model = parseModelId(req.model);
  const messages = req.messages.map(toMessage);
  const logprobs = req.logprobs ? (req.top_logprobs ?? 0) : null;
  const maxNewTokens = req.max_completion_tokens ?? req.max_tokens ?? undefined;
  const specs: TaskSpec[] = [];
  const choices: ChoicePlan[] = [];
  const n = req.n ?? 1;
  for (let i = 0; i < n; i++) {
    specs.push(spec(req, model, { messages }, i, maxNewTokens, logprobs));
    choices.push({ index: i, prompt: 0 });
  }
  return { model, stream: req.stream ?? false, includeUsage: req.stream_options?.include_usage ?? false, specs, choices, logprobs };
}

export function planCompletion(body: unknown): Plan {
  const req = checkCompiled(CompletionRequestSchema, body);
  refuseUnsupported(req);
  if (req.echo) throw badParam('echo', 'echo is not supported; the prompt is not repeated in the answer.');
  if (req.suffix) throw badParam('suffix', 'suffix (insertion) is not supported.');
  const n = req.n ?? 1;
  if (req.best_of != null && req.best_of !== n) throw badParam('best_of', 'best_of must equal n (or be left out): each choice is one generation.');
  const model = parseModelId(req.model);
  const prompts = typeof req.prompt === 'string' ? [req.prompt] : req.prompt;
  if (prompts.length * n > MAX_GENERATIONS) {
    throw badParam('n', `prompts × n is ${prompts.length * n}; send at most ${MAX_GENERATIONS} generations per request.`);
  }
  const logprobs = req.logprobs ?? null;
  const maxNewTokens = req.max_tokens ?? COMPLETIONS_DEFAULT_MAX_TOKENS;
  const specs: TaskSpec[] = [];
  const choices: ChoicePlan[] = [];
  prompts.forEach((prompt, p) => {
    for (let i = 0; i < n; i++) {
      specs.push(spec(req, model, { prompt }, i, maxNewTokens, logprobs));
      choices.push({ index: p * n + i, prompt: p });
    }
  });
  return { model, stream: req.stream ?? false, includeUsage: req.stream_options?.include_usage ?? false, specs, choices, logprobs };
}

type CommonRequest = ChatCompletionRequest | CompletionRequest;

function refuseUnsupported(req: CommonRequest): void {
  if (req.frequency_penalty) throw badParam('frequency_penalty', 'frequency_penalty is not supported; leave it out or send 0.');
  if (req.presence_penalty) throw badParam('presence_penalty', 'presence_penalty is not supported; leave it out or send 0.');
  if (req.logit_bias && Object.keys(req.logit_bias).length) throw badParam('logit_bias', 'logit_bias is not supported; leave it out.');
}

function spec(
  req: CommonRequest,
  model: ModelId,
  input: { prompt: string } | { messages: ChatMessage[] },
  i: number,
  maxNewTokens: number | undefined,
  logprobs: number | null,
): TaskSpec {
  const payload: GeneratePayload = { model: model.base, ...input };
  if (model.adapter) payload.adapter = model.adapter;
  if (maxNewTokens !== undefined) payload.maxNewTokens = maxNewTokens;
  if (req.temperature != null) payload.temperature = req.temperature;
  if (req.top_p != null) payload.topP = req.top_p;
  // Each choice gets its own seed so n choices differ, and the same request repeats them.
  if (req.seed != null) payload.seed = (req.seed + i) % 0x1_0000_0000;
  if (req.stop != null) {
    const stop = typeof req.stop === 'string' ? [req.stop] : req.stop;
    if (stop.length) payload.stop = stop;
  }
  if (logprobs !== null) payload.logprobs = logprobs;
  const format = responseFormat(req.response_format ?? null);
  if (format) payload.responseFormat = format;
  const out: TaskSpec = { kind: 'generate', payload };
  if (req.priority !== undefined) out.priority = req.priority;
  return out;
}

function responseFormat(rf: CommonRequest['response_format']): ResponseFormat | null {
  if (!rf || rf.type === 'text') return null;
  if (rf.type === 'json_object') return { type: 'json_object' };
  const schema = rf.json_schema.schema;
  if (schema === undefined) throw badParam('response_format.json_schema.schema', 'json_schema needs a schema (a JSON Schema object).');
  const format: ResponseFormat = { type: 'json_schema', schema, name: rf.json_schema.name };
  // Refused here, before a task is queued, when the schema is outside what constrained decoding supports.
  try {
    compileResponseFormat(format);
  } catch (err) {
    if (err instanceof AppError) throw new AppError(err.code, err.message, { ...err.details, param: 'response_format.json_schema.schema' });
    throw err;
  }
  return format;
}

function toMessage(m: ChatMessageIn, i: number): ChatMessage {
  const role = m.role === 'developer' ? 'system' : m.role;
  if (m.content === null && m.role !== 'assistant') throw badParam(`messages[${i}].content`, 'Only an assistant message may have null content.');
  const content = m.content === null ? '' : typeof m.content === 'string' ? m.content : m.content.map((p) => p.text).join('');
  return { role, content };
}
