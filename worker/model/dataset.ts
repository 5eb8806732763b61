/**
 * Conversations as training rows: rendered through a chat template and tokenized so that the loss
 * covers the assistant's tokens only, each assistant turn ending in a token generation stops at,
 * the row starting as the model's tokenizer starts a sequence (BOS where it adds one); rows that
 * exceed the sequence length truncated or split by turns; fixed-length batches. Parsing the
 * JSON lines and the run's split live in worker/training (dataset.ts, prepare.ts).
 */
import { AppError } from '../../shared';
import { CHATML_TEMPLATE, ChatTemplate, type ChatMessage } from './chat';
import { seededShuffle } from './prng';
import type { ModelTokenizer } from './tokenizer';

export interface TokenizedExample {
  ids: Int32Array;
  /** 1 where the token belongs to an assistant turn (content and its end-of-turn token). */
  assistantMask: Uint8Array;
}

/** A template a run names instead of (or where there is no) the model's own: 'chatml' or a Jinja string. */
export type ChatTemplateChoice = 'chatml' | (string & {});

/**
 * The template training renders with: the one named, else the model's own; a model without one
 * and no name is CHAT_TEMPLATE_MISSING (never a silent ChatML, whose markers another vocabulary
 * splits into bytes).
 */
export function resolveChatTemplate(tok: ModelTokenizer, choice?: ChatTemplateChoice): ChatTemplate {
  if (choice === 'chatml') return new ChatTemplate(CHATML_TEMPLATE);
  if (choice !== undefined) return new ChatTemplate(choice);
  if (tok.modelChatTemplate) return tok.modelChatTemplate;
  throw new AppError(
    'CHAT_TEMPLATE_MISSING',
    "The model's tokenizer_config.json has no chat_template, so there is no telling how it marks turns. Name one: template 'chatml' or a Jinja template string.",
    { choices: ['chatml', '<jinja template>'] },
  );
}

function templateUnstable(): AppError {
  return new AppError(
    'MODEL_UNSUPPORTED',
    "The model's chat template does not render a conversation as a prefix of its continuation; the loss mask cannot be computed.",
  );
}

export interface TokenizeOptions {
  /** Default: resolveChatTemplate(tok) (the model's own, or CHAT_TEMPLATE_MISSING). */
  template?: ChatTemplate;
  /**
   * Ids generation stops at, first the one to append (worker/model's LoadedModel.eosTokenIds:
   * generation_config.json, config.json, tokenizer_config.json). Default: the tokenizer's EOS.
   */
  eosIds?: readonly number[];
}

/**
 * Tokenizes one conversation. The text is split by rendering prefixes of the conversation: what
 * an assistant turn adds after the generation prompt is that turn's span. Spans are tokenized
 * separately, so each token belongs to one span. An assistant span that holds a stop id (the
 * template's end-of-turn, e.g. <|im_end|> or <|eot_id|>) is masked up to its last one; one that
 * holds none gets the model's EOS after the message content, masked, so the model learns to stop.
 * The row starts with the tokenizer's prefix (BOS) unless the template already wrote it.
 */
