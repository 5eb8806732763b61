/**
 * Incremental detokenization: text from ids as they come, through the model tokenizer's own
 * `decode`. A character whose UTF-8 bytes are split over several tokens decodes to U+FFFD until its
 * last byte arrives, so text ending in U+FFFD is held back until it resolves (or the sequence ends).
 * Decoding re-reads only a short window (the tokens since the last emitted text plus the ones before
 * them, for context such as SentencePiece's leading space), not the whole sequence.
 */

export type DecodeFn = (ids: readonly number[]) => string;

const REPLACEMENT = '\uFFFD';

export class IncrementalDetokenizer {
  readonly #decode: DecodeFn;
  readonly #skip: ReadonlySet<number>;
  readonly #ids: number[] = [];
  /** Start of the context window and end of the ids whose text has been emitted. */
  #prefix = 0;
  #read = 0;
  #text = '';

  constructor(decode: DecodeFn, skipIds: ReadonlySet<number> = new Set()) {
    // Tokenizers may refuse an empty list (@huggingface/tokenizers does).
    this.#decode = (ids) => (ids.length === 0 ? '' : decode(ids));
    this.#skip = skipIds;
  }

  /** All text emitted so far. */
  get text(): string {
    return this.#text;
  }

  /** Adds one token; returns the text it completes (often '', or several tokens' worth at once). */
  push(id: number): string {
    if (this.#skip.has(id)) return '';
    this.#ids.push(id);
    const before = this.#decode(this.#ids.slice(this.#prefix, this.#read));
    const after = this.#decode(this.#ids.slice(this.#prefix));
    if (after.length <= before.length || after.endsWith(REPLACEMENT) || !after.startsWith(before)) return '';
    const delta = after.slice(before.length);
    this.#prefix = this.#read;
    this.#read = this.#ids.length;
    this.#text += delta;
    return delta;
  }

  /** The sequence ended: whatever is still held (an unresolved U+FFFD included). */
  flush(): string {
    if (this.#read === this.#ids.length) return '';
    const before = this.#decode(this.#ids.slice(this.#prefix, this.#read));
    const after = this.#decode(this.#ids.slice(this.#prefix));
    const delta = after.startsWith(before) ? after.slice(before.length) : after.slice(Math.min(before.length, after.length));
    this.#prefix = this.#read;
    this.#read = this.#ids.length;
    this.#text += delta;
    return delta;
  }
}
