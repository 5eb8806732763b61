/**
 * Conversation data for fine-tuning: JSON lines of {"messages":[{role,content},…]},
 * tokenized through the chat template so that the loss covers the assistant's
 * tokens only, then shuffled, split and cut into fixed-length rows.
 */
import { AppError } from '../../shared';
import { CHAT_ROLES, type ChatMessage, type ChatRole } from './chat';
import { seededShuffle } from './prng';
import type { ModelTokenizer } from './tokenizer';

export interface Conversation {
  messages: ChatMessage[];
  /** 1-based line number in the source text. */
  line: number;
}

function invalidLine(line: number, why: string): AppError {
  return new AppError('DATASET_INVALID', `Dataset line ${line}: ${why}. Each line must be {"messages":[{"role":…,"content":…},…]}.`, {
    line,
    reason: why,
  });
}

/** Parses JSON lines; blank lines are skipped, anything else that is not a conversation is DATASET_INVALID. */
export function parseConversations(text: string): Conversation[] {
  const out: Conversation[] = [];
  const lines = text.split('\n');
  for (const [i, rawLine] of lines.entries()) {
    const line = i + 1;
    const src = rawLine.trim();
    if (!src) continue;
    let value: unknown;
    try {
      value = JSON.parse(src);
    } catch (err) {
      throw invalidLine(line, `not JSON (${(err as Error).message})`);
    }
    if (typeof value !== 'object' || value === null || Array.isArray(value)) throw invalidLine(line, 'not a JSON object');
    const msgs = (value as { messages?: unknown }).messages;
    if (!Array.isArray(msgs) || msgs.length === 0) throw invalidLine(line, '"messages" is missing or empty');
    const messages: ChatMessage[] = [];
    for (const [j, m] of msgs.entries()) {
      if (typeof m !== 'object' || m === null) throw invalidLine(line, `message ${j} is not an object`);
      const { role, content } = m as { role?: unknown; content?: unknown };
      if (typeof role !== 'string' || !(CHAT_ROLES as readonly string[]).includes(role)) {
        throw invalidLine(line, `message ${j} has role ${JSON.stringify(role)}; use system, user or assistant`);
      }
      if (typeof content !== 'string') throw invalidLine(line, `message ${j} has no string content`);
      messages.push({ role: role as ChatRole, content });
    }
    if (!messages.some((m) => m.role === 'assistant')) throw invalidLine(line, 'no assistant message to learn from');
    out.push({ messages, line });
  }
  return out;
}

export interface TokenizedExample {
  ids: Int32Array;
  /** 1 where the token belongs to an assistant turn (content and its end-of-turn token). */
  assistantMask: Uint8Array;
}

function templateUnstable(): AppError {
  return new AppError(
    'MODEL_UNSUPPORTED',
    "The model's chat template does not render a conversation as a prefix of its continuation; the loss mask cannot be computed.",
  );
}

/**
 * Tokenizes one conversation. The text is split by rendering prefixes of the
 * conversation: what an assistant turn adds after the generation prompt is that
 * turn's span. Spans are tokenized separately, so each token belongs to one span.
 * Inside an assistant span the mask stops after its last end-of-turn (EOS) token,
 * leaving the template's trailing whitespace unmasked.
 */
export interface TokenizeOptions {
  /** Ids that end an assistant turn (default: the tokenizer's EOS). */
  endOfTurnIds?: readonly number[];
}

export function tokenizeConversation(tok: ModelTokenizer, messages: readonly ChatMessage[], options: TokenizeOptions = {}): TokenizedExample {
  const endIds = options.endOfTurnIds ?? (tok.eosId === null ? [] : [tok.eosId]);
  const ids: number[] = [];
  const mask: number[] = [];
  const push = (text: string, assistant: boolean): void => {
    if (!text) return;
    const part = tok.encode(text);
    let last = part.length;
    if (assistant) {
      const at = Math.max(-1, ...endIds.map((e) => part.lastIndexOf(e)));
      if (at >= 0) last = at + 1;
    }
    for (const [k, id] of part.entries()) {
      ids.push(id);
      mask.push(assistant && k < last ? 1 : 0);
    }
  };
  let prev = '';
  for (let i = 0; i < messages.length; i++) {
    const msg = messages[i] as ChatMessage;
    const full = tok.applyChatTemplate(messages.slice(0, i + 1));
    if (msg.role === 'assistant') {
      const prompt = tok.applyChatTemplate(messages.slice(0, i), { addGenerationPrompt: true });
      if (!prompt.startsWith(prev) || !full.startsWith(prompt)) throw templateUnstable();
      push(prompt.slice(prev.length), false);
      push(full.slice(prompt.length), true);
    } else {
      if (!full.startsWith(prev)) throw templateUnstable();
      push(full.slice(prev.length), false);
    }
    prev = full;
  }
  return { ids: Int32Array.from(ids), assistantMask: Uint8Array.from(mask) };
}

export function tokenizeConversations(
  tok: ModelTokenizer,
  conversations: readonly Conversation[],
  options: TokenizeOptions = {},
): TokenizedExample[] {
  return conversations.map((c) => tokenizeConversation(tok, c.messages, options));
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
 * truncated. The last batch may have fewer rows. Rows with no assistant target
 * after truncation are dropped.
 */
export function makeBatches(examples: readonly TokenizedExample[], opts: BatchOptions): Batch[] {
  const { seqLen, batchSize, padId } = opts;
  if (!(Number.isSafeInteger(seqLen) && seqLen > 0 && Number.isSafeInteger(batchSize) && batchSize > 0)) {
    throw new AppError('SCHEMA_VIOLATION', `seqLen (${seqLen}) and batchSize (${batchSize}) must be positive integers.`);
  }
  const usable = examples.filter((ex) => {
    const n = Math.min(ex.ids.length, seqLen + 1);
    for (let t = 1; t < n; t++) if (ex.assistantMask[t]) return true;
    return false;
  });
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

export interface PrepareOptions extends TokenizeOptions {
  seed: number;
  /** Fraction of conversations held out for evaluation, in [0, 1). */
  heldOutFraction: number;
  seqLen: number;
  batchSize: number;
  /** Default: the tokenizer's pad id, else 0. */
  padId?: number;
}

export interface PreparedDataset {
  train: Batch[];
  heldOut: Batch[];
  /** Conversations read, and tokens that carry loss in each split. */
  conversations: number;
  trainTargets: number;
  heldOutTargets: number;
}

/** JSON lines → shuffled, split, tokenized, batched: what a training run consumes. */
export function prepareDataset(text: string, tok: ModelTokenizer, opts: PrepareOptions): PreparedDataset {
  const conversations = parseConversations(text);
  const { train, heldOut } = splitHeldOut(conversations, opts.heldOutFraction, opts.seed);
  const batchOpts: BatchOptions = { seqLen: opts.seqLen, batchSize: opts.batchSize, padId: opts.padId ?? tok.padId ?? 0 };
  const trainBatches = makeBatches(tokenizeConversations(tok, train, opts), batchOpts);
  const heldOutBatches = makeBatches(tokenizeConversations(tok, heldOut, opts), batchOpts);
  const count = (bs: Batch[]): number => bs.reduce((n, b) => n + b.lossMask.reduce((a, m) => a + m, 0), 0);
  return {
    train: trainBatches,
    heldOut: heldOutBatches,
    conversations: conversations.length,
    trainTargets: count(trainBatches),
    heldOutTargets: count(heldOutBatches),
  };
}
