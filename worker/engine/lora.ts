/**
 * LoRA on the engine: y = W·x + (alpha/r)·B·A·dropout(x) on the chosen linear modules, with the
 * base frozen. A starts Kaiming-uniform (PEFT's bound 1/√in, seeded), B at zero. Gradients for A
 * and B accumulate across micro-batches; AdamW updates them. Adapters are exported and imported as
 * Float32Arrays keyed by `loraKey(layer, module)` (worker/model's PEFT writer takes those) or by
 * PEFT tensor names.
 */
import { AppError } from '../../shared';
import { LINEAR_MODULES, linearShape, loraKey, mulberry32, peftTensorName, type Batch, type LinearModule, type LlamaConfig, type LoraPair, type LoraSettings } from '../model';
import { GpuContext, Tensor } from './context';
import type { AdaptableModel, AdapterActivations, LinearAdapter, LowRankFactors } from './adapter-types';
import { accumulate, adamw, dropout, gradClipFactor, scaleInPlace, sumSquares, type AdamWOptions } from './kernels';
import { matmul } from './matmul';

export interface LoraOptions {
  rank: number;
  alpha: number;
  dropout?: number;
  /** Default: all seven (q, k, v, o, gate, up, down). */
  targets?: readonly LinearModule[];
  /** Seeds A's initialisation and the dropout masks. */
  seed?: number;
}

/**
 * One factor (A or B): its values, and its gradient and AdamW moments, made (zeros) when training first touches
 * them: an adapter loaded only for inference holds its values alone (a quarter of the buffers to create and fill).
 */
