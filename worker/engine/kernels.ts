/**
 * The non-matmul kernels, fp32, each with its backward: element-wise ops, RMSNorm, rotary
 * embeddings, causal grouped-query attention (scores, stable softmax, apply) with a KV cache,
 * the SiLU-gated MLP, embedding lookup, masked cross-entropy, AdamW and seeded dropout.
 *
 * Every kernel binds its parameters as uniform 0 and its tensors as storage 1..n (see
 * GpuContext.dispatch). Row-wise reductions use one workgroup per row. The helpers that build
 * kernels (params, struct, FLAT, rowPipeline…) are exported for the other kernel files
 * (slot-kernels.ts), not from the engine's index.
 */
import { AppError } from '../../shared';
import { GpuContext, Tensor } from './context';

export const WG = 256;
export const ROW_WG = 64;

/** Packs numbers into a uniform block: 'u' = u32, 'f' = f32, 'i' = i32. */
export function params(spec: string, values: readonly number[]): ArrayBuffer {
  const buf = new ArrayBuffer(Math.max(16, Math.ceil((spec.length * 4) / 16) * 16));
  const u = new Uint32Array(buf);
  const f = new Float32Array(buf);
  const i32 = new Int32Array(buf);
  for (let k = 0; k < spec.length; k++) {
    const v = values[k]!;
    if (spec[k] === 'f') f[k] = v;
    else if (spec[k] === 'i') i32[k] = v;
    else u[k] = v >>> 0;
  }
  return buf;
}

export function struct(spec: string, names: readonly string[]): string {
  const fields = names.map((n, k) => `${n}: ${spec[k] === 'f' ? 'f32' : spec[k] === 'i' ? 'i32' : 'u32'}`);
  return `struct P { ${fields.join(', ')} };\n@group(0) @binding(0) var<uniform> p: P;`;
}

export const FLAT = `@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = gid.x + gid.y * nwg.x * ${WG}u;`;

export function flat(ctx: GpuContext, n: number): [number, number] {
  return ctx.grid(Math.ceil(n / WG));
}

function sameSize(op: string, ...ts: Tensor[]): void {
  const n = ts[0]!.size;
  for (const t of ts) if (t.size !== n) throw new AppError('SHAPE_MISMATCH', `${op}: tensor sizes differ (${ts.map((x) => x.size).join(' vs ')}).`);
}

// ---------------------------------------------------------------- element-wise

const AXPBY = `${struct('uff', ['n', 'alpha', 'beta'])}
@group(0) @binding(1) var<storage, read> X: array<f32>;
@group(0) @binding(2) var<storage, read> Y: array<f32>;
@group(0) @binding(3) var<storage, read_write> O: array<f32>;
${FLAT}
  if (i >= p.n) { return; }
  O[i] = p.alpha * X[i] + p.beta * Y[i];
}`;

/** out = alpha·x + beta·y (add: alpha = beta = 1). */
export function axpby(ctx: GpuContext, x: Tensor, y: Tensor, alpha = 1, beta = 1, out?: Tensor): Tensor {
  sameSize('axpby', x, y);
  const o = out ?? ctx.tensor(x.shape);
  ctx.dispatch(ctx.pipeline(AXPBY), params('uff', [x.size, alpha, beta]), [x, y, o], flat(ctx, x.size));
  return o;
}

export function add(ctx: GpuContext, x: Tensor, y: Tensor, out?: Tensor): Tensor {
  return axpby(ctx, x, y, 1, 1, out);
}

const ACCUM = `${struct('uff', ['n', 'alpha', 'beta'])}
@group(0) @binding(1) var<storage, read> X: array<f32>;
@group(0) @binding(2) var<storage, read_write> Y: array<f32>;
${FLAT}
  if (i >= p.n) { return; }
  var v = p.alpha * X[i];
  if (p.beta != 0.0) { v = v + p.beta * Y[i]; }
  Y[i] = v;
}`;

/** y = alpha·x + beta·y in place (residual adds, gradient accumulation; beta = 0 copies a scaled x). */
export function accumulate(ctx: GpuContext, x: Tensor, y: Tensor, alpha = 1, beta = 1): Tensor {
  sameSize('accumulate', x, y);
  ctx.dispatch(ctx.pipeline(ACCUM), params('uff', [x.size, alpha, beta]), [x, y], flat(ctx, x.size));
  return y;
}

const SCALE = `${struct('uf', ['n', 's'])}
@group(0) @binding(1) var<storage, read_write> Y: array<f32>;
${FLAT}
  if (i >= p.n) { return; }
  Y[i] = p.s * Y[i];
}`;

/** y *= s in place (scale; s = 0 zeroes). */
export function scaleInPlace(ctx: GpuContext, y: Tensor, s: number): Tensor {
  ctx.dispatch(ctx.pipeline(SCALE), params('uf', [y.size, s]), [y], flat(ctx, y.size));
  return y;
}

// ---------------------------------------------------------------- RMSNorm

const REDUCE = `var<workgroup> red: array<f32, ${ROW_WG}>;
fn reduceSum(v: f32, t: u32) -> f32 {
  red[t] = v;
  workgroupBarrier();
  for (var s = ${ROW_WG / 2}u; s > 0u; s = s >> 1u) {
    if (t < s) { red[t] = red[t] + red[t + s]; }
    workgroupBarrier();
  }
  let r = red[0];
  workgroupBarrier();
  return r;
}
fn reduceMax(v: f32, t: u32) -> f32 {
  red[t] = v;
  workgroupBarrier();
  for (var s = ${ROW_WG / 2}u; s > 0u; s = s >> 1u) {
    if (t < s) { red[t] = max(red[t], red[t + s]); }
    workgroupBarrier();
  }
  let r = red[0];
  workgroupBarrier();
  return r;
}`;