export function tokenizeConversation(tok: ModelTokenizer, messages: readonly ChatMessage[], options: TokenizeOptions = {}): TokenizedExample {
  const template = options.template ?? resolveChatTemplate(tok);
  const stopIds = options.eosIds ?? (tok.eosId === null ? [] : [tok.eosId]);
  const variables = { bos_token: tok.special.bos ?? '', eos_token: tok.special.eos ?? '' };
  const render = (msgs: readonly ChatMessage[], addGenerationPrompt: boolean): string => template.render(msgs, { addGenerationPrompt, variables });
  const ids: number[] = [];
  const mask: number[] = [];
  const push = (part: readonly number[], assistant: boolean): void => {
    for (const id of part) {
      ids.push(id);
      mask.push(assistant ? 1 : 0);
    }
  };
  const pushAssistant = (text: string, content: string): void => {
    if (!text) return; // the template renders nothing for this turn: nothing to learn, not even its end
    const part = tok.encode(text);
    const at = Math.max(-1, ...stopIds.map((e) => part.lastIndexOf(e)));
    if (at >= 0) {
      push(part.slice(0, at + 1), true);
      push(part.slice(at + 1), false);
      return;
    }
    const eos = stopIds[0];
    if (eos === undefined) {
      throw new AppError('MODEL_UNSUPPORTED', 'The model declares no EOS token (generation_config.json, config.json or tokenizer_config.json), so a trained turn cannot end; add eos_token_id to config.json.');
    }
    const cut = content ? text.lastIndexOf(content) : -1;
    const end = cut >= 0 ? cut + content.length : text.length;
    push(tok.encode(text.slice(0, end)), true);
    push([eos], true);
    push(tok.encode(text.slice(end)), false);
  };
  let prev = '';
  for (let i = 0; i < messages.length; i++) {
    const msg = messages[i] as ChatMessage;
    const full = render(messages.slice(0, i + 1), false);
    if (msg.role === 'assistant') {
      const prompt = render(messages.slice(0, i), true);
      if (!prompt.startsWith(prev) || !full.startsWith(prompt)) throw templateUnstable();
      push(tok.encode(prompt.slice(prev.length)), false);
      pushAssistant(full.slice(prompt.length), msg.content);
    } else {
      if (!full.startsWith(prev)) throw templateUnstable();
      push(tok.encode(full.slice(prev.length)), false);
    }
    prev = full;
  }
  const withPrefix = tok.withPrefix(ids);
  const added = withPrefix.length - ids.length;
  return { ids: Int32Array.from(withPrefix), assistantMask: Uint8Array.from([...new Array<number>(added).fill(0), ...mask]) };
}

/** Assistant tokens that a row of `maxTokens` tokens keeps as targets (positions 1 … maxTokens − 1). */
export function targetCount(ex: TokenizedExample, maxTokens = Infinity): number {
  const n = Math.min(ex.ids.length, maxTokens);
  let count = 0;
  for (let t = 1; t < n; t++) count += ex.assistantMask[t] as number;
  return count;
}

function truncate(ex: TokenizedExample, maxTokens: number): TokenizedExample {
  return { ids: ex.ids.slice(0, maxTokens), assistantMask: ex.assistantMask.slice(0, maxTokens) };
}

/** What to do with a conversation longer than a row. */
export type OverflowMode = 'truncate' | 'split' | 'drop';
export const OVERFLOW_MODES: readonly OverflowMode[] = ['truncate', 'split', 'drop'];

/**
 * kept: one row, whole; split: several rows by turns, none cut; truncated: at least one row cut
 * (or a piece lost); dropped: no row with a target is left.
 */
export type FitOutcome = 'kept' | 'split' | 'truncated' | 'dropped';

export interface FittedConversation {
  rows: TokenizedExample[];
  outcome: FitOutcome;
}

/**
 * Fits a conversation to rows of at most `seqLen + 1` tokens (a row gives seqLen inputs and their
 * next tokens). 'split' cuts it between turns: leading system messages open every piece, each
 * piece ends with an assistant turn, and as many turns go in a piece as fit; a single turn that
 * does not fit is truncated. 'truncate' keeps the first seqLen + 1 tokens, 'drop' drops it.
 */
export function fitConversation(
  tok: ModelTokenizer,
  messages: readonly ChatMessage[],
  seqLen: number,
  overflow: OverflowMode,
  options: TokenizeOptions = {},
  whole: TokenizedExample = tokenizeConversation(tok, messages, options),
): FittedConversation {
  const max = seqLen + 1;
  if (whole.ids.length <= max) return targetCount(whole) > 0 ? { rows: [whole], outcome: 'kept' } : { rows: [], outcome: 'dropped' };
  if (overflow === 'drop') return { rows: [], outcome: 'dropped' };
  if (overflow === 'truncate') {
    const cut = truncate(whole, max);
    return targetCount(cut) > 0 ? { rows: [cut], outcome: 'truncated' } : { rows: [], outcome: 'dropped' };
  }
  let h = 0;
  while (h < messages.length && messages[h]?.role === 'system') h++;
  const head = messages.slice(0, h);
  const turns: ChatMessage[][] = [];
  let current: ChatMessage[] = [];
  for (const m of messages.slice(h)) {
    current.push(m);
    if (m.role === 'assistant') {
      turns.push(current);
      current = [];
    }
  }
  const rows: TokenizedExample[] = [];
  let cutOrLost = false;
  for (let i = 0; i < turns.length; ) {
    let j = i + 1;
    let best = tokenizeConversation(tok, [...head, ...turns.slice(i, j).flat()], options);
    while (j < turns.length && best.ids.length <= max) {
      const next = tokenizeConversation(tok, [...head, ...turns.slice(i, j + 1).flat()], options);
      if (next.ids.length > max) break;
      best = next;
      j++;
    }
    if (best.ids.length > max) {
      best = truncate(best, max);
      cutOrLost = true;
    }
    if (targetCount(best) > 0) rows.push(best);
    else cutOrLost = true;
    i = j;
  }
  if (!rows.length) return { rows, outcome: 'dropped' };
  return { rows, outcome: cutOrLost ? 'truncated' : 'split' };
}