class Param {
  #grad: Tensor | null = null;
  #m: Tensor | null = null;
  #v: Tensor | null = null;
  constructor(
    readonly ctx: GpuContext,
    readonly value: Tensor,
    readonly shape: number[],
  ) {}
  get grad(): Tensor {
    return (this.#grad ??= this.ctx.zeros(this.shape, 'f32', false));
  }
  get m(): Tensor {
    return (this.#m ??= this.ctx.zeros(this.shape, 'f32', false));
  }
  get v(): Tensor {
    return (this.#v ??= this.ctx.zeros(this.shape, 'f32', false));
  }
  release(): void {
    for (const t of [this.value, this.#grad, this.#m, this.#v]) t?.release();
  }
}

interface Pair {
  a: Param;
  b: Param;
  in: number;
  out: number;
}

/** What the forward keeps for the backward of one adapted linear. */
export class LoraSaved implements AdapterActivations {
  constructor(
    readonly x: Tensor,
    readonly ownsX: boolean,
    readonly a: Tensor,
    readonly seed: number,
  ) {}
  release(): void {
    if (this.ownsX) this.x.release();
    this.a.release();
  }
}

function mix(a: number, b: number): number {
  let h = Math.imul(a ^ 0x9e3779b9, 0x85ebca6b) ^ b;
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35);
  return (h ^ (h >>> 16)) >>> 0;
}

/** One adapted projection's training state: A, B and the AdamW moments (m, v) of each. */
export interface LoraParamState {
  a: Float32Array;
  b: Float32Array;
  am: Float32Array;
  av: Float32Array;
  bm: Float32Array;
  bv: Float32Array;
}

/** GpuLoraAdapter.exportState: every projection's state by `loraKey`, the optimizer's step, the dropout stream's position. */
export interface LoraOptimizerState {
  step: number;
  dropoutCalls: number;
  params: Map<string, LoraParamState>;
}

export class GpuLoraAdapter implements LinearAdapter {
  readonly ctx: GpuContext;
  readonly settings: LoraSettings;
  readonly numLayers: number;
  readonly seed: number;
  #pairs = new Map<string, Pair>();
  #generation: number;
  #dropoutCalls = 0;
  #step = 0;
  #version = 0;
  #hidden: number;

  private constructor(ctx: GpuContext, config: LlamaConfig, settings: LoraSettings, seed: number) {
    if (!(settings.r > 0 && Number.isInteger(settings.r))) throw new AppError('ADAPTER_INVALID', `LoRA rank must be a positive integer (got ${settings.r}).`);
    if (!(settings.dropout >= 0 && settings.dropout < 1)) throw new AppError('ADAPTER_INVALID', `LoRA dropout must be in [0, 1) (got ${settings.dropout}).`);
    this.ctx = ctx;
    this.settings = settings;
    this.numLayers = config.numLayers;
    this.seed = seed;
    this.#generation = ctx.generation;
    this.#hidden = config.hiddenSize;
  }

  /** A fresh adapter: A Kaiming-uniform in ±1/√in (seeded), B zeros, as PEFT initialises it. */
  static create(ctx: GpuContext, config: LlamaConfig, opts: LoraOptions): GpuLoraAdapter {
    const settings: LoraSettings = { r: opts.rank, alpha: opts.alpha, dropout: opts.dropout ?? 0, targetModules: [...(opts.targets ?? LINEAR_MODULES)] };
    const ad = new GpuLoraAdapter(ctx, config, settings, opts.seed ?? 0);
    const rng = mulberry32(opts.seed ?? 0);
    for (let l = 0; l < config.numLayers; l++) {
      for (const m of settings.targetModules) {
        const s = linearShape(config, m);
        const bound = 1 / Math.sqrt(s.in);
        const a = Float32Array.from({ length: settings.r * s.in }, () => (2 * rng.next() - 1) * bound);
        ad.#addPair(l, m, s, a, new Float32Array(s.out * settings.r));
      }
    }
    return ad;
  }

  /** An adapter from Float32Arrays keyed by `loraKey(layer, module)` (what worker/model's loadAdapter gives). */
  static fromPairs(ctx: GpuContext, config: LlamaConfig, settings: LoraSettings, weights: ReadonlyMap<string, LoraPair>, seed = 0): GpuLoraAdapter {
    const ad = new GpuLoraAdapter(ctx, config, { ...settings, targetModules: [...settings.targetModules] }, seed);
    for (let l = 0; l < config.numLayers; l++) {
      for (const m of settings.targetModules) {
        const s = linearShape(config, m);
        const p = weights.get(loraKey(l, m));
        if (!p) throw new AppError('ADAPTER_INVALID', `The adapter has no tensors for layer ${l} ${m}.`);
        if (p.a.length !== settings.r * s.in || p.b.length !== s.out * settings.r) {
          throw new AppError('ADAPTER_MISMATCH', `Adapter tensors for layer ${l} ${m} do not fit this model (rank ${settings.r}, ${s.in}→${s.out}).`);
        }
        ad.#addPair(l, m, s, p.a, p.b);
      }
    }
    return ad;
  }

  /** An adapter from PEFT tensor names (`base_model.model.model.layers.{i}.….lora_A.weight`). */
  static fromPeftTensors(ctx: GpuContext, config: LlamaConfig, settings: LoraSettings, tensors: ReadonlyMap<string, { data: Float32Array }>, seed = 0): GpuLoraAdapter {
    const pairs = new Map<string, LoraPair>();
    for (let l = 0; l < config.numLayers; l++) {
      for (const m of settings.targetModules) {
        const a = tensors.get(peftTensorName(l, m, 'A'));
        const b = tensors.get(peftTensorName(l, m, 'B'));
        if (a && b) pairs.set(loraKey(l, m), { a: a.data, b: b.data });
      }
    }
    return GpuLoraAdapter.fromPairs(ctx, config, settings, pairs, seed);
  }

  #param(data: Float32Array, shape: number[]): Param {
    return new Param(this.ctx, this.ctx.upload(data, shape, false), shape);
  }

  #addPair(layer: number, module: LinearModule, s: { in: number; out: number }, a: Float32Array, b: Float32Array): void {
    const r = this.settings.r;
    this.#pairs.set(loraKey(layer, module), { a: this.#param(a, [r, s.in]), b: this.#param(b, [s.out, r]), in: s.in, out: s.out });
  }

  get scaling(): number {
    return this.settings.alpha / this.settings.r;
  }

  /** Optimizer steps taken so far. */
  get steps(): number {
    return this.#step;
  }

  get parameterCount(): number {
    let n = 0;
    for (const p of this.#pairs.values()) n += p.a.value.size + p.b.value.size;
    return n;
  }

  checkCompatible(config: LlamaConfig): void {
    if (this.#generation !== this.ctx.generation) throw new AppError('GPU_DEVICE_LOST', 'The GPU device was reset since this adapter was created; load it again.');
    if (config.numLayers !== this.numLayers || config.hiddenSize !== this.#hidden) {
      throw new AppError('ADAPTER_MISMATCH', 'This adapter was made for a model of another shape.');
    }
  }

  has(layer: number, module: LinearModule): boolean {
    return this.#pairs.has(loraKey(layer, module));
  }

  #pair(layer: number, module: LinearModule): Pair {
    const p = this.#pairs.get(loraKey(layer, module));
    if (!p) throw new AppError('INTERNAL', `No LoRA pair for layer ${layer} ${module}.`);
    return p;
  }

  /** Adds scaling·B·A·dropout(x) into y; in training returns what the backward needs. */
  forward(ctx: GpuContext, layer: number, module: LinearModule, x: Tensor, y: Tensor, train: boolean): LoraSaved | null {
    const p = this.#pair(layer, module);
    const drop = train && this.settings.dropout > 0;
    const seed = drop ? mix(mix(this.seed, this.#dropoutCalls++), layer * 16 + LINEAR_MODULES.indexOf(module)) : 0;
    const xd = drop ? dropout(ctx, x, this.settings.dropout, seed) : x;
    const a = matmul(ctx, xd, p.a.value, { transB: true });
    matmul(ctx, a, p.b.value, { transB: true, alpha: this.scaling, beta: 1, out: y });
    if (!train) {
      a.release();
      if (drop) xd.release();
      return null;
    }
    return new LoraSaved(xd, drop, a, seed);
  }

  lowRank(layer: number, module: LinearModule): LowRankFactors | null {
    const p = this.#pairs.get(loraKey(layer, module));
    return p ? { a: p.a.value, b: p.b.value, rank: this.settings.r, scaling: this.scaling } : null;
  }

  /** Bumped by every optimizer step and imported state (packs of the old values are stale then). */
  get weightsVersion(): number {
    return this.#version;
  }

  /** Accumulates dA, dB and adds the adapter's share of dx. */
  backward(ctx: GpuContext, layer: number, module: LinearModule, dy: Tensor, saved: AdapterActivations, dx: Tensor): void {
    if (!(saved instanceof LoraSaved)) throw new AppError('INTERNAL', 'LoRA backward got activations saved by another adapter.');
    const p = this.#pair(layer, module);
    const s = this.scaling;
    // dB += s · dyᵀ·a ; da = s · dy·B ; dA += daᵀ·xd ; dx += dropout'(da·A)
    matmul(ctx, dy, saved.a, { transA: true, alpha: s, beta: 1, out: p.b.grad });
    const da = matmul(ctx, dy, p.b.value, { alpha: s });
    matmul(ctx, da, saved.x, { transA: true, beta: 1, out: p.a.grad });
    if (this.settings.dropout > 0 && saved.ownsX) {
      const dxd = matmul(ctx, da, p.a.value);
      const back = dropout(ctx, dxd, this.settings.dropout, saved.seed);
      accumulate(ctx, back, dx, 1, 1);
      dxd.release();
      back.release();
    } else {
      matmul(ctx, da, p.a.value, { beta: 1, out: dx });
    }
    da.release();
  }

  /** The global L2 norm of the accumulated gradients (one small read-back). */
  gradNorm(): Promise<number> {
    return this.ctx.withLock(() => this.gradNormUnlocked());
  }

  /** gradNorm for callers already holding the context's lock. */
  async gradNormUnlocked(): Promise<number> {
    const params = [...this.#pairs.values()].flatMap((p) => [p.a, p.b]);
    const slots = this.ctx.tensor([params.length]);
    params.forEach((q, i) => sumSquares(this.ctx, q.grad, slots, i));
    const sums = await this.ctx.read(slots);
    slots.release();
    let total = 0;
    for (const v of sums) total += v;
    return Math.sqrt(total);
  }

  /** Records grad *= s on every gradient (clipping). */
  scaleGrads(s: number): void {
    for (const p of this.#pairs.values()) {
      scaleInPlace(this.ctx, p.a.grad, s);
      scaleInPlace(this.ctx, p.b.grad, s);
    }
  }

  /** Records zeroing of every gradient. */
  zeroGrad(): void {
    for (const p of this.#pairs.values()) {
      scaleInPlace(this.ctx, p.a.grad, 0);
      scaleInPlace(this.ctx, p.b.grad, 0);
    }
  }

  /** Records one AdamW step on every A and B, then zeroes the gradients. */
  optimizerStep(opts: AdamWOptions): void {
    this.#step++;
    this.#version++;
    for (const p of this.#pairs.values()) {
      for (const q of [p.a, p.b]) adamw(this.ctx, q.value, q.grad, q.m, q.v, this.#step, opts);
    }
    this.zeroGrad();
  }

  /**
   * Records a whole update with no read-back: with maxGradNorm > 0 the global gradient norm and the
   * clipping factor are computed on the GPU and AdamW scales the gradients by it; then the gradients
   * are zeroed. Returns a [2] tensor (norm, factor) when clipping — read and release it — else null.
   */
  recordUpdate(opts: AdamWOptions, maxGradNorm?: number): Tensor | null {
    let clip: Tensor | null = null;
    if (maxGradNorm !== undefined && maxGradNorm > 0) {
      const params = [...this.#pairs.values()].flatMap((p) => [p.a, p.b]);
      const slots = this.ctx.tensor([params.length]);
      params.forEach((q, i) => sumSquares(this.ctx, q.grad, slots, i));
      clip = gradClipFactor(this.ctx, slots, maxGradNorm, this.ctx.tensor([2]));
      slots.release();
    }
    this.#step++;
    this.#version++;
    for (const p of this.#pairs.values()) {
      for (const q of [p.a, p.b]) adamw(this.ctx, q.value, q.grad, q.m, q.v, this.#step, opts, clip ?? undefined);
    }
    this.zeroGrad();
    return clip;
  }

  /** Current A/B values keyed by `loraKey(layer, module)` — hand to worker/model's saveAdapter. */
  async toPairs(): Promise<Map<string, LoraPair>> {
    return this.ctx.withLock(async () => {
      const out = new Map<string, LoraPair>();
      for (const [key, p] of this.#pairs) out.set(key, { a: await this.ctx.read(p.a.value), b: await this.ctx.read(p.b.value) });
      return out;
    });
  }

  /**
   * What resuming a run needs, read back at a step boundary (the gradients are zero there): A and B, their AdamW
   * moments, the optimizer's step count and the dropout stream's position.
   */
  async exportState(): Promise<LoraOptimizerState> {
    return this.ctx.withLock(async () => {
      const params = new Map<string, LoraParamState>();
      for (const [key, p] of this.#pairs) {
        params.set(key, {
          a: await this.ctx.read(p.a.value),
          b: await this.ctx.read(p.b.value),
          am: await this.ctx.read(p.a.m),
          av: await this.ctx.read(p.a.v),
          bm: await this.ctx.read(p.b.m),
          bv: await this.ctx.read(p.b.v),
        });
      }
      return { step: this.#step, dropoutCalls: this.#dropoutCalls, params };
    });
  }

  /** Puts an exported state back (this adapter's shapes; TRAINING_CHECKPOINT_INVALID when it does not fit). */
  importState(state: LoraOptimizerState): void {
    const bad = (why: string): never => {
      throw new AppError('TRAINING_CHECKPOINT_INVALID', `The training checkpoint does not fit this run: ${why}.`);
    };
    if (!Number.isSafeInteger(state.step) || state.step < 0 || !Number.isSafeInteger(state.dropoutCalls) || state.dropoutCalls < 0) bad('its counters are not whole numbers');
    if (state.params.size !== this.#pairs.size) bad(`${state.params.size} adapted projections where the run has ${this.#pairs.size}`);
    for (const [key, p] of this.#pairs) {
      const q = state.params.get(key);
      if (!q) bad(`no tensors for ${key}`);
      const aLen = p.a.value.size;
      const bLen = p.b.value.size;
      if (q!.a.length !== aLen || q!.am.length !== aLen || q!.av.length !== aLen || q!.b.length !== bLen || q!.bm.length !== bLen || q!.bv.length !== bLen) bad(`the tensors of ${key} have other sizes`);
    }
    for (const [key, p] of this.#pairs) {
      const q = state.params.get(key)!;
      this.ctx.write(p.a.value, q.a);
      this.ctx.write(p.a.m, q.am);
      this.ctx.write(p.a.v, q.av);
      this.ctx.write(p.b.value, q.b);
      this.ctx.write(p.b.m, q.bm);
      this.ctx.write(p.b.v, q.bv);
    }
    this.#step = state.step;
    this.#dropoutCalls = state.dropoutCalls;
    this.#version++;
  }

  /** Accumulated gradients of A and B keyed by `loraKey` (for inspection, gradient norms and tests). */
  async gradPairs(): Promise<Map<string, LoraPair>> {
    return this.ctx.withLock(async () => {
      const out = new Map<string, LoraPair>();
      for (const [key, p] of this.#pairs) out.set(key, { a: await this.ctx.read(p.a.grad), b: await this.ctx.read(p.b.grad) });
      return out;
    });
  }

  /** Current A/B keyed by PEFT tensor names, with shapes ([r, in] and [out, r]). */
  async toPeftTensors(): Promise<Map<string, { shape: number[]; data: Float32Array }>> {
    const pairs = await this.toPairs();
    const out = new Map<string, { shape: number[]; data: Float32Array }>();
    for (let l = 0; l < this.numLayers; l++) {
      for (const m of this.settings.targetModules) {
        const pr = pairs.get(loraKey(l, m));
        const p = this.#pairs.get(loraKey(l, m));
        if (!pr || !p) continue;
        out.set(peftTensorName(l, m, 'A'), { shape: [this.settings.r, p.in], data: pr.a });
        out.set(peftTensorName(l, m, 'B'), { shape: [p.out, this.settings.r], data: pr.b });
      }
    }
    return out;
  }

  release(): void {
    for (const p of this.#pairs.values()) for (const q of [p.a, p.b]) q.release();
    this.#pairs.clear();
  }
}

export interface TrainerOptions extends AdamWOptions {
  /** Micro-batches per optimizer step (gradient accumulation). Default 1. */
  accumulationSteps?: number;
  /** Clip the global gradient norm to this before each update (off when absent). */
  maxGradNorm?: number;
}

export interface TrainStepResult {
  /** Mean masked loss of this micro-batch (before the update). */
  loss: number;
  /** Tokens counted in the loss. */
  tokens: number;
  /** Whether this call ran the optimizer. */
  updated: boolean;
  /** Optimizer steps so far. */
  step: number;
  /** Global gradient norm before clipping, when this call updated and maxGradNorm is set. */
  gradNorm?: number;
}

/** Runs LoRA training on a model with its adapter attached: forward, loss, backward, AdamW. */
export class LoraTrainer {
  readonly model: AdaptableModel;
  readonly adapter: GpuLoraAdapter;
  readonly options: TrainerOptions;
  #micro = 0;

  constructor(model: AdaptableModel, adapter: GpuLoraAdapter, options: TrainerOptions) {
    this.model = model;
    this.adapter = adapter;
    this.options = options;
    if (model.adapter !== adapter) model.setAdapter(adapter);
  }

  /**
   * One micro-batch; every `accumulationSteps` calls it updates the adapter. The update (clipping
   * included) is recorded behind the backward in the same submission, so a step waits on the GPU
   * once, for the loss (and the gradient norm).
   */
  async step(batch: Batch): Promise<TrainStepResult> {
    if (this.model.adapter !== this.adapter) throw new AppError('INTERNAL', 'The trainer\'s adapter is no longer attached to the model.');
    const accum = Math.max(1, Math.floor(this.options.accumulationSteps ?? 1));
    const update = (this.#micro + 1) % accum === 0;
    const max = this.options.maxGradNorm;
    const { loss, tokens, extra } = await this.model.lossAndGrad(batch, 1 / accum, update ? () => this.adapter.recordUpdate(this.options, max) : undefined);
    this.#micro++;
    const result: TrainStepResult = { loss, tokens, updated: update, step: this.adapter.steps };
    if (update && extra && max !== undefined && max > 0) result.gradNorm = extra[0]!;
    return result;
  }

  /** Applies the optimizer to whatever gradient has accumulated; returns the gradient norm when clipping. */
  async flush(): Promise<number | undefined> {
    const ctx = this.adapter.ctx;
    return ctx.withLock(async () => {
      let norm: number | undefined;
      const max = this.options.maxGradNorm;
      if (max !== undefined && max > 0) {
        norm = await this.adapter.gradNormUnlocked();
        if (norm > max) this.adapter.scaleGrads(max / (norm + 1e-6));
      }
      this.adapter.optimizerStep(this.options);
      await ctx.sync();
      return norm;
    });
  }
}
