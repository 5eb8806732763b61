/**
 * EngineDecoder: the engine's BatchDecoder (worker/inference/types.ts) for continuous batching. It
 * owns a LlamaModel and a slot KV cache (per layer K and V of [maxSlots, maxPositions, kvWidth]);
 * `prefill` writes prompts into their slots (packed into one forward per chunk of rows), `decode`
 * runs one forward for every entry, each row at its own slot's length, and named LoRA adapters
 * apply per row: the base matmuls run once for the whole step and each adapter's delta goes to its
 * own rows (gather → A → B → scatter-add).
 *
 *   const model = await LlamaModel.load(ctx, config, weights);
 *   const dec = await EngineDecoder.create(model, { maxSlots: 8, maxPositions: 512 });
 *   dec.addAdapter('tuned', adapter);
 *   const [l0, l1] = await dec.prefill([{ slot: 0, tokens, adapter: null }, { slot: 1, tokens: t2, adapter: 'tuned' }]);
 *   const next = await dec.decode([{ slot: 0, token: a, adapter: null }, { slot: 1, token: b, adapter: 'tuned' }]);
 */
import { AppError } from '../../shared';
import type { BatchDecoder, DecodeEntry, PrefillEntry } from '../inference/types';
import type { LinearAdapter } from './adapter-types';
import type { Tensor } from './context';
import type { LlamaModel, RowBatch, SlotCache } from './llama';

export interface EngineDecoderOptions {
  /** Sequences held at once. */
  maxSlots: number;
  /** Positions per sequence; default and upper bound: the model's maxPositions. */
  maxPositions?: number;
  /** Prompt rows per prefill forward (prompts longer than this are prefilled in chunks). Default 256. */
  prefillChunkRows?: number;
}

interface Row {
  token: number;
  slot: number;
  pos: number;
  adapter: string | null;
  /** Index of the entry whose last prompt token this row is, else -1. */
  last: number;
}

export class EngineDecoder implements BatchDecoder {
  readonly backend = 'engine' as const;
  readonly device = 'webgpu' as const;
  readonly vocabSize: number;
  readonly maxSlots: number;
  readonly maxPositions: number;
  readonly memoryBytes: number;
  readonly model: LlamaModel;
  #cache: SlotCache;
  #lengths: Int32Array;
  #adapters = new Map<string, LinearAdapter>();
  #generation: number;
  #chunkRows: number;
  #released = false;

  private constructor(model: LlamaModel, cache: SlotCache, chunkRows: number) {
    this.model = model;
    this.#cache = cache;
    this.vocabSize = model.config.vocabSize;
    this.maxSlots = cache.slots;
    this.maxPositions = cache.positions;
    this.#lengths = new Int32Array(cache.slots).fill(-1);
    this.#generation = model.ctx.generation;
    this.#chunkRows = chunkRows;
    let cacheBytes = 0;
    for (const t of [...cache.k, ...cache.v]) cacheBytes += t.bytes;
    this.memoryBytes = model.weightBytes + cacheBytes;
  }

  /**
   * Allocates the slot cache for a loaded model (MODEL_TOO_LARGE when one layer's cache is over the
   * device's buffer limit, GPU_OUT_OF_MEMORY when the device cannot hold it). The decoder owns the
   * model from here: release() frees both.
   */
  static async create(model: LlamaModel, opts: EngineDecoderOptions): Promise<EngineDecoder> {
    const c = model.config;
    const slots = Math.floor(opts.maxSlots);
    const positions = Math.floor(opts.maxPositions ?? c.maxPositions);
    if (!(slots >= 1)) throw new AppError('INTERNAL', `EngineDecoder needs at least one slot (got ${opts.maxSlots}).`);
    if (!(positions >= 1 && positions <= c.maxPositions)) throw new AppError('PROMPT_TOO_LONG', `maxPositions must be in 1..${c.maxPositions}, the model's context (got ${opts.maxPositions}).`);
    const ctx = model.ctx;
    const kvw = c.numKvHeads * c.headDim;
    const layerBytes = slots * positions * kvw * 4;
    if (layerBytes > ctx.maxTensorBytes) {
      throw new AppError('MODEL_TOO_LARGE', `A KV cache of ${slots} slots × ${positions} positions needs ${layerBytes} bytes per layer; this GPU binds at most ${ctx.maxTensorBytes}. Use fewer slots or positions.`, {
        bytes: layerBytes,
        limit: ctx.maxTensorBytes,
      });
    }
    // Scores of one chunk are [rows, heads, positions]: keep them under the buffer limit too.
    const maxRowsByScores = Math.floor(ctx.maxTensorBytes / (c.numHeads * positions * 4));
    const chunkRows = Math.max(1, Math.min(opts.prefillChunkRows ?? 256, maxRowsByScores, ctx.limits.maxComputeWorkgroupsPerDimension));
    const k: Tensor[] = [];
    const v: Tensor[] = [];
    try {
      await ctx.withLock(async () => {
        for (let l = 0; l < c.numLayers; l++) {
          k.push(ctx.tensor([slots, positions, kvw], 'f32', false));
          v.push(ctx.tensor([slots, positions, kvw], 'f32', false));
        }
        await ctx.sync();
      });
    } catch (err) {
      for (const t of [...k, ...v]) t.release();
      throw err;
    }
    return new EngineDecoder(model, { k, v, slots, positions }, chunkRows);
  }

  /** Makes an adapter selectable by name in entries (ADAPTER_MISMATCH when made for another model). The caller keeps owning it. */
  addAdapter(name: string, adapter: LinearAdapter): void {
    adapter.checkCompatible(this.model.config);
    this.#adapters.set(name, adapter);
  }

  /** Forgets an adapter; returns whether it was there. Sequences that still name it fail with ADAPTER_NOT_FOUND. */
  removeAdapter(name: string): boolean {
    return this.#adapters.delete(name);
  }

