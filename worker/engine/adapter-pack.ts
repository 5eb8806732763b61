/**
 * Several LoRA adapters in one continuous batch, the way Punica's BGMV and S-LoRA do it: the adapters' A and B
 * factors of each projection are packed into one buffer each, and two kernels per projection apply every row's own
 * adapter, whatever the number of adapters in the batch:
 *
 *   shrink  T[row, k] = Σ_i X[row, i] · A_ad(row)[k, i]          (k < the adapter's rank)
 *   expand  Y[row, o] += scaling_ad(row) · Σ_k T[row, k] · B_ad(row)[o, k]
 *
 * A row without an adapter (ROW_AD = NONE) is left as the base computed it. Each row's arithmetic depends on that
 * row alone, so a sequence gets bit-identical logits alone or beside any others. A pack holds copies of the
 * factors (taken when it is built, with each adapter's weightsVersion), so an adapter released or trained
 * afterwards does not change it; LlamaModel builds one when a batch names an adapter its pack lacks or has stale.
 */
import { AppError } from '../../shared';
import { LINEAR_MODULES, linearShape, type LinearModule, type LlamaConfig } from '../model';
import type { LinearAdapter } from './adapter-types';
import type { GpuContext, Tensor } from './context';
import { FLAT, flat, params, rowGrid, rowPipeline, struct } from './kernels';

/** ROW_AD value of a row that no adapter changes. */
export const NO_ADAPTER = 0xffffffff;

/** One projection's place in the pack: its rows of META, the largest rank among the adapters (T's row width), its shape. */
interface PackedProjection {
  /** Index of its first META row ([adapters] rows of 4 u32 from here). */
  metaBase: number;
  rmax: number;
  inDim: number;
  outDim: number;
}

const SHRINK = `${struct('uuuu', ['rows', 'inDim', 'rmax', 'metaBase'])}
@group(0) @binding(1) var<storage, read> X: array<f32>;
@group(0) @binding(2) var<storage, read> A: array<f32>;
@group(0) @binding(3) var<storage, read> AD: array<u32>;
@group(0) @binding(4) var<storage, read> RA: array<u32>;
@group(0) @binding(5) var<storage, read_write> T: array<f32>;
ROW_PRELUDE
  if (row >= p.rows * p.rmax) { return; }
  let r = row / p.rmax;
  let k = row % p.rmax;
  let ad = RA[r];
  let some = ad != ${NO_ADAPTER}u;
  let a = select(0u, ad, some);
  let m = 4u * (p.metaBase + a);
  let valid = some && k < AD[m + 2u];
  let base = select(0u, AD[m] + k * p.inDim, valid);
  var s = 0.0;
  for (var c = t; c < p.inDim; c = c + RSTRIDE) { s = s + X[r * p.inDim + c] * A[base + c]; }
  let ss = reduceSum(s, t);
  if (t == 0u) { T[row] = select(0.0, ss, valid); }
}`;

const EXPAND = `${struct('uuuu', ['rows', 'outDim', 'rmax', 'metaBase'])}
@group(0) @binding(1) var<storage, read> T: array<f32>;
@group(0) @binding(2) var<storage, read> B: array<f32>;
@group(0) @binding(3) var<storage, read> AD: array<u32>;
@group(0) @binding(4) var<storage, read> RA: array<u32>;
@group(0) @binding(5) var<storage, read_write> Y: array<f32>;
${FLAT}
  if (i >= p.rows * p.outDim) { return; }
  let r = i / p.outDim;
  let o = i % p.outDim;
  let ad = RA[r];
  if (ad == ${NO_ADAPTER}u) { return; }
  let m = 4u * (p.metaBase + ad);
  let offB = AD[m + 1u];
  let rank = AD[m + 2u];
  let scale = bitcast<f32>(AD[m + 3u]);
  var s = 0.0;
  for (var k = 0u; k < rank; k = k + 1u) { s = s + T[r * p.rmax + k] * B[offB + o * rank + k]; }
  Y[i] = Y[i] + scale * s;
}`;

/** The packed factors of some adapters, for every projection any of them adapts. */
export class AdapterPack {
  readonly adapters: readonly LinearAdapter[];
  readonly #index = new Map<LinearAdapter, number>();
  readonly #versions: number[];
  readonly #projections = new Map<string, PackedProjection>();
  readonly #generation: number;
  #released = false;

  /** Every adapter's A factors, B factors and the META rows (u32: offset of A, offset of B, rank, scaling bits), one buffer each. */
  readonly #a: Tensor;
  readonly #b: Tensor;
  readonly #meta: Tensor;

