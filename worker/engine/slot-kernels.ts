/**
 * Kernels for continuous batching over a slot KV cache: every row of a batch is one token of one
 * sequence, with its own slot and position, read from a row table META [rows, 2] (u32: slot,
 * position). Rotary embeddings take each row's position, new keys and values go to (slot,
 * position), and attention reads the row's own slot up to its own position (key length and causal
 * limit per row). Rows of one sequence at positions p..q work too (a prompt, or a chunk of one), as
 * long as their keys and values are written before the attention reads them.
 *
 * The cache is [slots, positions, kvWidth] per layer. The arithmetic mirrors kernels.ts (same
 * summation order, vec4 along the head when hd % 4 = 0), so one sequence decoded here gives the
 * same logits as LlamaModel's contiguous cache.
 */
import { AppError } from '../../shared';
import { GpuContext, Tensor } from './context';
import { FLAT, flat, params, rowGrid, rowPipeline, struct, type RopeTables } from './kernels';

/** A batch's row table: meta u32 [rows, 2] = (slot, position); Tk = the largest position + 1. */
export interface SlotRows {
  meta: Tensor;
  rows: number;
  Tk: number;
}

/** The attention heads and the cache's positions per slot. */
export interface SlotShape {
  nh: number;
  nkv: number;
  hd: number;
  positions: number;
}

const ROPE_ROWS = `${struct('uuu', ['rows', 'heads', 'hd'])}
@group(0) @binding(1) var<storage, read> X: array<f32>;
@group(0) @binding(2) var<storage, read> COS: array<f32>;
@group(0) @binding(3) var<storage, read> SIN: array<f32>;
@group(0) @binding(4) var<storage, read> META: array<u32>;
@group(0) @binding(5) var<storage, read_write> Y: array<f32>;
${FLAT}
  let half = p.hd / 2u;
  let n = p.rows * p.heads * half;
  if (i >= n) { return; }
  let d = i % half;
  let rh = i / half;
  let row = rh / p.heads;
  let pos = META[2u * row + 1u];
  let c = COS[pos * half + d];
  let s = SIN[pos * half + d];
  let base = rh * p.hd;
  let x1 = X[base + d];
  let x2 = X[base + d + half];
  Y[base + d] = x1 * c - x2 * s;
  Y[base + d + half] = x2 * c + x1 * s;
}`;

/** Rotary embedding of x [rows, heads·hd], row r at its own position META[r].position. */
export function ropeRows(ctx: GpuContext, x: Tensor, tables: RopeTables, rows: SlotRows, heads: number, hd: number): Tensor {
  if (rows.Tk > tables.positions) throw new AppError('SHAPE_MISMATCH', `ropeRows: position ${rows.Tk - 1} is past the table's ${tables.positions}.`);
  const y = ctx.tensor(x.shape);
  ctx.dispatch(ctx.pipeline(ROPE_ROWS), params('uuu', [rows.rows, heads, hd]), [x, tables.cos, tables.sin, rows.meta, y], flat(ctx, (rows.rows * heads * hd) / 2));
  return y;
}

const KV_WRITE_ROWS = `${struct('uuu', ['rows', 'width', 'positions'])}
@group(0) @binding(1) var<storage, read> X: array<f32>;
@group(0) @binding(2) var<storage, read> META: array<u32>;
@group(0) @binding(3) var<storage, read_write> C: array<f32>;
${FLAT}
  if (i >= p.rows * p.width) { return; }
  let c = i % p.width;
  let r = i / p.width;
  C[(META[2u * r] * p.positions + META[2u * r + 1u]) * p.width + c] = X[i];
}`;

/** Writes x [rows, width] into cache [slots, positions, width] at each row's (slot, position). */
export function kvWriteRows(ctx: GpuContext, x: Tensor, cache: Tensor, rows: SlotRows, width: number, positions: number): void {
  if (rows.Tk > positions) throw new AppError('SHAPE_MISMATCH', `KV cache holds ${positions} positions per slot; ${rows.Tk} needed.`);
  ctx.dispatch(ctx.pipeline(KV_WRITE_ROWS), params('uuu', [rows.rows, width, positions]), [x, rows.meta, cache], flat(ctx, rows.rows * width));
}

const ATTN_SPEC = 'uuuuuuf';
const ATTN_STRUCT = struct(ATTN_SPEC, ['R', 'Tk', 'nh', 'nkv', 'hd', 'positions', 'alpha']);

const SCORES = `${ATTN_STRUCT}
@group(0) @binding(1) var<storage, read> Q: array<f32>;
@group(0) @binding(2) var<storage, read> K: array<f32>;
@group(0) @binding(3) var<storage, read> META: array<u32>;
@group(0) @binding(4) var<storage, read_write> S: array<f32>;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let j = gid.x;
  let r = gid.y;
  let h = gid.z;
  if (j >= p.Tk || r >= p.R) { return; }
  let kh = h / (p.nh / p.nkv);
  let out = (r * p.nh + h) * p.Tk + j;
  if (j > META[2u * r + 1u]) { S[out] = 0.0; return; }
  let qb = (r * p.nh + h) * p.hd;
  let kb = (META[2u * r] * p.positions + j) * p.nkv * p.hd + kh * p.hd;
  var s = 0.0;
  for (var d = 0u; d < p.hd; d = d + 1u) { s = fma(Q[qb + d], K[kb + d], s); }
  S[out] = p.alpha * s;
}`;

