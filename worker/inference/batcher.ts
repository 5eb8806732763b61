/**
 * Continuous batching over one BatchDecoder. A request joins the running batch at the next step
 * (its prompt prefilled into a free slot) and leaves when it stops (the slot freed); requests
 * beyond `maxSlots` wait in FIFO order. Each step is at most one `prefill` (the newcomers) and one
 * `decode` (every active sequence), never two decoder calls at once. Each request samples with its
 * own parameters and its own seeded generator, so its tokens do not depend on what shares the batch.
 */
import { AppError, isErrorCode, type TokenLogprob } from '../../shared';
import { mulberry32, type Rng } from '../model';
import { compileResponseFormat, JsonConstraint, vocabularyFromDecode, type ConstraintVocabulary } from './constrain';
import { IncrementalDetokenizer, type DecodeFn } from './detokenize';
import { tokenLogprob } from './logprobs';
import { sampleToken, type SamplingParams } from './sampling';
import { StopMatcher } from './stop';
import type { BatchDecoder, DecodeEntry, GenerationProgress, GenerationRequest, PrefillEntry } from './types';

export type FinishReason = 'stop' | 'length';

export interface GenerationOutput {
  /** Generated ids; the stop token that ended the sequence is included. */
  tokens: number[];
  /** The text, without special tokens and with any stop string cut off. */
  text: string;
  finishReason: FinishReason;
  promptTokens: number;
  completionTokens: number;
  logprobs?: TokenLogprob[];
  /** From submit (queueing included) to the first generated token. */
  ttftMs: number;
  durationMs: number;
}

export interface BatcherOptions {
  decoder: BatchDecoder;
  /** The model tokenizer's decode (special tokens are removed before it is called). */
  decode: DecodeFn;
  /** Ids never shown in text (BOS, EOS, chat markers, padding). */
  specialIds?: Iterable<number>;
  /** A token's text for logprobs; default `decode([id])`. */
  tokenText?: (id: number) => string;
}

export interface BatcherStats {
  active: number;
  waiting: number;
  maxSlots: number;
  /** Tokens generated since the batcher started. */
  tokensGenerated: number;
}

interface Sequence {
  req: GenerationRequest;
  resolve: (out: GenerationOutput) => void;
  reject: (err: AppError) => void;
  slot: number;
  params: SamplingParams;
  rng: Rng;
  stopIds: ReadonlySet<number>;
  detok: IncrementalDetokenizer;
  stop: StopMatcher;
  constraint: JsonConstraint | null;
  /** Most tokens it may generate: maxNewTokens, or what the slot's positions leave. */
  limit: number;
  tokens: number[];
  text: string;
  logprobs: TokenLogprob[] | null;
  startedAt: number;
  ttftMs: number | null;
  cancelled: AppError | null;
  done: boolean;
  unlisten: () => void;
}

const now = (): number => performance.now();

/** Lets timers, socket reads and abort handlers run between steps (setImmediate in Node, a message in browsers). */
function yieldToEventLoop(): Promise<void> {
  if (typeof setImmediate === 'function') return new Promise((resolve) => setImmediate(resolve));
  return new Promise((resolve) => {
    const ch = new MessageChannel();
    ch.port1.onmessage = () => {
      ch.port1.close();
      resolve();
    };
    ch.port2.postMessage(null);
  });
}

/** A decoder failure as an AppError: its own code kept, anything else INFERENCE_FAILED. */
export function inferenceError(err: unknown): AppError {
  if (err instanceof AppError) return err;
  const message = err instanceof Error ? err.message : String(err);
  if (err && typeof err === 'object' && 'code' in err && isErrorCode((err as { code: unknown }).code)) {
    return new AppError((err as { code: AppError['code'] }).code, message, undefined, { cause: err });
  }
  return new AppError('INFERENCE_FAILED', `The inference backend failed: ${message}`, undefined, { cause: err });
}

function cancelledError(signal: AbortSignal | undefined): AppError {
  const reason: unknown = signal?.reason;
  const why = typeof reason === 'string' ? reason : reason instanceof Error && reason.name !== 'AbortError' ? reason.message : '';
  return new AppError('CANCELLED', why ? `The generation was cancelled: ${why}` : 'The generation was cancelled.');
}

export class Batcher {
  readonly #decoder: BatchDecoder;
  readonly #decode: DecodeFn;
  readonly #special: ReadonlySet<number>;
  readonly #tokenText: (id: number) => string;
  readonly #queue: Sequence[] = [];
  readonly #active = new Map<number, Sequence>();
  readonly #freeSlots: number[];
  #vocab: ConstraintVocabulary | null = null;
  #running = false;
  #closed = false;
  #tokensGenerated = 0;

  constructor(options: BatcherOptions) {
    this.#decoder = options.decoder;
    this.#decode = options.decode;
    this.#special = new Set(options.specialIds ?? []);
    this.#tokenText = options.tokenText ?? ((id) => options.decode([id]));
    this.#freeSlots = Array.from({ length: options.decoder.maxSlots }, (_, i) => i);
  }

