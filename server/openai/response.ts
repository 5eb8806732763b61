/**
 * OpenAI's answer objects built from `generate` results: chat completions and
 * (legacy) text completions, whole or as stream chunks, with logprobs in each
 * API's own shape and usage. Pure: no I/O.
 */
import type { GenerateResult, TokenLogprob } from '../../shared';
import type { ChoicePlan } from './request';

export type Api = 'chat' | 'completion';

export interface AnswerMeta {
  id: string;
  /** Unix seconds. */
  created: number;
  model: string;
  /** Which backend and device served the first choice, e.g. `engine-webgpu`. */
  systemFingerprint: string | null;
}

export interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
}

export interface ChatTokenLogprob {
  token: string;
  logprob: number;
  bytes: number[];
  top_logprobs: { token: string; logprob: number; bytes: number[] }[];
}

export interface ChatLogprobs {
  content: ChatTokenLogprob[];
  refusal: null;
}

export interface CompletionLogprobs {
  tokens: string[];
  token_logprobs: number[];
  top_logprobs: Record<string, number>[] | null;
  text_offset: number[];
}

export type FinishReason = GenerateResult['finishReason'];

export const ID_PREFIX: Record<Api, string> = { chat: 'chatcmpl-', completion: 'cmpl-' };

const bytes = (s: string): number[] => [...Buffer.from(s, 'utf8')];

export function chatLogprobs(list: readonly TokenLogprob[]): ChatLogprobs {
  return {
    content: list.map((t) => ({
      token: t.token,
      logprob: t.logprob,
      bytes: bytes(t.token),
      top_logprobs: (t.top ?? []).map((a) => ({ token: a.token, logprob: a.logprob, bytes: bytes(a.token) })),
    })),
    refusal: null,
  };
}

/**
 * The legacy shape: parallel arrays, alternatives as `{ token: logprob }` (null when
 * none were asked for), `text_offset` counted in characters from the start of the
 * completion (`offset` is where this piece starts, for stream chunks).
 */
export function completionLogprobs(list: readonly TokenLogprob[], alternatives: number, offset = 0): CompletionLogprobs {
  const text_offset: number[] = [];
  let at = offset;
  for (const t of list) {
    text_offset.push(at);
    at += t.token.length;
  }
  return {
    tokens: list.map((t) => t.token),
    token_logprobs: list.map((t) => t.logprob),
    top_logprobs: alternatives > 0 ? list.map((t) => Object.fromEntries((t.top ?? []).map((a) => [a.token, a.logprob]))) : null,
    text_offset,
  };
}

/** Prompt tokens once per prompt (not once per choice), completion tokens summed over the choices. */
export function usageOf(choices: readonly ChoicePlan[], results: readonly GenerateResult[]): Usage {
  const prompts = new Map<number, number>();
  let completion = 0;
  choices.forEach((c, i) => {
    const r = results[i]!;
    if (!prompts.has(c.prompt)) prompts.set(c.prompt, r.usage.promptTokens);
    completion += r.usage.completionTokens;
  });
  const prompt = [...prompts.values()].reduce((a, b) => a + b, 0);
  return { prompt_tokens: prompt, completion_tokens: completion, total_tokens: prompt + completion };
}

export function fingerprint(r: GenerateResult): string {
  return `${r.backend}-${r.device}`;
}

/** A whole answer: `choices[i]` answers `results[i]`. */
export function answer(
  api: Api,
  meta: AnswerMeta,
  choices: readonly ChoicePlan[],
  results: readonly GenerateResult[],
  logprobs: number | null,
): Record<string, unknown> {
  const out = choices.map((c, i) => {
    const r = results[i]!;
    const lp = logprobs === null ? null : (r.logprobs ?? []);
    return api === 'chat'
      ? {
          index: c.index,
          message: { role: 'assistant', content: r.text, refusal: null },
          logprobs: lp && chatLogprobs(lp),
          finish_reason: r.finishReason,
        }
      : { index: c.index, text: r.text, logprobs: lp && completionLogprobs(lp, logprobs ?? 0), finish_reason: r.finishReason };
  });
  out.sort((a, b) => a.index - b.index);
  return {
    id: meta.id,
    object: api === 'chat' ? 'chat.completion' : 'text_completion',
    created: meta.created,
    model: meta.model,
    system_fingerprint: meta.systemFingerprint,
    choices: out,
    usage: usageOf(choices, results),
  };
}

export interface ChunkPiece {
  index: number;
  /** Chat only: the first chunk of a choice carries the role. */
  role?: 'assistant';
  text?: string;
  logprobs?: readonly TokenLogprob[];
  /** Completions: where this piece's text starts in the completion, for text_offset. */
  offset?: number;
  finish?: FinishReason;
}

/** One stream chunk holding one choice's piece. `usage: null` is set on every chunk when the caller asked for a usage chunk. */
export function chunk(api: Api, meta: AnswerMeta, piece: ChunkPiece, alternatives: number | null, withUsage: boolean): Record<string, unknown> {
  const lp = alternatives === null || !piece.logprobs ? null : piece.logprobs;
  let choice: Record<string, unknown>;
  if (api === 'chat') {
    const delta: Record<string, unknown> = {};
    if (piece.role) delta.role = piece.role;
    if (piece.text !== undefined) delta.content = piece.text;
    choice = { index: piece.index, delta, logprobs: lp && chatLogprobs(lp), finish_reason: piece.finish ?? null };
  } else {
    choice = {
      index: piece.index,
      text: piece.text ?? '',
      logprobs: lp && completionLogprobs(lp, alternatives ?? 0, piece.offset ?? 0),
      finish_reason: piece.finish ?? null,
    };
  }
  const out: Record<string, unknown> = {
    id: meta.id,
    object: api === 'chat' ? 'chat.completion.chunk' : 'text_completion',
    created: meta.created,
    model: meta.model,
    system_fingerprint: meta.systemFingerprint,
    choices: [choice],
  };
  if (withUsage) out.usage = null;
  return out;
}

/** The last chunk when `stream_options.include_usage`: no choices, the request's usage. */
export function usageChunk(api: Api, meta: AnswerMeta, usage: Usage): Record<string, unknown> {
  return {
    id: meta.id,
    object: api === 'chat' ? 'chat.completion.chunk' : 'text_completion',
    created: meta.created,
    model: meta.model,
    system_fingerprint: meta.systemFingerprint,
    choices: [],
    usage,
  };
}