const ROW_MAIN = `@compute @workgroup_size(${ROW_WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let row = wid.x + wid.y * nwg.x;
  let t = lid.x;`;

/**
 * Row kernels come in two forms: 'workgroup' (a workgroup per row, tree reductions through
 * workgroup memory — real GPUs) and 'serial' (a thread per row, no barriers — SwiftShader, where
 * a workgroup barrier costs more than the row's whole arithmetic).
 */
export type RowMode = 'workgroup' | 'serial';

const SERIAL_PRELUDE = `fn reduceSum(v: f32, t: u32) -> f32 { return v; }
fn reduceMax(v: f32, t: u32) -> f32 { return v; }
@compute @workgroup_size(${ROW_WG})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let row = gid.x + gid.y * nwg.x * ${ROW_WG}u;
  let t = 0u;`;

export function rowPipeline(ctx: GpuContext, src: string): GPUComputePipeline {
  const serial = ctx.rowMode === 'serial';
  const code = src.replace('ROW_PRELUDE', serial ? SERIAL_PRELUDE : `${REDUCE}\n${ROW_MAIN}`).replaceAll('RSTRIDE', serial ? '1u' : `${ROW_WG}u`);
  return ctx.pipeline(code);
}

export function rowGrid(ctx: GpuContext, rows: number): [number, number] {
  return ctx.grid(ctx.rowMode === 'serial' ? Math.ceil(rows / ROW_WG) : rows);
}

const RMS_FWD = `${struct('uuf', ['rows', 'H', 'eps'])}
@group(0) @binding(1) var<storage, read> X: array<f32>;
@group(0) @binding(2) var<storage, read> W: array<f32>;
@group(0) @binding(3) var<storage, read_write> Y: array<f32>;
@group(0) @binding(4) var<storage, read_write> R: array<f32>;
ROW_PRELUDE
  if (row >= p.rows) { return; }
  let base = row * p.H;
  var s = 0.0;
  for (var c = t; c < p.H; c = c + RSTRIDE) { let v = X[base + c]; s = s + v * v; }
  let ss = reduceSum(s, t);
  let r = inverseSqrt(ss / f32(p.H) + p.eps);
  for (var c = t; c < p.H; c = c + RSTRIDE) { Y[base + c] = X[base + c] * r * W[c]; }
  if (t == 0u) { R[row] = r; }
}`;

/** y = x · rstd · w per row of [rows, H]; also returns rstd [rows] for the backward. */
export function rmsNorm(ctx: GpuContext, x: Tensor, w: Tensor, eps: number, out?: Tensor): { y: Tensor; rstd: Tensor } {
  const H = w.size;
  const rows = x.size / H;
  const y = out ?? ctx.tensor(x.shape);
  const rstd = ctx.tensor([rows]);
  ctx.dispatch(rowPipeline(ctx, RMS_FWD), params('uuf', [rows, H, eps]), [x, w, y, rstd], rowGrid(ctx, rows));
  return { y, rstd };
}

const RMS_BWD = `${struct('uu', ['rows', 'H'])}
@group(0) @binding(1) var<storage, read> X: array<f32>;
@group(0) @binding(2) var<storage, read> W: array<f32>;
@group(0) @binding(3) var<storage, read> R: array<f32>;
@group(0) @binding(4) var<storage, read> DY: array<f32>;
@group(0) @binding(5) var<storage, read_write> DX: array<f32>;
ROW_PRELUDE
  if (row >= p.rows) { return; }
  let base = row * p.H;
  let r = R[row];
  var s = 0.0;
  for (var c = t; c < p.H; c = c + RSTRIDE) { s = s + DY[base + c] * W[c] * X[base + c]; }
  let dot = reduceSum(s, t) / f32(p.H);
  for (var c = t; c < p.H; c = c + RSTRIDE) {
    DX[base + c] = r * (DY[base + c] * W[c] - X[base + c] * r * r * dot);
  }
}`;

/** dx of RMSNorm. */
export function rmsNormBackward(ctx: GpuContext, x: Tensor, w: Tensor, rstd: Tensor, dy: Tensor, out?: Tensor): Tensor {
  const H = w.size;
  const rows = x.size / H;
  const dx = out ?? ctx.tensor(x.shape);
  ctx.dispatch(rowPipeline(ctx, RMS_BWD), params('uu', [rows, H]), [x, w, rstd, dy, dx], rowGrid(ctx, rows));
  return dx;
}

const RMS_DW = `${struct('uuf', ['rows', 'H', 'beta'])}
@group(0) @binding(1) var<storage, read> X: array<f32>;
@group(0) @binding(2) var<storage, read> R: array<f32>;
@group(0) @binding(3) var<storage, read> DY: array<f32>;
@group(0) @binding(4) var<storage, read_write> DW: array<f32>;
${FLAT}
  if (i >= p.H) { return; }
  var s = 0.0;
  for (var r = 0u; r < p.rows; r = r + 1u) { s = s + DY[r * p.H + i] * X[r * p.H + i] * R[r]; }
  if (p.beta != 0.0) { s = s + p.beta * DW[i]; }
  DW[i] = s;
}`;