  constructor(ctx: GpuContext, config: LlamaConfig, adapters: readonly LinearAdapter[]) {
    if (adapters.length === 0) throw new AppError('INTERNAL', 'AdapterPack: no adapters to pack.');
    this.adapters = [...adapters];
    adapters.forEach((a, i) => this.#index.set(a, i));
    this.#versions = adapters.map((a) => a.weightsVersion);
    this.#generation = ctx.generation;
    const scale = new Float32Array(1);
    const scaleBits = new Uint32Array(scale.buffer);
    const metaRows: number[] = [];
    const copies: Array<{ src: Tensor; into: 'a' | 'b'; at: number }> = [];
    let offA = 0;
    let offB = 0;
    for (let layer = 0; layer < config.numLayers; layer++) {
      for (const module of LINEAR_MODULES) {
        const factors = adapters.map((a) => a.lowRank(layer, module));
        if (factors.every((f) => f === null)) continue;
        const { in: inDim, out: outDim } = linearShape(config, module);
        const metaBase = metaRows.length / 4;
        let rmax = 0;
        for (const f of factors) {
          if (!f) {
            metaRows.push(0, 0, 0, 0);
            continue;
          }
          if (f.a.size !== f.rank * inDim || f.b.size !== outDim * f.rank) throw new AppError('ADAPTER_MISMATCH', `Adapter factors of layer ${layer} ${module} do not fit ${inDim}→${outDim} at rank ${f.rank}.`);
          scale[0] = f.scaling;
          metaRows.push(offA, offB, f.rank, scaleBits[0]!);
          copies.push({ src: f.a, into: 'a', at: offA }, { src: f.b, into: 'b', at: offB });
          offA += f.a.size;
          offB += f.b.size;
          rmax = Math.max(rmax, f.rank);
        }
        this.#projections.set(`${layer}.${module}`, { metaBase, rmax, inDim, outDim });
      }
    }
    // Three buffers for the whole pack (not three per projection): a new adapter costs a few GPU copies.
    this.#a = ctx.tensor([Math.max(1, offA)], 'f32', false);
    this.#b = ctx.tensor([Math.max(1, offB)], 'f32', false);
    this.#meta = ctx.upload(Uint32Array.from(metaRows.length ? metaRows : [0, 0, 0, 0]), [Math.max(1, metaRows.length / 4), 4], false);
    for (const c of copies) ctx.copy(c.src, 0, c.into === 'a' ? this.#a : this.#b, c.at, c.src.size);
  }

  /** The larger of the A and B buffers a pack of these adapters would have, in bytes (each is one storage binding). */
  static bindingBytes(config: LlamaConfig, adapters: readonly LinearAdapter[]): number {
    let a = 0;
    let b = 0;
    for (let layer = 0; layer < config.numLayers; layer++) {
      for (const module of LINEAR_MODULES) {
        for (const ad of adapters) {
          const f = ad.lowRank(layer, module);
          if (f) {
            a += f.a.size;
            b += f.b.size;
          }
        }
      }
    }
    return 4 * Math.max(a, b);
  }

  /** The pack slot of an adapter, or -1 when it is not packed here. */
  slotOf(adapter: LinearAdapter): number {
    return this.#index.get(adapter) ?? -1;
  }

  /** Whether the pack holds these adapters as they are now (same weights, same device). */
  covers(ctx: GpuContext, adapters: Iterable<LinearAdapter>): boolean {
    if (this.#released || this.#generation !== ctx.generation) return false;
    for (const a of adapters) {
      const i = this.#index.get(a);
      if (i === undefined || this.#versions[i] !== a.weightsVersion) return false;
    }
    return true;
  }

  /** Whether any adapter of the pack adapts this projection. */
  has(layer: number, module: LinearModule): boolean {
    return this.#projections.has(`${layer}.${module}`);
  }

  /** y [rows, out] += each row's adapter delta of x [rows, in]; rowAd u32 [rows] (NO_ADAPTER: none). */
  apply(ctx: GpuContext, layer: number, module: LinearModule, x: Tensor, y: Tensor, rowAd: Tensor): void {
    const p = this.#projections.get(`${layer}.${module}`);
    if (!p) return;
    const rows = rowAd.size;
    if (x.size !== rows * p.inDim || y.size !== rows * p.outDim) throw new AppError('SHAPE_MISMATCH', `AdapterPack.apply: ${rows} rows of ${p.inDim}→${p.outDim} do not fit x ${x.size} and y ${y.size}.`);
    const t = ctx.tensor([rows, p.rmax]);
    ctx.dispatch(rowPipeline(ctx, SHRINK), params('uuuu', [rows, p.inDim, p.rmax, p.metaBase]), [x, this.#a, this.#meta, rowAd, t], rowGrid(ctx, rows * p.rmax));
    ctx.dispatch(ctx.pipeline(EXPAND), params('uuuu', [rows, p.outDim, p.rmax, p.metaBase]), [t, this.#b, this.#meta, rowAd, y], flat(ctx, rows * p.outDim));
    t.release();
  }

  release(): void {
    if (this.#released) return;
    this.#released = true;
    this.#a.release();
    this.#b.release();
    this.#meta.release();
    this.#projections.clear();
  }
}
