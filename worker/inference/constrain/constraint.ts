/**
 * One request's constrained decoding: the automaton state, the token mask for the next step, and
 * budget steering. For each state the walk over the vocabulary trie records, per allowed token, the
 * fewest characters that would still be needed after it; masks for any budget come from that one
 * array, cached per state (states inside a long string share one entry) and shared by every
 * request with the same compiled format and vocabulary.
 */
import { initialThreads, minRemaining, stepThreads, threadComplete, threadKey, type Thread } from './automaton';
import type { CompiledFormat } from './schema';
import type { ConstraintVocabulary, TrieNode } from './vocabulary';

const NOT_ALLOWED = -1;
const COST_CAP = 1 << 30;
const CACHE_BYTES = 32 * 1024 * 1024;

class CostCache {
  readonly #map = new Map<string, Int32Array>();
  readonly #max: number;
  constructor(vocabSize: number) {
    this.#max = Math.max(16, Math.floor(CACHE_BYTES / (4 * Math.max(1, vocabSize))));
  }
  get(key: string): Int32Array | undefined {
    const hit = this.#map.get(key);
    if (hit) {
      this.#map.delete(key);
      this.#map.set(key, hit);
    }
    return hit;
  }
  set(key: string, costs: Int32Array): void {
    if (this.#map.size >= this.#max) this.#map.delete(this.#map.keys().next().value as string);
    this.#map.set(key, costs);
  }
}

const caches = new WeakMap<CompiledFormat, WeakMap<ConstraintVocabulary, CostCache>>();

function cacheFor(format: CompiledFormat, vocab: ConstraintVocabulary): CostCache {
  let byVocab = caches.get(format);
  if (!byVocab) {
    byVocab = new WeakMap();
    caches.set(format, byVocab);
  }
  let cache = byVocab.get(vocab);
  if (!cache) {
    cache = new CostCache(vocab.size);
    byVocab.set(vocab, cache);
  }
  return cache;
}

export class JsonConstraint {
  readonly #vocab: ConstraintVocabulary;
  readonly #cache: CostCache;
  #threads: Thread[];

  constructor(format: CompiledFormat, vocab: ConstraintVocabulary) {
    this.#vocab = vocab;
    this.#cache = cacheFor(format, vocab);
    this.#threads = initialThreads(format.root);
  }

  /** The text so far is a whole value: EOS may end it. */
  get complete(): boolean {
    return this.#threads.some(threadComplete);
  }

  /** The value is closed and nothing may follow: the sequence should end now. */
  get closed(): boolean {
    return this.#threads.length > 0 && this.#threads.every((t) => t === null);
  }

  /** Fewest characters still needed to complete the value. */
  get remaining(): number {
    return Math.min(...this.#threads.map(minRemaining));
  }

  /**
   * The tokens allowed next when `budget` tokens are left (this one included): those after which
   * the value can still be completed in budget − 1 tokens of one character each, and `stopIds` when
   * the value is complete. When no token fits the budget, the ones that come closest are allowed.
   */
  mask(budget: number, stopIds: readonly number[]): Uint8Array {
    const costs = this.#costs();
    const mask = new Uint8Array(this.#vocab.size);
    let best = COST_CAP + 1;
    let fits = false;
    for (let id = 0; id < costs.length; id++) {
      const c = costs[id] as number;
      if (c === NOT_ALLOWED) continue;
      if (c <= budget - 1) {
        mask[id] = 1;
        fits = true;
      }
      if (c < best) best = c;
    }
    if (!fits) for (let id = 0; id < costs.length; id++) if (costs[id] === best) mask[id] = 1;
    if (this.complete) for (const id of stopIds) if (id >= 0 && id < mask.length) mask[id] = 1;
    return mask;
  }

  /** Advances by a token's text; false (state unchanged) when the grammar does not allow it. */
  accept(id: number): boolean {
    const text = this.#vocab.texts[id];
    if (text === null || text === undefined) return false;
    let threads = this.#threads;
    for (const ch of text) {
      threads = stepThreads(threads, ch);
      if (threads.length === 0) return false;
    }
    this.#threads = threads;
    return true;
  }

  #costs(): Int32Array {
    const key = this.#threads.map(threadKey).sort().join('\u0002');
    const hit = this.#cache.get(key);
    if (hit) return hit;
    const costs = new Int32Array(this.#vocab.size).fill(NOT_ALLOWED);
    walk(this.#vocab.trie, this.#threads, costs);
    this.#cache.set(key, costs);
    return costs;
  }
}

function walk(node: TrieNode, threads: readonly Thread[], costs: Int32Array): void {
  for (const [ch, child] of node.children) {
    const next = stepThreads(threads, ch);
    if (next.length === 0) continue;
    if (child.ids.length) {
      let c = COST_CAP;
      for (const t of next) c = Math.min(c, minRemaining(t));
      for (const id of child.ids) costs[id] = c;
    }
    if (child.children.size) walk(child, next, costs);
  }
}