/** Deterministic shuffle (mulberry32 Fisher–Yates). */
export function shuffleExamples<T>(items: readonly T[], seed: number): T[] {
  return seededShuffle(items, seed);
}

/**
 * Shuffles with the seed and holds out `fraction` of the items (rounded, at least
 * one when fraction > 0 and there are two or more items).
 */
export function splitHeldOut<T>(items: readonly T[], fraction: number, seed: number): { train: T[]; heldOut: T[] } {
  if (!(fraction >= 0 && fraction < 1)) throw new AppError('SCHEMA_VIOLATION', `Held-out fraction ${fraction} must be in [0, 1).`);
  const shuffled = seededShuffle(items, seed);
  let n = Math.round(shuffled.length * fraction);
  if (fraction > 0 && n === 0 && shuffled.length >= 2) n = 1;
  return { heldOut: shuffled.slice(0, n), train: shuffled.slice(n) };
}

export interface Batch {
  /** [rows, seqLen] row-major. */
  inputIds: Int32Array;
  /** Next token for each position: targets[t] = ids[t + 1]; padding gets padId. */
  targets: Int32Array;
  /** 1 where targets[t] is an assistant token, else 0 (padding and prompts). */
  lossMask: Float32Array;
  rows: number;
  seqLen: number;
}

export interface BatchOptions {
  seqLen: number;
  batchSize: number;
  padId: number;
}

/**
 * One example per row, right-padded; an example longer than seqLen + 1 tokens is
 * truncated (fitConversation decides that beforehand and counts it). The last batch
 * may have fewer rows. Rows with no assistant target after truncation are dropped.
 */
export function makeBatches(examples: readonly TokenizedExample[], opts: BatchOptions): Batch[] {
  const { seqLen, batchSize, padId } = opts;
  if (!(Number.isSafeInteger(seqLen) && seqLen > 0 && Number.isSafeInteger(batchSize) && batchSize > 0)) {
    throw new AppError('SCHEMA_VIOLATION', `seqLen (${seqLen}) and batchSize (${batchSize}) must be positive integers.`);
  }
  const usable = examples.filter((ex) => targetCount(ex, seqLen + 1) > 0);
  const batches: Batch[] = [];
  for (let start = 0; start < usable.length; start += batchSize) {
    const group = usable.slice(start, start + batchSize);
    const rows = group.length;
    const inputIds = new Int32Array(rows * seqLen).fill(padId);
    const targets = new Int32Array(rows * seqLen).fill(padId);
    const lossMask = new Float32Array(rows * seqLen);
    for (const [r, ex] of group.entries()) {
      const n = Math.min(ex.ids.length, seqLen + 1);
      const base = r * seqLen;
      for (let t = 0; t + 1 < n; t++) {
        inputIds[base + t] = ex.ids[t] as number;
        targets[base + t] = ex.ids[t + 1] as number;
        lossMask[base + t] = ex.assistantMask[t + 1] as number;
      }
      if (n === 1) inputIds[base] = ex.ids[0] as number;
    }
    batches.push({ inputIds, targets, lossMask, rows, seqLen });
  }
  return batches;
}

export function tokenizeConversations(
  tok: ModelTokenizer,
  conversations: readonly { messages: readonly ChatMessage[] }[],
  options: TokenizeOptions = {},
): TokenizedExample[] {
  const template = options.template ?? resolveChatTemplate(tok);
  return conversations.map((c) => tokenizeConversation(tok, c.messages, { ...options, template }));
}