const SCORES4 = `${ATTN_STRUCT}
@group(0) @binding(1) var<storage, read> Q: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> K: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> META: array<u32>;
@group(0) @binding(4) var<storage, read_write> S: array<f32>;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let j = gid.x;
  let r = gid.y;
  let h = gid.z;
  if (j >= p.Tk || r >= p.R) { return; }
  let kh = h / (p.nh / p.nkv);
  let out = (r * p.nh + h) * p.Tk + j;
  if (j > META[2u * r + 1u]) { S[out] = 0.0; return; }
  let h4 = p.hd / 4u;
  let qb = (r * p.nh + h) * h4;
  let kb = (META[2u * r] * p.positions + j) * p.nkv * h4 + kh * h4;
  var s = 0.0;
  for (var d = 0u; d < h4; d = d + 1u) { s = s + dot(Q[qb + d], K[kb + d]); }
  S[out] = p.alpha * s;
}`;

const SOFTMAX = `${struct('uuu', ['rows', 'Tk', 'nh'])}
@group(0) @binding(1) var<storage, read_write> S: array<f32>;
@group(0) @binding(2) var<storage, read> META: array<u32>;
ROW_PRELUDE
  if (row >= p.rows) { return; }
  let L = min(p.Tk, META[2u * (row / p.nh) + 1u] + 1u);
  let base = row * p.Tk;
  var m = -3.4e38;
  for (var j = t; j < L; j = j + RSTRIDE) { m = max(m, S[base + j]); }
  let mx = reduceMax(m, t);
  var s = 0.0;
  for (var j = t; j < L; j = j + RSTRIDE) { s = s + exp(S[base + j] - mx); }
  let inv = 1.0 / reduceSum(s, t);
  for (var j = t; j < p.Tk; j = j + RSTRIDE) {
    if (j < L) { S[base + j] = exp(S[base + j] - mx) * inv; } else { S[base + j] = 0.0; }
  }
}`;

const APPLY = `${ATTN_STRUCT}
@group(0) @binding(1) var<storage, read> PR: array<f32>;
@group(0) @binding(2) var<storage, read> V: array<f32>;
@group(0) @binding(3) var<storage, read> META: array<u32>;
@group(0) @binding(4) var<storage, read_write> O: array<f32>;
${FLAT}
  let n = p.R * p.nh * p.hd;
  if (i >= n) { return; }
  let d = i % p.hd;
  let h = (i / p.hd) % p.nh;
  let r = i / (p.hd * p.nh);
  let kh = h / (p.nh / p.nkv);
  let pb = (r * p.nh + h) * p.Tk;
  let L = min(p.Tk, META[2u * r + 1u] + 1u);
  let vb = META[2u * r] * p.positions;
  var s = 0.0;
  for (var j = 0u; j < L; j = j + 1u) { s = fma(PR[pb + j], V[(vb + j) * p.nkv * p.hd + kh * p.hd + d], s); }
  O[i] = p.alpha * s;
}`;

const APPLY4 = `${ATTN_STRUCT}
@group(0) @binding(1) var<storage, read> PR: array<f32>;
@group(0) @binding(2) var<storage, read> V: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> META: array<u32>;
@group(0) @binding(4) var<storage, read_write> O: array<vec4<f32>>;
${FLAT}
  let h4 = p.hd / 4u;
  let n = p.R * p.nh * h4;
  if (i >= n) { return; }
  let d = i % h4;
  let h = (i / h4) % p.nh;
  let r = i / (h4 * p.nh);
  let kh = h / (p.nh / p.nkv);
  let pb = (r * p.nh + h) * p.Tk;
  let L = min(p.Tk, META[2u * r + 1u] + 1u);
  let vs = p.nkv * h4;
  var vi = (META[2u * r] * p.positions) * vs + kh * h4 + d;
  var s = vec4<f32>(0.0);
  for (var j = 0u; j < L; j = j + 1u) { s = s + PR[pb + j] * V[vi]; vi = vi + vs; }
  O[i] = p.alpha * s;
}`;

/**
 * Causal GQA attention of queries q [rows, nh·hd] over the slot cache: row r attends to keys
 * 0..position of its own slot. Returns O [rows, nh·hd]. Rows must be at most the device's
 * per-dimension workgroup limit (the decoder chunks prompts far below it).
 */
export function attentionRows(ctx: GpuContext, q: Tensor, kCache: Tensor, vCache: Tensor, rows: SlotRows, s: SlotShape, scale: number): Tensor {
  const { rows: R, Tk } = rows;
  if (R > ctx.limits.maxComputeWorkgroupsPerDimension) throw new AppError('INTERNAL', `attentionRows: ${R} rows is over the workgroup limit; chunk the batch.`);
  const v4 = s.hd % 4 === 0;
  const p = params(ATTN_SPEC, [R, Tk, s.nh, s.nkv, s.hd, s.positions, scale]);
  const prob = ctx.tensor([R, s.nh, Tk]);
  ctx.dispatch(ctx.pipeline(v4 ? SCORES4 : SCORES), p, [q, kCache, rows.meta, prob], [Math.ceil(Tk / 64), R, s.nh]);
  ctx.dispatch(rowPipeline(ctx, SOFTMAX), params('uuu', [R * s.nh, Tk, s.nh]), [prob, rows.meta], rowGrid(ctx, R * s.nh));
  const out = ctx.tensor([R, s.nh * s.hd]);
  const pa = params(ATTN_SPEC, [R, Tk, s.nh, s.nkv, s.hd, s.positions, 1]);
  ctx.dispatch(ctx.pipeline(v4 ? APPLY4 : APPLY), pa, [prob, vCache, rows.meta, out], flat(ctx, (R * s.nh * s.hd) / (v4 ? 4 : 1)));
  prob.release();
  return out;
}
