/**
 * A byte-level BPE tokenizer learned from a small corpus, written as a Hugging
 * Face `tokenizer.json` that @huggingface/tokenizers and transformers.js load.
 * Training is deterministic: pairs are ranked by count, ties by their text.
 */

/** GPT-2's byte → printable character table used by byte-level BPE. */
export function bytesToUnicode(): string[] {
  const bs: number[] = [];
  for (let b = 33; b <= 126; b++) bs.push(b);
  for (let b = 161; b <= 172; b++) bs.push(b);
  for (let b = 174; b <= 255; b++) bs.push(b);
  const cs = bs.slice();
  let n = 0;
  for (let b = 0; b < 256; b++) {
    if (!bs.includes(b)) {
      bs.push(b);
      cs.push(256 + n);
      n++;
    }
  }
  const table = new Array<string>(256);
  for (const [i, b] of bs.entries()) table[b] = String.fromCharCode(cs[i] as number);
  return table;
}

/** The GPT-2 pre-tokenizer pattern (the one the ByteLevel pre-tokenizer applies). */
const GPT2_SPLIT = /'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+/gu;

export interface BpeModel {
  /** Byte-level symbols, id order after the special tokens. */
  vocab: string[];
  merges: [string, string][];
}

export function trainBpe(corpus: string, numMerges: number): BpeModel {
  const table = bytesToUnicode();
  const enc = new TextEncoder();
  const counts = new Map<string, number>();
  for (const m of corpus.matchAll(GPT2_SPLIT)) {
    const word = Array.from(enc.encode(m[0]), (b) => table[b] as string).join('\u0000');
    counts.set(word, (counts.get(word) ?? 0) + 1);
  }
  let words = [...counts.entries()].map(([w, c]) => ({ syms: w.split('\u0000'), count: c }));
  const vocab = table.slice();
  const merges: [string, string][] = [];
  for (let step = 0; step < numMerges; step++) {
    const pairs = new Map<string, number>();
    for (const w of words) {
      for (let i = 0; i + 1 < w.syms.length; i++) {
        const key = `${w.syms[i]}\u0000${w.syms[i + 1]}`;
        pairs.set(key, (pairs.get(key) ?? 0) + w.count);
      }
    }
    let best: string | null = null;
    let bestCount = 0;
    for (const [key, c] of pairs) {
      if (c > bestCount || (c === bestCount && best !== null && key < best)) {
        best = key;
        bestCount = c;
      }
    }
    if (best === null || bestCount < 2) break;
    const [a, b] = best.split('\u0000') as [string, string];
    merges.push([a, b]);
    vocab.push(a + b);
    words = words.map((w) => {
      const out: string[] = [];
      for (let i = 0; i < w.syms.length; i++) {
        if (i + 1 < w.syms.length && w.syms[i] === a && w.syms[i + 1] === b) {
          out.push(a + b);
          i++;
        } else out.push(w.syms[i] as string);
      }
      return { syms: out, count: w.count };
    });
  }
  return { vocab, merges };
}

export interface SpecialToken {
  id: number;
  content: string;
}

/** The tokenizer.json object: special tokens first (ids 0…), then the BPE vocabulary. */
export function tokenizerJson(model: BpeModel, specials: readonly SpecialToken[]): Record<string, unknown> {
  const vocab: Record<string, number> = {};
  for (const s of specials) vocab[s.content] = s.id;
  for (const [i, sym] of model.vocab.entries()) vocab[sym] = specials.length + i;
  const byteLevel = { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true };
  return {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: specials.map((s) => ({
      id: s.id,
      content: s.content,
      single_word: false,
      lstrip: false,
      rstrip: false,
      normalized: false,
      special: true,
    })),
    normalizer: null,
    pre_tokenizer: byteLevel,
    post_processor: { ...byteLevel, trim_offsets: false },
    decoder: byteLevel,
    model: {
      type: 'BPE',
      dropout: null,
      unk_token: null,
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: false,
      byte_fallback: false,
      ignore_merges: false,
      vocab,
      merges: model.merges.map(([a, b]) => `${a} ${b}`),
    },
  };
}
