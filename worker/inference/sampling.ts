/**
 * Next-token sampling from one row of logits: greedy at temperature 0, otherwise temperature, top-k
 * and top-p (nucleus), each draw taking exactly one number from the caller's seeded generator, so a
 * request's tokens depend only on its own logits and seed. Built for 32k–150k vocabularies: no full
 * sort per token — top-k is a heap selection, top-p grows a heap selection until it holds the nucleus.
 */
import type { Rng } from '../model';

export interface SamplingParams {
  /** 0 or absent: greedy. */
  temperature?: number;
  /** 0 or absent: no top-k cut. */
  topK?: number;
  /** ≥ 1 or absent: no nucleus cut; ≤ 0 keeps the single most likely token. */
  topP?: number;
}

type Row = ArrayLike<number>;

/** Whether token i may be chosen: `allowed[i] !== 0`; null allows every token. */
export type TokenMask = Uint8Array | null;

const ok = (mask: TokenMask, i: number): boolean => mask === null || mask[i] !== 0;

/** The highest logit among the allowed tokens (lowest index on ties); -1 when none is allowed. */
export function argmax(row: Row, mask: TokenMask = null): number {
  let best = -1;
  let bestValue = -Infinity;
  for (let i = 0; i < row.length; i++) {
    const v = row[i] as number;
    if (ok(mask, i) && (v > bestValue || best < 0)) {
      best = i;
      bestValue = v;
    }
  }
  return best;
}

/**
 * The k allowed indices with the largest values, largest first (ties: lower index first), by a
 * min-heap of size k: O(V log k).
 */
export function topIndices(row: Row, k: number, mask: TokenMask = null): number[] {
  if (k <= 0) return [];
  const heap: number[] = [];
  // a "less than" b when a is the worse candidate: smaller value, or equal value and larger index.
  const worse = (a: number, b: number): boolean => {
    const va = row[a] as number;
    const vb = row[b] as number;
    return va < vb || (va === vb && a > b);
  };
  const siftUp = (n: number): void => {
    while (n > 0) {
      const p = (n - 1) >> 1;
      if (!worse(heap[n] as number, heap[p] as number)) break;
      [heap[n], heap[p]] = [heap[p] as number, heap[n] as number];
      n = p;
    }
  };
  const siftDown = (n: number): void => {
    for (;;) {
      const l = 2 * n + 1;
      const r = l + 1;
      let m = n;
      if (l < heap.length && worse(heap[l] as number, heap[m] as number)) m = l;
      if (r < heap.length && worse(heap[r] as number, heap[m] as number)) m = r;
      if (m === n) return;
      [heap[n], heap[m]] = [heap[m] as number, heap[n] as number];
      n = m;
    }
  };
  for (let i = 0; i < row.length; i++) {
    if (!ok(mask, i) || Number.isNaN(row[i] as number)) continue;
    if (heap.length < k) {
      heap.push(i);
      siftUp(heap.length - 1);
    } else if (worse(heap[0] as number, i)) {
      heap[0] = i;
      siftDown(0);
    }
  }
  return heap.sort((a, b) => (worse(a, b) ? 1 : worse(b, a) ? -1 : 0));
}

/** Picks one index of `ids` with probability proportional to `weights`, from one uniform draw. */
function pick(ids: readonly number[], weights: readonly number[], total: number, u: number): number {
  let target = u * total;
  for (let n = 0; n < ids.length; n++) {
    target -= weights[n] as number;
    if (target < 0) return ids[n] as number;
  }
  return ids[ids.length - 1] as number;
}

/**
 * Samples the next token. Greedy (no draw) when the temperature is 0 or absent; otherwise exactly one
 * `rng.next()`. Returns -1 only when the mask allows nothing.
 */
export function sampleToken(row: Row, params: SamplingParams, rng: Rng, mask: TokenMask = null): number {
  const temp = params.temperature ?? 0;
  if (!(temp > 0)) return argmax(row, mask);
  const topK = params.topK !== undefined && params.topK > 0 ? Math.floor(params.topK) : 0;
  const topP = params.topP !== undefined && params.topP < 1 ? Math.max(params.topP, 0) : 1;
  const best = argmax(row, mask);
  if (best < 0) return -1;
  const max = row[best] as number;
  const u = rng.next();
  // One pass of exponentials; disallowed tokens weigh 0 and are skipped by the mask below.
  const w = new Float64Array(row.length);
  let total = 0;
  let allowedCount = 0;
  for (let i = 0; i < row.length; i++) {
    if (!ok(mask, i)) continue;
    const wi = Math.exp(((row[i] as number) - max) / temp);
    w[i] = wi;
    total += wi;
    allowedCount++;
  }

  if (topK === 0 && topP === 1) {
    // Plain categorical over the allowed tokens: no selection.
    let target = u * total;
    let last = best;
    for (let i = 0; i < w.length; i++) {
      if (!ok(mask, i)) continue;
      last = i;
      target -= w[i] as number;
      if (target < 0) return i;
    }
    return last;
  }

  // The candidates: the top k, or (top-p alone) a growing top-m until it holds the nucleus.
  let m = topK > 0 ? Math.min(topK, allowedCount) : Math.min(256, allowedCount);
  for (;;) {
    const ids = topIndices(w, m, mask);
    const weights = ids.map((i) => w[i] as number);
    // With top-k the nucleus is taken within the renormalised top-k (top-k first, as HF does).
    const mass = topK > 0 ? weights.reduce((a, b) => a + b, 0) : total;
    let acc = 0;
    let keep = 0;
    while (keep < ids.length && (keep === 0 || acc < topP * mass)) acc += weights[keep++] as number;
    if (acc >= topP * mass || topK > 0 || m >= allowedCount) {
      return pick(ids.slice(0, keep), weights.slice(0, keep), acc, u);
    }
    m = Math.min(m * 8, allowedCount);
  }
}