  get adapterNames(): string[] {
    return [...this.#adapters.keys()];
  }

  /** Tokens held in a slot (prompt plus decoded), or -1 when free. */
  slotLength(slot: number): number {
    this.#slot(slot);
    return this.#lengths[slot]!;
  }

  async prefill(entries: readonly PrefillEntry[]): Promise<Float32Array[]> {
    this.#check();
    this.#distinctSlots(entries);
    for (const e of entries) {
      this.#adapter(e.adapter);
      if (e.tokens.length === 0) throw new AppError('SHAPE_MISMATCH', `The prompt for slot ${e.slot} is empty.`);
      if (e.tokens.length > this.maxPositions) {
        throw new AppError('PROMPT_TOO_LONG', `The prompt has ${e.tokens.length} tokens; this decoder holds ${this.maxPositions} positions per sequence.`, {
          promptTokens: e.tokens.length,
          maxPositions: this.maxPositions,
        });
      }
    }
    for (const e of entries) this.#lengths[e.slot] = -1; // until its prompt is in
    const rows: Row[] = [];
    entries.forEach((e, i) => {
      for (let p = 0; p < e.tokens.length; p++) rows.push({ token: e.tokens[p]!, slot: e.slot, pos: p, adapter: e.adapter, last: p === e.tokens.length - 1 ? i : -1 });
    });
    const out: Float32Array[] = new Array<Float32Array>(entries.length);
    const V = this.vocabSize;
    // Rows are in prompt order, so a chunk's keys and values are written before any later chunk reads them.
    for (let start = 0; start < rows.length; start += this.#chunkRows) {
      const chunk = rows.slice(start, start + this.#chunkRows);
      const outRows: number[] = [];
      const owners: number[] = [];
      chunk.forEach((r, i) => {
        if (r.last >= 0) {
          outRows.push(i);
          owners.push(r.last);
        }
      });
      const logits = await this.model.forwardRows(this.#batch(chunk, outRows));
      owners.forEach((e, i) => (out[e] = logits.slice(i * V, (i + 1) * V)));
    }
    for (const e of entries) this.#lengths[e.slot] = e.tokens.length;
    return out;
  }

  async decode(entries: readonly DecodeEntry[]): Promise<Float32Array[]> {
    this.#check();
    this.#distinctSlots(entries);
    const rows: Row[] = entries.map((e) => {
      this.#adapter(e.adapter);
      const len = this.#lengths[e.slot]!;
      if (len < 1) throw new AppError('INTERNAL', `Slot ${e.slot} holds no sequence; prefill it first.`);
      if (len >= this.maxPositions) {
        throw new AppError('PROMPT_TOO_LONG', `The sequence in slot ${e.slot} fills all ${this.maxPositions} positions; it cannot grow.`, { maxPositions: this.maxPositions });
      }
      return { token: e.token, slot: e.slot, pos: len, adapter: e.adapter, last: -1 };
    });
    const logits = await this.model.forwardRows(this.#batch(rows, rows.map((_, i) => i)));
    for (const e of entries) this.#lengths[e.slot]!++;
    const V = this.vocabSize;
    return entries.map((_, i) => logits.slice(i * V, (i + 1) * V));
  }

  free(slot: number): void {
    this.#slot(slot);
    this.#lengths[slot] = -1;
  }

  /** Frees the cache and the model's weights (adapters stay with whoever added them). */
  async release(): Promise<void> {
    if (this.#released) return;
    this.#released = true;
    for (const t of [...this.#cache.k, ...this.#cache.v]) t.release();
    this.#adapters.clear();
    this.model.release();
  }

  #batch(rows: readonly Row[], outRows: number[]): RowBatch {
    const groups = new Map<string, number[]>();
    rows.forEach((r, i) => {
      if (r.adapter === null) return;
      const g = groups.get(r.adapter);
      if (g) g.push(i);
      else groups.set(r.adapter, [i]);
    });
    return {
      tokens: Uint32Array.from(rows, (r) => r.token),
      slots: Uint32Array.from(rows, (r) => r.slot),
      positions: Uint32Array.from(rows, (r) => r.pos),
      cache: this.#cache,
      outRows,
      adapters: [...groups].map(([name, idx]) => ({ adapter: this.#adapter(name)!, rows: idx })),
    };
  }

  #check(): void {
    if (this.#released) throw new AppError('INTERNAL', 'This decoder was released; load the model again.');
    this.model.ctx.checkAlive();
    if (this.#generation !== this.model.ctx.generation) throw new AppError('GPU_DEVICE_LOST', 'The GPU device was reset since this decoder was made; load the model again.');
  }

  #slot(slot: number): void {
    if (!(Number.isInteger(slot) && slot >= 0 && slot < this.maxSlots)) throw new AppError('INTERNAL', `Slot ${slot} is outside 0..${this.maxSlots - 1}.`, { slot, maxSlots: this.maxSlots });
  }

  #distinctSlots(entries: readonly { slot: number }[]): void {
    if (entries.length === 0) throw new AppError('INTERNAL', 'A step needs at least one entry.');
    const seen = new Set<number>();
    for (const e of entries) {
      this.#slot(e.slot);
      if (seen.has(e.slot)) throw new AppError('INTERNAL', `Slot ${e.slot} appears twice in one step.`);
      seen.add(e.slot);
    }
  }

  #adapter(name: string | null): LinearAdapter | null {
    if (name === null) return null;
    const a = this.#adapters.get(name);
    if (!a) throw new AppError('ADAPTER_NOT_FOUND', `No adapter named "${name}" is loaded for this model. Add it with addAdapter first.`, { adapter: name, loaded: this.adapterNames });
    return a;
  }
}
