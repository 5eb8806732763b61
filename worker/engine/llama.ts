/**
 * A Llama-family model on the engine: weights uploaded once, batched forward to logits, greedy
 * and sampled generation with a KV cache, the full backward used by LoRA training (gradients
 * flow through the frozen layers; only the attached adapter's A/B receive weight gradients), and
 * `forwardRows`, the step of continuous batching: rows of different sequences, each at its own
 * position in its own slot of a slot KV cache, each with its own adapter (EngineDecoder drives it).
 */
import { AppError } from '../../shared';
import { f32ToF16, LINEAR_MODULES, linearWeightName, llamaWeightNames, llamaWeightShapes, mulberry32, type Batch, type LinearModule, type LlamaConfig, type LlamaWeights } from '../model';
import { GpuContext, Tensor } from './context';
import {
  accumulate,
  add,
  addBias,
  attention,
  attentionBackward,
  crossEntropy,
  crossEntropyBackward,
  embedding,
  kvWrite,
  rmsNorm,
  rmsNormBackward,
  rope,
  ropeTable,
  siluMul,
  siluMulBackward,
  type AttnShape,
  type RopeTables,
} from './kernels';
import type { AdaptableModel, AdapterActivations, LinearAdapter } from './adapter-types';
import { matmul } from './matmul';
import { attentionRows, kvWriteRows, ropeRows, type SlotRows } from './slot-kernels';
import { AdapterPack, NO_ADAPTER } from './adapter-pack';

export interface GenerateOptions {
  maxNewTokens: number;
  /** 0 (default) = greedy. */
  temperature?: number;
  topK?: number;
  topP?: number;
  seed?: number;
  /** Stop after emitting one of these (defaults to the config's EOS ids). */
  stopTokens?: readonly number[];
  /** Called with each new token as it is chosen. */
  onToken?: (id: number) => void;
  /** Stops between tokens with CANCELLED (task cancelled or past its deadline). */
  signal?: AbortSignal;
}

export interface LoadOptions {
  /**
   * Storage of the seven linear weights: 'f16' halves their memory (devices with shader-f16 only;
   * maths stays fp32), 'auto' picks f16 where the adapter has it. Default 'f32'.
   */
  weightDtype?: 'f32' | 'f16' | 'auto';
}

function toF16(data: Float32Array): Uint16Array {
  const out = new Uint16Array(data.length);
  for (let i = 0; i < data.length; i++) out[i] = f32ToF16(data[i]!);
  return out;
}

/** Token rows of equal length: number[][] or a flat Int32Array with its row count. */
export type TokenRows = readonly (readonly number[])[] | { ids: Int32Array | Uint32Array; rows: number; seqLen: number };

/** A slot KV cache: per layer K and V of [slots, positions, numKvHeads·headDim]. */
export interface SlotCache {
  k: readonly Tensor[];
  v: readonly Tensor[];
  slots: number;
  positions: number;
}

/**
 * One forward over rows of different sequences: row r is token `tokens[r]` of the sequence in slot
 * `slots[r]` at position `positions[r]`; its key and value are written there and it attends to
 * positions 0..positions[r] of its slot (so a prompt's rows are written and read in one pass).
 * Each adapter group adds its delta to its own rows only (rows may appear in at most one group).
 */
export interface RowBatch {
  tokens: Uint32Array;
  slots: Uint32Array;
  positions: Uint32Array;
  cache: SlotCache;
  /** Rows whose logits come back, in this order. */
  outRows: readonly number[];
  adapters: readonly { adapter: LinearAdapter; rows: readonly number[] }[];
}

interface KvCache {
  k: Tensor[];
  v: Tensor[];
  rows: number;
  B: number;
}

interface LayerSaved {
  x: Tensor;
  h1: Tensor;
  r1: Tensor;
  qr: Tensor;
  kr: Tensor;
  v: Tensor;
  prob: Tensor;
  att: Tensor;
  x2: Tensor;
  h2: Tensor;
  r2: Tensor;
  g: Tensor;
  u: Tensor;
  m: Tensor;
  lora: Map<LinearModule, AdapterActivations>;
}