/** dw of RMSNorm (beta = 1 accumulates). Not needed for LoRA (norms are frozen). */
export function rmsNormWeightGrad(ctx: GpuContext, x: Tensor, rstd: Tensor, dy: Tensor, dw: Tensor, beta = 0): Tensor {
  const H = dw.size;
  const rows = x.size / H;
  ctx.dispatch(ctx.pipeline(RMS_DW), params('uuf', [rows, H, beta]), [x, rstd, dy, dw], flat(ctx, H));
  return dw;
}

// ---------------------------------------------------------------- rotary embeddings

/**
 * cos/sin table [positions, hd/2] in HF's convention: inv_freq = 1/theta^(2i/hd) in f32,
 * angle = f32(pos · inv_freq).
 */
export function ropeTable(positions: number, headDim: number, theta: number): { cos: Float32Array; sin: Float32Array } {
  const half = headDim / 2;
  const cos = new Float32Array(positions * half);
  const sin = new Float32Array(positions * half);
  for (let i = 0; i < half; i++) {
    const inv = Math.fround(1 / Math.fround(theta ** Math.fround((2 * i) / headDim)));
    for (let pos = 0; pos < positions; pos++) {
      const a = Math.fround(pos * inv);
      cos[pos * half + i] = Math.cos(a);
      sin[pos * half + i] = Math.sin(a);
    }
  }
  return { cos, sin };
}

const ROPE = `${struct('uuuuuf', ['rows', 'T', 'past', 'heads', 'hd', 'sign'])}
@group(0) @binding(1) var<storage, read> X: array<f32>;
@group(0) @binding(2) var<storage, read> COS: array<f32>;
@group(0) @binding(3) var<storage, read> SIN: array<f32>;
@group(0) @binding(4) var<storage, read_write> Y: array<f32>;
${FLAT}
  let half = p.hd / 2u;
  let n = p.rows * p.heads * half;
  if (i >= n) { return; }
  let d = i % half;
  let rh = i / half;
  let row = rh / p.heads;
  let pos = p.past + row % p.T;
  let c = COS[pos * half + d];
  let s = p.sign * SIN[pos * half + d];
  let base = rh * p.hd;
  let x1 = X[base + d];
  let x2 = X[base + d + half];
  Y[base + d] = x1 * c - x2 * s;
  Y[base + d + half] = x2 * c + x1 * s;
}`;

export interface RopeTables {
  cos: Tensor;
  sin: Tensor;
  positions: number;
}

/**
 * Rotary embedding of x [B·T, heads·hd] (rotate_half); row r sits at position past + r % T.
 * `inverse` applies the transpose rotation — the backward.
 */
export function rope(ctx: GpuContext, x: Tensor, tables: RopeTables, T: number, past: number, heads: number, hd: number, inverse = false, out?: Tensor): Tensor {
  const rows = x.size / (heads * hd);
  if (past + T > tables.positions) throw new AppError('SHAPE_MISMATCH', `rope: position ${past + T} is past the table's ${tables.positions}.`);
  const y = out ?? ctx.tensor(x.shape);
  ctx.dispatch(ctx.pipeline(ROPE), params('uuuuuf', [rows, T, past, heads, hd, inverse ? -1 : 1]), [x, tables.cos, tables.sin, y], flat(ctx, (rows * heads * hd) / 2));
  return y;
}

// ---------------------------------------------------------------- attention

/**
 * Shapes: queries Q [B·T, nh·hd] (row b·T+i at position past+i); keys/values K,V [B, kvRows, nkv·hd]
 * (kvRows = T in training, the cache length when decoding; the first Tk rows are valid);
 * scores S [B, nh, T, Tk]. Query head h reads kv head h / (nh / nkv).
 */
export interface AttnShape {
  B: number;
  T: number;
  Tk: number;
  nh: number;
  nkv: number;
  hd: number;
  kvRows: number;
  past: number;
}

const ATTN_FIELDS = ['B', 'T', 'Tk', 'nh', 'nkv', 'hd', 'kvRows', 'past', 'alpha'];
const ATTN_SPEC = 'uuuuuuuuf';
const ATTN_STRUCT = struct(ATTN_SPEC, ATTN_FIELDS);
function attnParams(s: AttnShape, alpha: number): ArrayBuffer {
  return params(ATTN_SPEC, [s.B, s.T, s.Tk, s.nh, s.nkv, s.hd, s.kvRows, s.past, alpha]);
}

const SCORES = `${ATTN_STRUCT}
@group(0) @binding(1) var<storage, read> Q: array<f32>;
@group(0) @binding(2) var<storage, read> K: array<f32>;
@group(0) @binding(3) var<storage, read_write> S: array<f32>;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let j = gid.x;
  let i = gid.y;
  let bh = gid.z;
  if (j >= p.Tk || i >= p.T) { return; }
  let b = bh / p.nh;
  let h = bh % p.nh;
  let kh = h / (p.nh / p.nkv);
  let out = (bh * p.T + i) * p.Tk + j;
  if (j > p.past + i) { S[out] = 0.0; return; }
  let qb = (b * p.T + i) * p.nh * p.hd + h * p.hd;
  let kb = (b * p.kvRows + j) * p.nkv * p.hd + kh * p.hd;
  var s = 0.0;
  for (var d = 0u; d < p.hd; d = d + 1u) { s = fma(Q[qb + d], K[kb + d], s); }
  S[out] = p.alpha * s;
}`;