  get maxSlots(): number {
    return this.#decoder.maxSlots;
  }

  stats(): BatcherStats {
    return { active: this.#active.size, waiting: this.#queue.length, maxSlots: this.#decoder.maxSlots, tokensGenerated: this.#tokensGenerated };
  }

  /** Generates for one request; rejects with an AppError (CANCELLED on abort). */
  async submit(req: GenerationRequest): Promise<GenerationOutput> {
    const startedAt = now();
    if (this.#closed) throw new AppError('CANCELLED', 'The model was unloaded; the generation did not start.');
    const dec = this.#decoder;
    if (req.promptIds.length === 0) throw new AppError('SCHEMA_VIOLATION', 'The prompt has no tokens.');
    for (const id of req.promptIds) {
      if (!Number.isInteger(id) || id < 0 || id >= dec.vocabSize) throw new AppError('SCHEMA_VIOLATION', `Prompt token ${id} is outside the vocabulary (size ${dec.vocabSize}).`);
    }
    if (req.promptIds.length >= dec.maxPositions) {
      throw new AppError('PROMPT_TOO_LONG', `The prompt has ${req.promptIds.length} tokens; this model holds ${dec.maxPositions} positions per sequence, prompt and output together.`, {
        promptTokens: req.promptIds.length,
        maxPositions: dec.maxPositions,
      });
    }
    if (!(Number.isInteger(req.maxNewTokens) && req.maxNewTokens >= 1)) throw new AppError('SCHEMA_VIOLATION', `maxNewTokens must be a positive integer (got ${req.maxNewTokens}).`);
    const format = compileResponseFormat(req.responseFormat);
    if (req.signal?.aborted) throw cancelledError(req.signal);
    if (format && !this.#vocab) this.#vocab = vocabularyFromDecode(dec.vocabSize, this.#decode, this.#special);
    const constraint = format ? new JsonConstraint(format, this.#vocab as ConstraintVocabulary) : null;

    return new Promise<GenerationOutput>((resolve, reject) => {
      const seq: Sequence = {
        req,
        resolve,
        reject,
        slot: -1,
        params: { temperature: req.temperature, topK: req.topK, topP: req.topP },
        rng: mulberry32(req.seed ?? Math.floor(Math.random() * 0x100000000)),
        stopIds: new Set(req.stopTokenIds),
        detok: new IncrementalDetokenizer(this.#decode, this.#special),
        stop: new StopMatcher(req.stopStrings),
        constraint,
        limit: Math.min(req.maxNewTokens, dec.maxPositions - req.promptIds.length),
        tokens: [],
        text: '',
        logprobs: req.logprobs !== undefined ? [] : null,
        startedAt,
        ttftMs: null,
        cancelled: null,
        done: false,
        unlisten: () => {},
      };
      if (req.signal) {
        const signal = req.signal;
        const onAbort = (): void => this.#cancel(seq, cancelledError(signal));
        signal.addEventListener('abort', onAbort, { once: true });
        seq.unlisten = () => signal.removeEventListener('abort', onAbort);
      }
      this.#queue.push(seq);
      void this.#run();
    });
  }

  /** Fails every waiting and running request with CANCELLED and refuses new ones. */
  close(): void {
    this.#closed = true;
    const err = new AppError('CANCELLED', 'The model was unloaded while the generation ran.');
    for (const seq of [...this.#queue, ...this.#active.values()]) this.#cancel(seq, err);
  }

  #cancel(seq: Sequence, err: AppError): void {
    if (seq.done) return;
    const queued = this.#queue.indexOf(seq);
    if (queued >= 0) {
      this.#queue.splice(queued, 1);
      this.#end(seq, err);
    } else {
      // Running: the loop frees its slot before the next step (never while a decoder call uses it).
      seq.cancelled = err;
    }
  }

  async #run(): Promise<void> {
    if (this.#running) return;
    this.#running = true;
    try {
      while (this.#queue.length > 0 || this.#active.size > 0) {
        this.#sweep();
        await this.#admit();
        this.#sweep();
        await this.#step();
        await yieldToEventLoop();
      }
    } finally {
      this.#running = false;
    }
  }

  #sweep(): void {
    for (const seq of [...this.#active.values()]) if (seq.cancelled) this.#end(seq, seq.cancelled);
  }

  /** Newcomers into free slots, FIFO, with one prefill for all of them. */
  async #admit(): Promise<void> {
    const admitted: Sequence[] = [];
    while (this.#freeSlots.length > 0 && this.#queue.length > 0) {
      const seq = this.#queue.shift() as Sequence;
      seq.slot = this.#freeSlots.shift() as number;
      this.#active.set(seq.slot, seq);
      admitted.push(seq);
    }
    if (admitted.length === 0) return;
    const entries: PrefillEntry[] = admitted.map((s) => ({ slot: s.slot, tokens: Uint32Array.from(s.req.promptIds), adapter: s.req.adapter ?? null }));
    let rows: Float32Array[];
    try {
      rows = await this.#decoder.prefill(entries);
      if (rows.length !== entries.length) throw new Error(`prefill returned ${rows.length} rows for ${entries.length} prompts`);
    } catch (err) {
      const e = inferenceError(err);
      for (const s of admitted) this.#end(s, e);
      return;
    }
    for (const [i, s] of admitted.entries()) this.#accept(s, rows[i] as Float32Array);
  }

  /** One decode for every active sequence: each feeds the token it sampled last. */
  async #step(): Promise<void> {
    const batch = [...this.#active.values()].filter((s) => !s.done && !s.cancelled);
    if (batch.length === 0) return;
    const entries: DecodeEntry[] = batch.map((s) => ({ slot: s.slot, token: s.tokens[s.tokens.length - 1] as number, adapter: s.req.adapter ?? null }));
    let rows: Float32Array[];
    try {
      rows = await this.#decoder.decode(entries);
      if (rows.length !== entries.length) throw new Error(`decode returned ${rows.length} rows for ${entries.length} sequences`);
    } catch (err) {
      const e = inferenceError(err);
      for (const s of batch) this.#end(s, e);
      return;
    }
    for (const [i, s] of batch.entries()) this.#accept(s, rows[i] as Float32Array);
  }

  /** Samples a sequence's next token from its row and applies stops, constraint and streaming. */
  #accept(seq: Sequence, row: Float32Array): void {
    if (seq.done || seq.cancelled) return;
    const { req } = seq;
    const mask = seq.constraint ? seq.constraint.mask(seq.limit - seq.tokens.length, req.stopTokenIds) : null;
    const id = sampleToken(row, seq.params, seq.rng, mask);
    if (id < 0) {
      this.#end(seq, new AppError('RESPONSE_FORMAT_UNSUPPORTED', 'No token of this vocabulary can continue the constrained output.'));
      return;
    }
    if (seq.ttftMs === null) seq.ttftMs = now() - seq.startedAt;
    seq.tokens.push(id);
    this.#tokensGenerated++;
    const lp = seq.logprobs ? tokenLogprob(row, id, req.logprobs ?? 0, this.#tokenText) : null;
    if (lp) seq.logprobs?.push(lp);

    let delta = '';
    let reason: FinishReason | null = null;
    if (seq.stopIds.has(id)) {
      reason = 'stop';
    } else {
      if (seq.constraint && !seq.constraint.accept(id)) {
        this.#end(seq, new AppError('INTERNAL', `The constraint refused token ${id} it had allowed.`));
        return;
      }
      const r = seq.stop.push(seq.detok.push(id));
      delta += r.text;
      if (r.stopped) reason = 'stop';
      else if (seq.constraint?.closed) reason = 'stop';
      else if (seq.tokens.length >= seq.limit) reason = 'length';
    }
    if (reason !== null && !seq.stop.stopped) {
      const r = seq.stop.push(seq.detok.flush());
      delta += r.text;
      if (r.stopped) reason = 'stop';
      delta += seq.stop.flush();
    }
    seq.text += delta;

    if (req.onProgress) {
      const progress: GenerationProgress = { text: delta, ids: [id], tokens: seq.tokens.length };
      if (lp) progress.logprobs = [lp];
      try {
        req.onProgress(progress);
      } catch (err) {
        this.#end(seq, err instanceof AppError ? err : new AppError('INTERNAL', `onProgress threw: ${err instanceof Error ? err.message : String(err)}`));
        return;
      }
    }
    if (reason !== null) this.#end(seq, reason);
  }

  /** Ends a sequence (a finish reason, or the error it fails with) and frees its slot. */
  #end(seq: Sequence, outcome: FinishReason | AppError): void {
    if (seq.done) return;
    seq.done = true;
    seq.unlisten();
    if (seq.slot >= 0) {
      this.#active.delete(seq.slot);
      try {
        this.#decoder.free(seq.slot);
      } catch {
        // A decoder that cannot free a slot has failed already; the slot is reused on the next prefill.
      }
      this.#freeSlots.push(seq.slot);
      this.#freeSlots.sort((a, b) => a - b);
    }
    if (outcome instanceof AppError) {
      seq.reject(outcome);
      return;
    }
    const out: GenerationOutput = {
      tokens: seq.tokens,
      text: seq.text,
      finishReason: outcome,
      promptTokens: seq.req.promptIds.length,
      completionTokens: seq.tokens.length,
      ttftMs: seq.ttftMs ?? now() - seq.startedAt,
      durationMs: now() - seq.startedAt,
    };
    if (seq.logprobs) out.logprobs = seq.logprobs;
    seq.resolve(out);
  }
}