interface ForwardState {
  B: number;
  T: number;
  past: number;
  cache?: KvCache;
  /** Saved activations for the backward (training). */
  saved?: LayerSaved[];
  train: boolean;
  lastOnly: boolean;
  /** Rows over a slot cache (forwardRows); B = rows, T = 1. */
  slots?: { rows: SlotRows; cache: SlotCache; outRows: readonly number[] };
  /** Per-row adapters (forwardRows): the pack and each row's slot in it (NO_ADAPTER: none). Replaces the attached adapter. */
  packed?: { pack: AdapterPack; rowAd: Tensor };
}

/** Most adapters one pack holds: a batch naming more gets a pack of its own adapters only. */
const MAX_PACKED_ADAPTERS = 32;

function rowsOf(tokens: TokenRows): { ids: Uint32Array; B: number; T: number } {
  if ('rows' in tokens) {
    return { ids: Uint32Array.from(tokens.ids), B: tokens.rows, T: tokens.seqLen };
  }
  const B = tokens.length;
  const T = tokens[0]?.length ?? 0;
  if (B === 0 || T === 0) throw new AppError('SHAPE_MISMATCH', 'forward needs at least one row with at least one token.');
  for (const r of tokens) if (r.length !== T) throw new AppError('SHAPE_MISMATCH', 'Every token row must have the same length; pad them.');
  return { ids: Uint32Array.from(tokens.flat()), B, T };
}

export class LlamaModel implements AdaptableModel {
  readonly ctx: GpuContext;
  readonly config: LlamaConfig;
  #w = new Map<string, Tensor>();
  #generation: number;
  #rope: RopeTables | null = null;
  #adapter: LinearAdapter | null = null;
  /** The packed adapters forwardRows applies (rebuilt when a batch names one it lacks or holds stale). */
  #pack: AdapterPack | null = null;

  private constructor(ctx: GpuContext, config: LlamaConfig) {
    this.ctx = ctx;
    this.config = config;
    this.#generation = ctx.generation;
  }

  /**
   * Checks every tensor against the config and the device limits (MODEL_TOO_LARGE before anything
   * is uploaded), then uploads the weights once.
   */
  static async load(ctx: GpuContext, config: LlamaConfig, weights: LlamaWeights, options: LoadOptions = {}): Promise<LlamaModel> {
    const want = options.weightDtype ?? 'f32';
    if (want === 'f16' && !ctx.hasF16) throw new AppError('MODEL_UNSUPPORTED', 'This GPU has no shader-f16: load the weights as f32 (weightDtype "f32" or "auto").');
    const f16 = want === 'f16' || (want === 'auto' && ctx.hasF16);
    const linear = new Set<string>();
    for (let l = 0; l < config.numLayers; l++) for (const m of LINEAR_MODULES) linear.add(linearWeightName(l, m));
    const shapes = llamaWeightShapes(config);
    const limit = ctx.maxTensorBytes;
    for (const [name, shape] of shapes) {
      const bytes = shape.reduce((a, b) => a * b, 1) * 4;
      if (bytes > limit) {
        throw new AppError('MODEL_TOO_LARGE', `Tensor ${name} [${shape.join(', ')}] needs ${bytes} bytes; this GPU binds at most ${limit} bytes per buffer. Use a smaller model.`, {
          tensor: name,
          bytes,
          limit,
        });
      }
    }
    const logitsBytes = config.vocabSize * 4;
    if (logitsBytes > limit) throw new AppError('MODEL_TOO_LARGE', `One row of logits needs ${logitsBytes} bytes, over the GPU limit of ${limit}.`);
    for (const [name, shape] of shapes) {
      const t = weights.get(name);
      if (!t) throw new AppError('MODEL_FILE_MISSING', `Weight ${name} is missing. Check the model's safetensors files.`, { tensor: name });
      if (t.shape.length !== shape.length || t.shape.some((d, i) => d !== shape[i]) || t.data.length !== shape.reduce((a, b) => a * b, 1)) {
        throw new AppError('SHAPE_MISMATCH', `Weight ${name} has shape [${t.shape.join(', ')}], the config implies [${shape.join(', ')}].`, { tensor: name });
      }
    }
    const model = new LlamaModel(ctx, config);
    try {
      await ctx.withLock(async () => {
        for (const [name, shape] of shapes) {
          const data = weights.get(name)!.data;
          model.#w.set(name, ctx.upload(f16 && linear.has(name) ? toF16(data) : data, shape, false));
        }
        await ctx.sync();
      });
    } catch (err) {
      model.release(); // out of memory is reported after the uploads: free what did fit
      throw err;
    }
    model.#ensureRope(Math.min(config.maxPositions, 256));
    return model;
  }