// With hd % 4 = 0 the attention kernels read Q, K, V and gradients as vec4 along the head (4× fewer
// loads and index computations; on SwiftShader that is most of their cost).
const SCORES4 = `${ATTN_STRUCT}
@group(0) @binding(1) var<storage, read> Q: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> K: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> S: array<f32>;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let j = gid.x;
  let i = gid.y;
  let bh = gid.z;
  if (j >= p.Tk || i >= p.T) { return; }
  let b = bh / p.nh;
  let h = bh % p.nh;
  let kh = h / (p.nh / p.nkv);
  let out = (bh * p.T + i) * p.Tk + j;
  if (j > p.past + i) { S[out] = 0.0; return; }
  let h4 = p.hd / 4u;
  let qb = ((b * p.T + i) * p.nh + h) * h4;
  let kb = ((b * p.kvRows + j) * p.nkv + kh) * h4;
  var s = 0.0;
  for (var d = 0u; d < h4; d = d + 1u) { s = s + dot(Q[qb + d], K[kb + d]); }
  S[out] = p.alpha * s;
}`;

/** S = alpha · Q·Kᵀ per (batch, head), causal entries only (others 0). Also dP = dO·Vᵀ in the backward. */
export function attnScores(ctx: GpuContext, q: Tensor, k: Tensor, s: AttnShape, alpha: number, out?: Tensor): Tensor {
  const S = out ?? ctx.tensor([s.B, s.nh, s.T, s.Tk]);
  ctx.dispatch(ctx.pipeline(s.hd % 4 === 0 ? SCORES4 : SCORES), attnParams(s, alpha), [q, k, S], [Math.ceil(s.Tk / 64), s.T, s.B * s.nh]);
  return S;
}

