/**
 * Joining per-sequence cache tensors along the batch dimension and splitting them back, for
 * continuous batching on an ONNX decoder. A cache tensor of one sequence is `[1, outer…, L, inner…]`
 * (for a KV cache `[1, heads, L, headDim]`: outer = heads, inner = headDim), stored as a flat typed
 * array. Batches are LEFT-padded: row b's L_b positions sit at the end of the joined length, the
 * padding before them is zero and masked out by the attention mask.
 */

/** The element arrays onnxruntime hands back for float32 and (raw) float16 caches. */
export type CacheData = Float32Array | Uint16Array;

/** How one cache input is laid out, from the session's input metadata. */
export interface CacheLayout {
  /** Product of the dims between batch and sequence (KV heads). */
  outer: number;
  /** Product of the dims after the sequence (head size). */
  inner: number;
  /** False for states without a sequence axis (convolution / recurrent states): joined by plain concatenation. */
  hasSeq: boolean;
}

export interface CacheRow {
  data: CacheData;
  /** Positions held (ignored when the layout has no sequence axis). */
  length: number;
}

function allocLike(like: CacheData, n: number): CacheData {
  return like instanceof Float32Array ? new Float32Array(n) : new Uint16Array(n);
}

/** Size of one row's tensor at `length` positions. */
export function rowSize(layout: CacheLayout, length: number): number {
  return layout.hasSeq ? layout.outer * length * layout.inner : layout.outer * layout.inner;
}

/** Joins rows into one `[B, outer, maxLength, inner]` array, each row left-padded with zeros to `maxLength`. */
export function joinRows(layout: CacheLayout, rows: readonly CacheRow[], maxLength: number, like: CacheData): CacheData {
  const { outer, inner } = layout;
  if (!layout.hasSeq) {
    const size = outer * inner;
    const out = allocLike(like, rows.length * size);
    rows.forEach((r, b) => out.set(r.data.subarray(0, size), b * size));
    return out;
  }
  const out = allocLike(like, rows.length * outer * maxLength * inner);
  const span = maxLength * inner;
  rows.forEach((r, b) => {
    const len = r.length * inner;
    const pad = (maxLength - r.length) * inner;
    for (let o = 0; o < outer; o++) {
      const src = o * len;
      out.set(r.data.subarray(src, src + len), (b * outer + o) * span + pad);
    }
  });
  return out;
}

/**
 * Splits a joined `[B, outer, total, inner]` array into rows, keeping each row's last `keep[b]` positions
 * (its own positions; the left padding is dropped).
 */
export function splitRows(layout: CacheLayout, joined: CacheData, total: number, keep: readonly number[]): CacheData[] {
  const { outer, inner } = layout;
  if (!layout.hasSeq) {
    const size = outer * inner;
    return keep.map((_, b) => joined.slice(b * size, (b + 1) * size));
  }
  const span = total * inner;
  return keep.map((k, b) => {
    if (k > total) throw new RangeError(`row ${b} keeps ${k} positions of ${total}`);
    const len = k * inner;
    const out = allocLike(joined, outer * len);
    for (let o = 0; o < outer; o++) {
      const start = (b * outer + o) * span + (total - k) * inner;
      out.set(joined.subarray(start, start + len), o * len);
    }
    return out;
  });
}