  /** Storage type of the linear weights ('f16' only on shader-f16 devices). */
  get weightDtype(): 'f32' | 'f16' {
    return this.#w.get(linearWeightName(0, 'q_proj'))?.dtype === 'f16' ? 'f16' : 'f32';
  }

  get adapter(): LinearAdapter | null {
    return this.#adapter;
  }

  /** Bytes of device memory the weights take. */
  get weightBytes(): number {
    let n = 0;
    for (const t of this.#w.values()) n += t.bytes;
    return n;
  }

  /** Attaches an adapter (or detaches with null); the base weights stay where they are. */
  setAdapter(adapter: LinearAdapter | null): void {
    if (adapter) adapter.checkCompatible(this.config);
    this.#adapter = adapter;
  }

  /** Frees the weights (the adapter belongs to its owner). */
  release(): void {
    for (const t of this.#w.values()) t.release();
    this.#w.clear();
    this.#pack?.release();
    this.#pack = null;
    this.#rope?.cos.release();
    this.#rope?.sin.release();
    this.#rope = null;
  }

  #check(): void {
    this.ctx.checkAlive();
    if (this.#generation !== this.ctx.generation) {
      throw new AppError('GPU_DEVICE_LOST', 'The GPU device was reset since this model was loaded; load the model again.');
    }
    if (this.#w.size === 0) throw new AppError('INTERNAL', 'This model was released; load it again.');
  }

  #weight(name: string): Tensor {
    const t = this.#w.get(name);
    if (!t) throw new AppError('INTERNAL', `Weight ${name} was not uploaded.`);
    return t;
  }

  #ensureRope(positions: number): RopeTables {
    if (positions > this.config.maxPositions) {
      throw new AppError('SHAPE_MISMATCH', `Sequence of ${positions} tokens is longer than the model's ${this.config.maxPositions} positions.`);
    }
    if (this.#rope && this.#rope.positions >= positions) return this.#rope;
    const n = Math.min(this.config.maxPositions, Math.max(positions, (this.#rope?.positions ?? 0) * 2));
    this.#rope?.cos.release();
    this.#rope?.sin.release();
    const half = this.config.headDim / 2;
    const { cos, sin } = ropeTable(n, this.config.headDim, this.config.ropeTheta);
    this.#rope = { cos: this.ctx.upload(cos, [n, half], false), sin: this.ctx.upload(sin, [n, half], false), positions: n };
    return this.#rope;
  }

  // ------------------------------------------------------------------ forward

  #linear(layer: number, module: LinearModule, x: Tensor, st: ForwardState, saved: Map<LinearModule, AdapterActivations> | null): Tensor {
    const ctx = this.ctx;
    const y = matmul(ctx, x, this.#weight(linearWeightName(layer, module)), { transB: true });
    const bias = this.#w.get(linearWeightName(layer, module).replace(/\.weight$/, '.bias'));
    if (bias) addBias(ctx, y, bias);
    if (st.packed) {
      // The base ran once for every row; one shrink and one expand add each row's own adapter delta.
      st.packed.pack.apply(ctx, layer, module, x, y, st.packed.rowAd);
      return y;
    }
    const a = this.#adapter;
    if (a && a.has(layer, module)) {
      const s = a.forward(this.ctx, layer, module, x, y, st.train);
      if (s && saved) saved.set(module, s);
      else s?.release();
    }
    return y;
  }

  /** Records the forward; returns logits [B·T, V] (or [B, V] with lastOnly). */
  #forward(ids: Tensor, st: ForwardState): { logits: Tensor; hidden: Tensor; rstd: Tensor } {
    const ctx = this.ctx;
    const c = this.config;
    const { B, T, past } = st;
    const N = B * T;
    const hd = c.headDim;
    const names = llamaWeightNames(c);
    const rt = this.#ensureRope(st.slots ? st.slots.rows.Tk : past + T);
    let x = embedding(ctx, ids, this.#weight(names.embed));
    for (let l = 0; l < c.numLayers; l++) {
      const ln = names.layers[l]!;
      const loraSaved = st.saved ? new Map<LinearModule, AdapterActivations>() : null;
      const { y: h1, rstd: r1 } = rmsNorm(ctx, x, this.#weight(ln.inputNorm), c.rmsNormEps);
      const q = this.#linear(l, 'q_proj', h1, st, loraSaved);
      const k = this.#linear(l, 'k_proj', h1, st, loraSaved);
      const v = this.#linear(l, 'v_proj', h1, st, loraSaved);
      const kv = c.numKvHeads * hd;
      let qr: Tensor;
      let kr: Tensor;
      let att: Tensor;
      let prob: Tensor | null = null;
      if (st.slots) {
        const { rows, cache } = st.slots;
        qr = ropeRows(ctx, q, rt, rows, c.numHeads, hd);
        kr = ropeRows(ctx, k, rt, rows, c.numKvHeads, hd);
        kvWriteRows(ctx, kr, cache.k[l]!, rows, kv, cache.positions);
        kvWriteRows(ctx, v, cache.v[l]!, rows, kv, cache.positions);
        att = attentionRows(ctx, qr, cache.k[l]!, cache.v[l]!, rows, { nh: c.numHeads, nkv: c.numKvHeads, hd, positions: cache.positions }, 1 / Math.sqrt(hd));
      } else {
        qr = rope(ctx, q, rt, T, past, c.numHeads, hd);
        kr = rope(ctx, k, rt, T, past, c.numKvHeads, hd);
        let shape: AttnShape;
        let kAll = kr;
        let vAll = v;
        if (st.cache) {
          kvWrite(ctx, kr, st.cache.k[l]!, B, T, kv, st.cache.rows, past);
          kvWrite(ctx, v, st.cache.v[l]!, B, T, kv, st.cache.rows, past);
          kAll = st.cache.k[l]!;
          vAll = st.cache.v[l]!;
          shape = { B, T, Tk: past + T, nh: c.numHeads, nkv: c.numKvHeads, hd, kvRows: st.cache.rows, past };
        } else {
          shape = { B, T, Tk: T, nh: c.numHeads, nkv: c.numKvHeads, hd, kvRows: T, past: 0 };
        }
        ({ out: att, prob } = attention(ctx, qr, kAll, vAll, shape, 1 / Math.sqrt(hd)));
      }
      q.release();
      k.release();
      const o = this.#linear(l, 'o_proj', att, st, loraSaved);
      const x2 = add(ctx, x, o);
      o.release();
      const { y: h2, rstd: r2 } = rmsNorm(ctx, x2, this.#weight(ln.postAttentionNorm), c.rmsNormEps);
      const g = this.#linear(l, 'gate_proj', h2, st, loraSaved);
      const u = this.#linear(l, 'up_proj', h2, st, loraSaved);
      const m = siluMul(ctx, g, u);
      const d = this.#linear(l, 'down_proj', m, st, loraSaved);
      const x3 = add(ctx, x2, d);
      d.release();
      if (st.saved && loraSaved && prob) {
        st.saved.push({ x, h1, r1, qr, kr, v, prob, att, x2, h2, r2, g, u, m, lora: loraSaved });
      } else {
        for (const t of [x, h1, r1, qr, kr, v, prob, att, x2, h2, r2, g, u, m]) t?.release();
      }
      x = x3;
    }
    let hidden = x;
    const out = st.slots?.outRows;
    let rows = st.lastOnly ? B : N;
    if (out && !(out.length === N && out.every((r, i) => r === i))) {
      rows = out.length;
      hidden = ctx.tensor([rows, c.hiddenSize]);
      out.forEach((r, i) => ctx.copy(x, r * c.hiddenSize, hidden, i * c.hiddenSize, c.hiddenSize));
      x.release();
    } else if (st.lastOnly && T > 1) {
      hidden = ctx.tensor([B, c.hiddenSize]);
      for (let b = 0; b < B; b++) ctx.copy(x, (b * T + T - 1) * c.hiddenSize, hidden, b * c.hiddenSize, c.hiddenSize);
      x.release();
    }
    const { y: hf, rstd } = rmsNorm(ctx, hidden, this.#weight(names.finalNorm), c.rmsNormEps);
    const logits = matmul(ctx, hf, this.#weight(names.lmHead ?? names.embed), { transB: true });
    hf.release();
    if (logits.size !== rows * c.vocabSize) throw new AppError('INTERNAL', 'logits size mismatch');
    return { logits, hidden, rstd };
  }

  /**
   * Logits [rows·seqLen, V] for a batch of token rows (with the attached adapter, if any);
   * with lastOnly, [rows, V] for each row's last position.
   */
  forward(tokens: TokenRows, options: { lastOnly?: boolean } = {}): Promise<Float32Array> {
    return this.ctx.withLock(async () => {
      this.#check();
      const { ids, B, T } = rowsOf(tokens);
      return this.#logits(ids, { B, T, past: 0, train: false, lastOnly: options.lastOnly ?? false });
    });
  }

  /**
   * Logits [outRows.length, V] of one step over a slot cache (see RowBatch). The attached adapter
   * is not used here: each row gets the adapter of its group in `batch.adapters`, or none.
   */
  forwardRows(batch: RowBatch): Promise<Float32Array> {
    return this.ctx.withLock(async () => {
      this.#check();
      const ctx = this.ctx;
      const R = batch.tokens.length;
      const { cache } = batch;
      if (R === 0 || batch.slots.length !== R || batch.positions.length !== R) throw new AppError('SHAPE_MISMATCH', 'forwardRows: tokens, slots and positions need one entry per row (at least one row).');
      if (cache.k.length !== this.config.numLayers || cache.v.length !== this.config.numLayers) throw new AppError('SHAPE_MISMATCH', 'forwardRows: the cache needs K and V for every layer.');
      if (cache.positions > this.config.maxPositions) throw new AppError('SHAPE_MISMATCH', `forwardRows: the cache has ${cache.positions} positions, the model ${this.config.maxPositions}.`);
      const meta = new Uint32Array(2 * R);
      let Tk = 0;
      for (let r = 0; r < R; r++) {
        const slot = batch.slots[r]!;
        const pos = batch.positions[r]!;
        if (slot >= cache.slots || pos >= cache.positions) throw new AppError('INTERNAL', `forwardRows: row ${r} (slot ${slot}, position ${pos}) is outside the cache [${cache.slots}, ${cache.positions}].`);
        meta[2 * r] = slot;
        meta[2 * r + 1] = pos;
        Tk = Math.max(Tk, pos + 1);
      }
      for (const r of batch.outRows) if (!(r >= 0 && r < R)) throw new AppError('INTERNAL', `forwardRows: output row ${r} is not a row of the batch.`);
      const seen = new Set<number>();
      for (const g of batch.adapters) {
        g.adapter.checkCompatible(this.config);
        for (const r of g.rows) {
          if (!(r >= 0 && r < R) || seen.has(r)) throw new AppError('INTERNAL', `forwardRows: adapter row ${r} is out of range or in two groups.`);
          seen.add(r);
        }
      }
      const metaT = ctx.upload(meta, [R, 2]);
      const used = batch.adapters.filter((g) => g.rows.length > 0);
      let packed: ForwardState['packed'];
      if (used.length > 0) {
        const pack = this.#packFor(used.map((g) => g.adapter));
        const rowAd = new Uint32Array(R).fill(NO_ADAPTER);
        for (const g of used) {
          const slot = pack.slotOf(g.adapter);
          for (const r of g.rows) rowAd[r] = slot;
        }
        packed = { pack, rowAd: ctx.upload(rowAd, [R]) };
      }
      try {
        return await this.#logits(batch.tokens, { B: R, T: 1, past: 0, train: false, lastOnly: false, slots: { rows: { meta: metaT, rows: R, Tk }, cache, outRows: batch.outRows }, ...(packed ? { packed } : {}) });
      } finally {
        metaT.release();
        packed?.rowAd.release();
      }
    });
  }

  /**
   * A pack holding these adapters as they are now: the current one when it does, else a new one with them and
   * the current one's other adapters still current (up to MAX_PACKED_ADAPTERS), so adapters that come and go in
   * the batch do not repack every step. The copies are GPU-side (copyBufferToBuffer), recorded before the step.
   */
  #packFor(adapters: readonly LinearAdapter[]): AdapterPack {
    const old = this.#pack;
    if (old && old.covers(this.ctx, adapters)) return old;
    const own = [...new Set(adapters)];
    let next = [...own];
    if (old) {
      for (const a of old.adapters) {
        if (next.length >= MAX_PACKED_ADAPTERS) break;
        if (!next.includes(a) && old.covers(this.ctx, [a])) next.push(a);
      }
      old.release();
    }
    // Each factor buffer is one storage binding: past the device's limit, only this batch's adapters are packed.
    const limit = this.ctx.maxTensorBytes;
    let bytes = AdapterPack.bindingBytes(this.config, next);
    if (bytes > limit && next.length > own.length) {
      next = own;
      bytes = AdapterPack.bindingBytes(this.config, next);
    }
    if (bytes > limit) {
      this.#pack = null;
      throw new AppError('MODEL_TOO_LARGE', `The ${next.length} adapters of this batch need ${bytes} bytes of factors in one binding; the device binds at most ${limit}. Batch fewer adapters at once.`);
    }
    this.#pack = new AdapterPack(this.ctx, this.config, next);
    return this.#pack;
  }

  /** Runs the forward pass on token ids and reads back only the logits. */
  async #logits(ids: Uint32Array, st: ForwardState): Promise<Float32Array> {
    const idT = this.ctx.upload(ids, [ids.length]);
    const { logits, hidden, rstd } = this.#forward(idT, st);
    idT.release();
    hidden.release();
    rstd.release();
    let out: Float32Array;
    if (logits.size === 0) {
      this.ctx.flush(); // no rows asked for (a chunk inside a prompt): submit the cache writes
      out = new Float32Array(0);
    } else {
      out = await this.ctx.read(logits);
    }
    logits.release();
    return out;
  }

  // ------------------------------------------------------------------ generation

  #newCache(B: number, rows: number): KvCache {
    const kv = this.config.numKvHeads * this.config.headDim;
    const k: Tensor[] = [];
    const v: Tensor[] = [];
    for (let l = 0; l < this.config.numLayers; l++) {
      k.push(this.ctx.tensor([B, rows, kv]));
      v.push(this.ctx.tensor([B, rows, kv]));
    }
    return { k, v, rows, B };
  }

  #step(tokens: Uint32Array, cache: KvCache, past: number): Promise<Float32Array> {
    return this.#logits(tokens, { B: 1, T: tokens.length, past, cache, train: false, lastOnly: true });
  }

  /**
   * Continues one prompt with a KV cache: the prompt in one pass, then one token per pass.
   * Returns the new tokens (the stop token included when one was produced).
   */
  generate(prompt: readonly number[], opts: GenerateOptions): Promise<number[]> {
    return this.ctx.withLock(async () => {
      this.#check();
      if (prompt.length === 0) throw new AppError('SHAPE_MISMATCH', 'generate needs a non-empty prompt.');
      const maxNew = Math.max(0, Math.floor(opts.maxNewTokens));
      const total = prompt.length + maxNew;
      if (total > this.config.maxPositions) {
        throw new AppError('SHAPE_MISMATCH', `Prompt plus new tokens (${total}) exceed the model's ${this.config.maxPositions} positions.`);
      }
      this.#ensureRope(total);
      const stops = new Set(opts.stopTokens ?? this.config.eosTokenIds);
      const rng = mulberry32(opts.seed ?? 0);
      const cache = this.#newCache(1, Math.max(1, total));
      const out: number[] = [];
      try {
        let logits = await this.#step(Uint32Array.from(prompt), cache, 0);
        let past = prompt.length;
        for (let i = 0; i < maxNew; i++) {
          if (opts.signal?.aborted) throw new AppError('CANCELLED', 'Generation was stopped before it finished.', { tokens: out.length });
          const id = sampleToken(logits, opts, rng.next);
          out.push(id);
          opts.onToken?.(id);
          if (stops.has(id) || i === maxNew - 1) break;
          logits = await this.#step(Uint32Array.of(id), cache, past);
          past++;
        }
      } finally {
        for (const t of [...cache.k, ...cache.v]) t.release();
      }
      return out;
    });
  }

  // ------------------------------------------------------------------ training

  /**
   * Mean masked cross-entropy of a batch (targets[t] = next token, lossMask 1 = counted), without
   * gradients.
   */
  evalLoss(batch: Batch): Promise<number> {
    return this.ctx.withLock(async () => {
      this.#check();
      return (await this.#lossAndGrad(batch, 0)).loss;
    });
  }

  /**
   * Forward, loss and the backward through the whole network; gradients of the attached adapter
   * are *accumulated* (scaled by gradScale, e.g. 1/accumulationSteps). Returns the batch's mean loss.
   * Used by LoraTrainer; callers normally go through it.
   */
  lossAndGrad(batch: Batch, gradScale = 1, afterBackward?: () => Tensor | null): Promise<{ loss: number; tokens: number; extra?: Float32Array }> {
    return this.ctx.withLock(async () => {
      this.#check();
      if (!this.#adapter) throw new AppError('INTERNAL', 'Attach a LoRA adapter before training (setAdapter).');
      return this.#lossAndGrad(batch, gradScale, afterBackward);
    });
  }

  /**
   * The whole step is recorded first and submitted once; `afterBackward` records more work behind
   * the backward (the optimizer) and may return a small tensor that is read back with the loss (as
   * `extra`) and released.
   */
  async #lossAndGrad(batch: Batch, gradScale: number, afterBackward?: () => Tensor | null): Promise<{ loss: number; tokens: number; extra?: Float32Array }> {
    const ctx = this.ctx;
    const B = batch.rows;
    const T = batch.seqLen;
    const N = B * T;
    if (batch.inputIds.length !== N || batch.targets.length !== N || batch.lossMask.length !== N) {
      throw new AppError('SHAPE_MISMATCH', `Batch arrays must hold rows·seqLen = ${N} entries.`);
    }
    let count = 0;
    for (const m of batch.lossMask) count += m;
    const train = gradScale !== 0;
    const ids = ctx.upload(Uint32Array.from(batch.inputIds), [N]);
    const targets = ctx.upload(Uint32Array.from(batch.targets, (t) => Math.max(0, t)), [N]);
    const mask = ctx.upload(Float32Array.from(batch.lossMask), [N]);
    const saved: LayerSaved[] = [];
    const st: ForwardState = { B, T, past: 0, train, lastOnly: false };
    if (train) st.saved = saved;
    const { logits, hidden, rstd } = this.#forward(ids, st);
    const { loss, lse } = crossEntropy(ctx, logits, targets, mask);
    if (train && count > 0) this.#backward(logits, hidden, rstd, targets, mask, lse, saved, gradScale / count);
    for (const s of saved) {
      for (const t of [s.x, s.h1, s.r1, s.qr, s.kr, s.v, s.prob, s.att, s.x2, s.h2, s.r2, s.g, s.u, s.m]) t.release();
      for (const l of s.lora.values()) l.release();
    }
    for (const t of [ids, targets, logits, hidden, rstd, lse]) t.release();
    mask.release();
    const extraT = afterBackward?.() ?? null;
    let readT = loss;
    if (extraT) {
      // One read-back for both: [row losses…, extra…].
      readT = ctx.tensor([N + extraT.size]);
      ctx.copy(loss, 0, readT, 0, N);
      ctx.copy(extraT, 0, readT, N, extraT.size);
      extraT.release();
      loss.release();
    }
    const all = await ctx.read(readT);
    readT.release();
    let total = 0;
    for (let i = 0; i < N; i++) total += all[i]!;
    const out: { loss: number; tokens: number; extra?: Float32Array } = { loss: count > 0 ? total / count : 0, tokens: count };
    if (extraT) out.extra = all.slice(N);
    return out;
  }

  #linearBackward(layer: number, module: LinearModule, dy: Tensor, saved: LayerSaved, dx: Tensor | null): Tensor {
    const w = this.#weight(linearWeightName(layer, module));
    const out = matmul(this.ctx, dy, w, dx ? { out: dx, beta: 1 } : {});
    const s = saved.lora.get(module);
    if (s && this.#adapter) this.#adapter.backward(this.ctx, layer, module, dy, s, out);
    return out;
  }

  #backward(logits: Tensor, hidden: Tensor, rstdF: Tensor, targets: Tensor, mask: Tensor, lse: Tensor, saved: LayerSaved[], scale: number): void {
    const ctx = this.ctx;
    const c = this.config;
    const names = llamaWeightNames(c);
    const hd = c.headDim;
    const dLogits = crossEntropyBackward(ctx, logits, targets, mask, lse, scale);
    const dhf = matmul(ctx, dLogits, this.#weight(names.lmHead ?? names.embed));
    dLogits.release();
    let dx = rmsNormBackward(ctx, hidden, this.#weight(names.finalNorm), rstdF, dhf);
    dhf.release();
    const T = saved.length ? saved[0]!.prob.shape[2]! : 0;
    const Bn = saved.length ? saved[0]!.prob.shape[0]! : 0;
    for (let l = c.numLayers - 1; l >= 0; l--) {
      const s = saved[l]!;
      const ln = names.layers[l]!;
      // x3 = x2 + down(silu(gate(h2)) · up(h2))
      const dm = this.#linearBackward(l, 'down_proj', dx, s, null);
      const { dGate, dUp } = siluMulBackward(ctx, s.g, s.u, dm);
      dm.release();
      const dh2 = this.#linearBackward(l, 'gate_proj', dGate, s, null);
      this.#linearBackward(l, 'up_proj', dUp, s, dh2);
      dGate.release();
      dUp.release();
      const dx2 = rmsNormBackward(ctx, s.x2, this.#weight(ln.postAttentionNorm), s.r2, dh2);
      dh2.release();
      accumulate(ctx, dx, dx2, 1, 1);
      dx.release();
      // x2 = x + o(attention(rope(q(h1)), rope(k(h1)), v(h1)))
      const datt = this.#linearBackward(l, 'o_proj', dx2, s, null);
      const shape: AttnShape = { B: Bn, T, Tk: T, nh: c.numHeads, nkv: c.numKvHeads, hd, kvRows: T, past: 0 };
      const { dq, dk, dv } = attentionBackward(ctx, s.qr, s.kr, s.v, s.prob, datt, shape, 1 / Math.sqrt(hd));
      datt.release();
      const rt = this.#ensureRope(T);
      const dqr = rope(ctx, dq, rt, T, 0, c.numHeads, hd, true);
      const dkr = rope(ctx, dk, rt, T, 0, c.numKvHeads, hd, true);
      dq.release();
      dk.release();
      const dh1 = this.#linearBackward(l, 'q_proj', dqr, s, null);
      this.#linearBackward(l, 'k_proj', dkr, s, dh1);
      this.#linearBackward(l, 'v_proj', dv, s, dh1);
      dqr.release();
      dkr.release();
      dv.release();
      const dxa = rmsNormBackward(ctx, s.x, this.#weight(ln.inputNorm), s.r1, dh1);
      dh1.release();
      accumulate(ctx, dx2, dxa, 1, 1);
      dx2.release();
      dx = dxa;
    }
    dx.release();
  }
}

/** Picks the next token from one row of logits: greedy at temperature 0, else top-k / top-p sampling. */
export function sampleToken(logits: Float32Array, opts: Pick<GenerateOptions, 'temperature' | 'topK' | 'topP'>, random: () => number): number {
  const V = logits.length;
  const temp = opts.temperature ?? 0;
  if (!(temp > 0)) {
    let best = 0;
    for (let i = 1; i < V; i++) if (logits[i]! > logits[best]!) best = i;
    return best;
  }
  let idx = Array.from({ length: V }, (_, i) => i).sort((a, b) => logits[b]! - logits[a]!);
  if (opts.topK && opts.topK > 0) idx = idx.slice(0, opts.topK);
  const mx = logits[idx[0]!]!;
  let probs = idx.map((i) => Math.exp((logits[i]! - mx) / temp));
  let sum = probs.reduce((a, b) => a + b, 0);
  probs = probs.map((p) => p / sum);
  if (opts.topP !== undefined && opts.topP > 0 && opts.topP < 1) {
    let acc = 0;
    let keep = 0;
    while (keep < probs.length && acc < opts.topP) acc += probs[keep++]!;
    idx = idx.slice(0, keep);
    probs = probs.slice(0, keep);
    sum = probs.reduce((a, b) => a + b, 0);
    probs = probs.map((p) => p / sum);
  }
  let r = random();
  for (let i = 0; i < probs.length; i++) {
    r -= probs[i]!;
    if (r < 0) return idx[i]!;
  }
  return idx[idx.length - 1]!;
}