const SOFTMAX = `${struct('uuuuu', ['rows', 'T', 'Tk', 'past', 'causal'])}
@group(0) @binding(1) var<storage, read_write> S: array<f32>;
ROW_PRELUDE
  if (row >= p.rows) { return; }
  let i = row % p.T;
  var L = p.Tk;
  if (p.causal != 0u) { L = min(p.Tk, p.past + i + 1u); }
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

/** Numerically stable softmax in place over rows of [rows, Tk]; causal rows (row % T = i) see keys ≤ past + i. */
export function softmax(ctx: GpuContext, s: Tensor, T: number, Tk: number, past = 0, causal = true): Tensor {
  const rows = s.size / Tk;
  ctx.dispatch(rowPipeline(ctx, SOFTMAX), params('uuuuu', [rows, T, Tk, past, causal ? 1 : 0]), [s], rowGrid(ctx, rows));
  return s;
}

const SOFTMAX_BWD = `${struct('uuf', ['rows', 'Tk', 'alpha'])}
@group(0) @binding(1) var<storage, read> PR: array<f32>;
@group(0) @binding(2) var<storage, read_write> D: array<f32>;
ROW_PRELUDE
  if (row >= p.rows) { return; }
  let base = row * p.Tk;
  var s = 0.0;
  for (var j = t; j < p.Tk; j = j + RSTRIDE) { s = s + PR[base + j] * D[base + j]; }
  let dot = reduceSum(s, t);
  for (var j = t; j < p.Tk; j = j + RSTRIDE) { D[base + j] = p.alpha * PR[base + j] * (D[base + j] - dot); }
}`;

/** In place: dP → dS = alpha · P ⊙ (dP − Σ P·dP), rows of [rows, Tk]. */
export function softmaxBackward(ctx: GpuContext, prob: Tensor, dP: Tensor, Tk: number, alpha = 1): Tensor {
  const rows = prob.size / Tk;
  ctx.dispatch(rowPipeline(ctx, SOFTMAX_BWD), params('uuf', [rows, Tk, alpha]), [prob, dP], rowGrid(ctx, rows));
  return dP;
}

const APPLY = `${ATTN_STRUCT}
@group(0) @binding(1) var<storage, read> PR: array<f32>;
@group(0) @binding(2) var<storage, read> V: array<f32>;
@group(0) @binding(3) var<storage, read_write> O: array<f32>;
${FLAT}
  let n = p.B * p.T * p.nh * p.hd;
  if (i >= n) { return; }
  let d = i % p.hd;
  let h = (i / p.hd) % p.nh;
  let bi = i / (p.hd * p.nh);
  let b = bi / p.T;
  let ii = bi % p.T;
  let kh = h / (p.nh / p.nkv);
  let pb = ((b * p.nh + h) * p.T + ii) * p.Tk;
  let L = min(p.Tk, p.past + ii + 1u);
  var s = 0.0;
  for (var j = 0u; j < L; j = j + 1u) { s = fma(PR[pb + j], V[(b * p.kvRows + j) * p.nkv * p.hd + kh * p.hd + d], s); }
  O[i] = p.alpha * s;
}`;

const APPLY4 = `${ATTN_STRUCT}
@group(0) @binding(1) var<storage, read> PR: array<f32>;
@group(0) @binding(2) var<storage, read> V: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> O: array<vec4<f32>>;
${FLAT}
  let h4 = p.hd / 4u;
  let n = p.B * p.T * p.nh * h4;
  if (i >= n) { return; }
  let d = i % h4;
  let h = (i / h4) % p.nh;
  let bi = i / (h4 * p.nh);
  let b = bi / p.T;
  let ii = bi % p.T;
  let kh = h / (p.nh / p.nkv);
  let pb = ((b * p.nh + h) * p.T + ii) * p.Tk;
  let L = min(p.Tk, p.past + ii + 1u);
  let vs = p.nkv * h4;
  var vi = (b * p.kvRows) * vs + kh * h4 + d;
  var s = vec4<f32>(0.0);
  for (var j = 0u; j < L; j = j + 1u) { s = s + PR[pb + j] * V[vi]; vi = vi + vs; }
  O[i] = p.alpha * s;
}`;

/** O [B·T, nh·hd] = alpha · P·V per head (also dQ = scale · dS·K in the backward). */
export function attnApply(ctx: GpuContext, prob: Tensor, v: Tensor, s: AttnShape, alpha = 1, out?: Tensor): Tensor {
  const v4 = s.hd % 4 === 0;
  const n = (s.B * s.T * s.nh * s.hd) / (v4 ? 4 : 1);
  const o = out ?? ctx.tensor([s.B * s.T, s.nh * s.hd]);
  ctx.dispatch(ctx.pipeline(v4 ? APPLY4 : APPLY), attnParams(s, alpha), [prob, v, o], flat(ctx, n));
  return o;
}

const APPLY_T = `${ATTN_STRUCT}
@group(0) @binding(1) var<storage, read> PR: array<f32>;
@group(0) @binding(2) var<storage, read> X: array<f32>;
@group(0) @binding(3) var<storage, read_write> O: array<f32>;
${FLAT}
  let n = p.B * p.Tk * p.nkv * p.hd;
  if (i >= n) { return; }
  let d = i % p.hd;
  let kh = (i / p.hd) % p.nkv;
  let bj = i / (p.hd * p.nkv);
  let b = bj / p.Tk;
  let j = bj % p.Tk;
  let g = p.nh / p.nkv;
  var s = 0.0;
  for (var hh = 0u; hh < g; hh = hh + 1u) {
    let h = kh * g + hh;
    for (var ii = 0u; ii < p.T; ii = ii + 1u) {
      s = fma(PR[((b * p.nh + h) * p.T + ii) * p.Tk + j], X[(b * p.T + ii) * p.nh * p.hd + h * p.hd + d], s);
    }
  }
  O[i] = p.alpha * s;
}`;

// Query rows before j - past have P[i, j] = 0 (causal), so the sum starts at i = j - past.
const APPLY_T4 = `${ATTN_STRUCT}
@group(0) @binding(1) var<storage, read> PR: array<f32>;
@group(0) @binding(2) var<storage, read> X: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> O: array<vec4<f32>>;
${FLAT}
  let h4 = p.hd / 4u;
  let n = p.B * p.Tk * p.nkv * h4;
  if (i >= n) { return; }
  let d = i % h4;
  let kh = (i / h4) % p.nkv;
  let bj = i / (h4 * p.nkv);
  let b = bj / p.Tk;
  let j = bj % p.Tk;
  let g = p.nh / p.nkv;
  var i0 = 0u;
  if (j > p.past) { i0 = j - p.past; }
  let xs = p.nh * h4;
  var s = vec4<f32>(0.0);
  for (var hh = 0u; hh < g; hh = hh + 1u) {
    let h = kh * g + hh;
    var pi = ((b * p.nh + h) * p.T + i0) * p.Tk + j;
    var xi = (b * p.T + i0) * xs + h * h4 + d;
    for (var ii = i0; ii < p.T; ii = ii + 1u) {
      s = s + PR[pi] * X[xi];
      pi = pi + p.Tk;
      xi = xi + xs;
    }
  }
  O[i] = p.alpha * s;
}`;

/** O [B·Tk, nkv·hd] = alpha · Σ_group Pᵀ·X: dK = scale · dSᵀ·Q and dV = Pᵀ·dO, summed over the heads sharing a kv head. */
export function attnApplyT(ctx: GpuContext, prob: Tensor, x: Tensor, s: AttnShape, alpha = 1, out?: Tensor): Tensor {
  const v4 = s.hd % 4 === 0;
  const n = (s.B * s.Tk * s.nkv * s.hd) / (v4 ? 4 : 1);
  const o = out ?? ctx.tensor([s.B * s.Tk, s.nkv * s.hd]);
  ctx.dispatch(ctx.pipeline(v4 ? APPLY_T4 : APPLY_T), attnParams(s, alpha), [prob, x, o], flat(ctx, n));
  return o;
}

const KV_WRITE = `${struct('uuuuu', ['B', 'T', 'width', 'kvRows', 'past'])}
@group(0) @binding(1) var<storage, read> X: array<f32>;
@group(0) @binding(2) var<storage, read_write> C: array<f32>;
${FLAT}
  let n = p.B * p.T * p.width;
  if (i >= n) { return; }
  let c = i % p.width;
  let bi = i / p.width;
  let b = bi / p.T;
  let ii = bi % p.T;
  C[(b * p.kvRows + p.past + ii) * p.width + c] = X[i];
}`;

/** Writes new keys or values x [B·T, width] into a cache [B, kvRows, width] at rows past..past+T. */
export function kvWrite(ctx: GpuContext, x: Tensor, cache: Tensor, B: number, T: number, width: number, kvRows: number, past: number): void {
  if (past + T > kvRows) throw new AppError('SHAPE_MISMATCH', `KV cache holds ${kvRows} positions; ${past + T} needed.`);
  ctx.dispatch(ctx.pipeline(KV_WRITE), params('uuuuu', [B, T, width, kvRows, past]), [x, cache], flat(ctx, B * T * width));
}

export interface AttentionSaved {
  prob: Tensor;
}

/**
 * Causal GQA attention forward: O = softmax(scale·QKᵀ + causal mask)·V.
 * Returns O and P (keep P for the backward or release it).
 */
export function attention(ctx: GpuContext, q: Tensor, k: Tensor, v: Tensor, s: AttnShape, scale: number): { out: Tensor; prob: Tensor } {
  const prob = attnScores(ctx, q, k, s, scale);
  softmax(ctx, prob, s.T, s.Tk, s.past, true);
  const out = attnApply(ctx, prob, v, s, 1);
  return { out, prob };
}

/** Attention backward (training shapes: Tk = kvRows = T, past = 0). Returns dQ, dK, dV (dK, dV per kv head). */
export function attentionBackward(ctx: GpuContext, q: Tensor, k: Tensor, v: Tensor, prob: Tensor, dOut: Tensor, s: AttnShape, scale: number): { dq: Tensor; dk: Tensor; dv: Tensor } {
  const vShape: AttnShape = { ...s, nh: s.nh, past: s.past };
  // dP[b,h,i,j] = Σ_d dO[b,i,h,d] · V[b,j,kh,d] — the scores kernel with (dO, V).
  const dS = attnScores(ctx, dOut, v, vShape, 1);
  softmaxBackward(ctx, prob, dS, s.Tk, 1);
  const dq = attnApply(ctx, dS, k, s, scale);
  const dk = attnApplyT(ctx, dS, q, s, scale);
  const dv = attnApplyT(ctx, prob, dOut, s, 1);
  dS.release();
  return { dq, dk, dv };
}

// ---------------------------------------------------------------- SiLU-gated MLP

const SILU_FWD = `${struct('u', ['n'])}
@group(0) @binding(1) var<storage, read> G: array<f32>;
@group(0) @binding(2) var<storage, read> U: array<f32>;
@group(0) @binding(3) var<storage, read_write> O: array<f32>;
${FLAT}
  if (i >= p.n) { return; }
  let g = G[i];
  O[i] = g / (1.0 + exp(-g)) * U[i];
}`;

/** silu(gate) · up. */
export function siluMul(ctx: GpuContext, gate: Tensor, up: Tensor, out?: Tensor): Tensor {
  sameSize('siluMul', gate, up);
  const o = out ?? ctx.tensor(gate.shape);
  ctx.dispatch(ctx.pipeline(SILU_FWD), params('u', [gate.size]), [gate, up, o], flat(ctx, gate.size));
  return o;
}

const SILU_BWD = `${struct('u', ['n'])}
@group(0) @binding(1) var<storage, read> G: array<f32>;
@group(0) @binding(2) var<storage, read> U: array<f32>;
@group(0) @binding(3) var<storage, read> D: array<f32>;
@group(0) @binding(4) var<storage, read_write> DG: array<f32>;
@group(0) @binding(5) var<storage, read_write> DU: array<f32>;
${FLAT}
  if (i >= p.n) { return; }
  let g = G[i];
  let sg = 1.0 / (1.0 + exp(-g));
  let d = D[i];
  DG[i] = d * U[i] * sg * (1.0 + g * (1.0 - sg));
  DU[i] = d * g * sg;
}`;

/** Gradients of silu(gate)·up. */
export function siluMulBackward(ctx: GpuContext, gate: Tensor, up: Tensor, dOut: Tensor): { dGate: Tensor; dUp: Tensor } {
  const dGate = ctx.tensor(gate.shape);
  const dUp = ctx.tensor(up.shape);
  ctx.dispatch(ctx.pipeline(SILU_BWD), params('u', [gate.size]), [gate, up, dOut, dGate, dUp], flat(ctx, gate.size));
  return { dGate, dUp };
}

// ---------------------------------------------------------------- embedding

const EMBED = `${struct('uuu', ['rows', 'H', 'V'])}
@group(0) @binding(1) var<storage, read> IDS: array<u32>;
@group(0) @binding(2) var<storage, read> E: array<f32>;
@group(0) @binding(3) var<storage, read_write> O: array<f32>;
${FLAT}
  if (i >= p.rows * p.H) { return; }
  let r = i / p.H;
  let c = i % p.H;
  let id = min(IDS[r], p.V - 1u);
  O[i] = E[id * p.H + c];
}`;

/** Rows of the table E [V, H] for token ids [rows] (u32). */
export function embedding(ctx: GpuContext, ids: Tensor, table: Tensor, out?: Tensor): Tensor {
  const [V, H] = table.shape as [number, number];
  const rows = ids.size;
  const o = out ?? ctx.tensor([rows, H]);
  ctx.dispatch(ctx.pipeline(EMBED), params('uuu', [rows, H, V]), [ids, table, o], flat(ctx, rows * H));
  return o;
}

const EMBED_BWD = `${struct('uuuf', ['rows', 'H', 'V', 'beta'])}
@group(0) @binding(1) var<storage, read> IDS: array<u32>;
@group(0) @binding(2) var<storage, read> DY: array<f32>;
@group(0) @binding(3) var<storage, read_write> DE: array<f32>;
${FLAT}
  if (i >= p.V * p.H) { return; }
  let v = i / p.H;
  let c = i % p.H;
  var s = 0.0;
  for (var r = 0u; r < p.rows; r = r + 1u) { if (IDS[r] == v) { s = s + DY[r * p.H + c]; } }
  if (p.beta != 0.0) { s = s + p.beta * DE[i]; }
  DE[i] = s;
}`;

/**
 * Scatter-add of dy [rows, H] into dE [V, H] by token id; deterministic (one thread per table entry,
 * O(V·H·rows) — fine for tests and small vocabularies; LoRA never needs it).
 */
export function embeddingBackward(ctx: GpuContext, ids: Tensor, dy: Tensor, dTable: Tensor, beta = 0): Tensor {
  const [V, H] = dTable.shape as [number, number];
  ctx.dispatch(ctx.pipeline(EMBED_BWD), params('uuuf', [ids.size, H, V, beta]), [ids, dy, dTable], flat(ctx, V * H));
  return dTable;
}

// ---------------------------------------------------------------- cross-entropy

const CE_FWD = `${struct('uu', ['rows', 'V'])}
@group(0) @binding(1) var<storage, read> L: array<f32>;
@group(0) @binding(2) var<storage, read> TG: array<u32>;
@group(0) @binding(3) var<storage, read> MK: array<f32>;
@group(0) @binding(4) var<storage, read_write> LOSS: array<f32>;
@group(0) @binding(5) var<storage, read_write> LSE: array<f32>;
ROW_PRELUDE
  if (row >= p.rows) { return; }
  let base = row * p.V;
  var m = -3.4e38;
  for (var j = t; j < p.V; j = j + RSTRIDE) { m = max(m, L[base + j]); }
  let mx = reduceMax(m, t);
  var s = 0.0;
  for (var j = t; j < p.V; j = j + RSTRIDE) { s = s + exp(L[base + j] - mx); }
  let lse = mx + log(reduceSum(s, t));
  if (t == 0u) {
    LSE[row] = lse;
    let tg = min(TG[row], p.V - 1u);
    LOSS[row] = select(0.0, (lse - L[base + tg]) * MK[row], MK[row] != 0.0);
  }
}`;

/**
 * Per-row cross-entropy of logits [rows, V] against targets (u32) weighted by mask (f32, 0 = ignore).
 * Returns the weighted row losses and the log-sum-exp per row (for the backward); the mean loss is
 * Σ loss / Σ mask.
 */
export function crossEntropy(ctx: GpuContext, logits: Tensor, targets: Tensor, mask: Tensor): { loss: Tensor; lse: Tensor } {
  const V = logits.shape[logits.shape.length - 1]!;
  const rows = logits.size / V;
  const loss = ctx.tensor([rows]);
  const lse = ctx.tensor([rows]);
  ctx.dispatch(rowPipeline(ctx, CE_FWD), params('uu', [rows, V]), [logits, targets, mask, loss, lse], rowGrid(ctx, rows));
  return { loss, lse };
}

const CE_BWD = `${struct('uuf', ['rows', 'V', 'scale'])}
@group(0) @binding(1) var<storage, read> L: array<f32>;
@group(0) @binding(2) var<storage, read> TG: array<u32>;
@group(0) @binding(3) var<storage, read> MK: array<f32>;
@group(0) @binding(4) var<storage, read> LSE: array<f32>;
@group(0) @binding(5) var<storage, read_write> D: array<f32>;
${FLAT}
  if (i >= p.rows * p.V) { return; }
  let row = i / p.V;
  let j = i % p.V;
  let w = MK[row] * p.scale;
  if (w == 0.0) { D[i] = 0.0; return; }
  var g = exp(L[i] - LSE[row]);
  if (j == TG[row]) { g = g - 1.0; }
  D[i] = g * w;
}`;

/** d(mean loss)/d logits with scale = 1 / Σ mask (times any outer loss scale). */
export function crossEntropyBackward(ctx: GpuContext, logits: Tensor, targets: Tensor, mask: Tensor, lse: Tensor, scale: number, out?: Tensor): Tensor {
  const V = logits.shape[logits.shape.length - 1]!;
  const rows = logits.size / V;
  const d = out ?? ctx.tensor(logits.shape);
  ctx.dispatch(ctx.pipeline(CE_BWD), params('uuf', [rows, V, scale]), [logits, targets, mask, lse, d], flat(ctx, rows * V));
  return d;
}

// ---------------------------------------------------------------- AdamW

export interface AdamWOptions {
  lr: number;
  beta1?: number;
  beta2?: number;
  eps?: number;
  weightDecay?: number;
}

const ADAMW = `${struct('ufffffff', ['n', 'lr', 'b1', 'b2', 'eps', 'wd', 'bc1', 'bc2'])}
@group(0) @binding(1) var<storage, read_write> PA: array<f32>;
@group(0) @binding(2) var<storage, read> G: array<f32>;
@group(0) @binding(3) var<storage, read_write> M: array<f32>;
@group(0) @binding(4) var<storage, read_write> V: array<f32>;
${FLAT}
  if (i >= p.n) { return; }
  let g = G[i];
  let m = p.b1 * M[i] + (1.0 - p.b1) * g;
  let v = p.b2 * V[i] + (1.0 - p.b2) * g * g;
  M[i] = m;
  V[i] = v;
  let mh = m / p.bc1;
  let vh = v / p.bc2;
  PA[i] = PA[i] - p.lr * (mh / (sqrt(vh) + p.eps) + p.wd * PA[i]);
}`;

// The same step with the gradient multiplied by GS[1] (a clipping factor computed on the GPU).
const ADAMW_SCALED = ADAMW.replace('@group(0) @binding(4) var<storage, read_write> V: array<f32>;', '@group(0) @binding(4) var<storage, read_write> V: array<f32>;\n@group(0) @binding(5) var<storage, read> GS: array<f32>;').replace('let g = G[i];', 'let g = G[i] * GS[1];');

/**
 * One AdamW step (decoupled weight decay, bias correction; `step` counts from 1). With `gradScale`
 * (a tensor whose element 1 is the factor, as gradClipFactor writes it) the gradient is scaled first.
 */
export function adamw(ctx: GpuContext, param: Tensor, grad: Tensor, m: Tensor, v: Tensor, step: number, o: AdamWOptions, gradScale?: Tensor): void {
  sameSize('adamw', param, grad, m, v);
  const b1 = o.beta1 ?? 0.9;
  const b2 = o.beta2 ?? 0.999;
  ctx.dispatch(
    ctx.pipeline(gradScale ? ADAMW_SCALED : ADAMW),
    params('ufffffff', [param.size, o.lr, b1, b2, o.eps ?? 1e-8, o.weightDecay ?? 0, 1 - b1 ** step, 1 - b2 ** step]),
    gradScale ? [param, grad, m, v, gradScale] : [param, grad, m, v],
    flat(ctx, param.size),
  );
}

const CLIP = `${struct('uf', ['n', 'maxNorm'])}
@group(0) @binding(1) var<storage, read> SQ: array<f32>;
@group(0) @binding(2) var<storage, read_write> O: array<f32>;
@compute @workgroup_size(1)
fn main() {
  var s = 0.0;
  for (var i = 0u; i < p.n; i = i + 1u) { s = s + SQ[i]; }
  let norm = sqrt(s);
  O[0] = norm;
  O[1] = select(1.0, p.maxNorm / (norm + 1e-6), norm > p.maxNorm);
}`;

/**
 * From per-tensor sums of squares [n] (sumSquares slots): out[0] = global L2 norm, out[1] = the
 * clipping factor maxNorm / (norm + 1e-6) when norm > maxNorm, else 1. Lets clipping run without a
 * read-back; adamw takes out as its gradScale.
 */
export function gradClipFactor(ctx: GpuContext, sums: Tensor, maxNorm: number, out: Tensor): Tensor {
  if (out.size < 2) throw new AppError('SHAPE_MISMATCH', 'gradClipFactor: out needs 2 elements.');
  ctx.dispatch(ctx.pipeline(CLIP), params('uf', [sums.size, maxNorm]), [sums, out], [1]);
  return out;
}

// ---------------------------------------------------------------- dropout

const DROPOUT = `${struct('uuff', ['n', 'seed', 'p', 'scale'])}
@group(0) @binding(1) var<storage, read> X: array<f32>;
@group(0) @binding(2) var<storage, read_write> Y: array<f32>;
fn pcg(v: u32) -> u32 {
  let s = v * 747796405u + 2891336453u;
  let w = ((s >> ((s >> 28u) + 4u)) ^ s) * 277803737u;
  return (w >> 22u) ^ w;
}
${FLAT}
  if (i >= p.n) { return; }
  let h = pcg(i ^ pcg(p.seed));
  let u = f32(h >> 8u) / 16777216.0;
  Y[i] = select(0.0, X[i] * p.scale, u >= p.p);
}`;

/**
 * Seeded inverted dropout: y = x·keep/(1−p), keep when hash(seed, i) ≥ p. The op is linear in x, so
 * the backward is the same call on dy with the same seed.
 */
export function dropout(ctx: GpuContext, x: Tensor, p: number, seed: number, out?: Tensor): Tensor {
  const y = out ?? ctx.tensor(x.shape);
  ctx.dispatch(ctx.pipeline(DROPOUT), params('uuff', [x.size, seed, p, p > 0 ? 1 / (1 - p) : 1]), [x, y], flat(ctx, x.size));
  return y;
}

// ---------------------------------------------------------------- bias

const BIAS = `${struct('uu', ['n', 'width'])}
@group(0) @binding(1) var<storage, read> BI: array<f32>;
@group(0) @binding(2) var<storage, read_write> Y: array<f32>;
${FLAT}
  if (i >= p.n) { return; }
  Y[i] = Y[i] + BI[i % p.width];
}`;

/** y [rows, width] += bias [width] in place (Qwen2-style q/k/v biases). Its backward w.r.t. y is the identity. */
export function addBias(ctx: GpuContext, y: Tensor, bias: Tensor): Tensor {
  ctx.dispatch(ctx.pipeline(BIAS), params('uu', [y.size, bias.size]), [bias, y], flat(ctx, y.size));
  return y;
}

// ---------------------------------------------------------------- reductions

const SUMSQ = `${struct('uu', ['n', 'slot'])}
@group(0) @binding(1) var<storage, read> X: array<f32>;
@group(0) @binding(2) var<storage, read_write> O: array<f32>;
${REDUCE}
@compute @workgroup_size(${ROW_WG})
fn main(@builtin(local_invocation_id) lid: vec3<u32>) {
  let t = lid.x;
  var s = 0.0;
  for (var i = t; i < p.n; i = i + ${ROW_WG}u) { let v = X[i]; s = s + v * v; }
  let total = reduceSum(s, t);
  if (t == 0u) { O[p.slot] = total; }
}`;

/** out[slot] = Σ x² (one workgroup; for gradient norms of adapter-sized tensors). */
export function sumSquares(ctx: GpuContext, x: Tensor, out: Tensor, slot: number): void {
  if (slot >= out.size) throw new AppError('SHAPE_MISMATCH', `sumSquares: slot ${slot} is outside a buffer of ${out.size}.`);
  ctx.dispatch(ctx.pipeline(SUMSQ), params('uu', [x.size, slot]), [x, out], [1]);
}
