/**
 * Batched matmul: C[b] = alpha · op(A[b]) · op(B[b]) + beta · C[b], op = identity or transpose.
 * WGSL is generated per (transposes, tile config, vec4, f16 B) and cached by the context.
 *  - `register`: each thread keeps a TM×TN block in registers, no workgroup memory (fastest on
 *    SwiftShader; with A·Bᵀ and K % 4 == 0 it loads vec4s along K).
 *  - `tiled`: BM×BN output tiles, A and B staged through workgroup memory BK at a time (real GPUs).
 * A batch stride of 0 broadcasts an operand (a weight shared by every batch entry).
 */
import { AppError } from '../../shared';
import { GpuContext, MATMUL_CONFIGS, Tensor, type MatmulConfig } from './context';

export interface MatmulOptions {
  transA?: boolean;
  transB?: boolean;
  alpha?: number;
  /** 0 overwrites `out`; 1 accumulates into it (gradient accumulation). */
  beta?: number;
  /** Output tensor; allocated (pooled) when absent. */
  out?: Tensor;
  /** Override the adapter's tile config (benchmarks). */
  config?: MatmulConfig;
}

interface Variant {
  transA: boolean;
  transB: boolean;
  /**
   * vec4 loads on the register kernel: 'nt' = A·Bᵀ with K % 4 = 0 (both along K); 'nn' = A·B with
   * K % 4 = 0 and N % 4 = 0 (A along K, B along N); 'tn' = Aᵀ·B with M % 4 = 0 and N % 4 = 0 (both
   * along the row). '' = scalar loads.
   */
  vec4: '' | 'nt' | 'nn' | 'tn';
  f16B: boolean;
  config: MatmulConfig;
}

const HEADER = `struct P { M: u32, N: u32, K: u32, batch: u32, strideA: u32, strideB: u32, strideC: u32, alpha: f32, beta: f32, p0: u32, p1: u32, p2: u32 };
@group(0) @binding(0) var<uniform> p: P;`;

function loaders(v: Variant): string {
  const ia = v.transA ? 'k * p.M + m' : 'm * p.K + k';
  const ib = v.transB ? 'n * p.K + k' : 'k * p.N + n';
  const bRead = v.f16B ? `f32(B[b * p.strideB + ${ib}])` : `B[b * p.strideB + ${ib}]`;
  return `
fn loadA(b: u32, m: u32, k: u32) -> f32 { if (m >= p.M || k >= p.K) { return 0.0; } return A[b * p.strideA + ${ia}]; }
fn loadB(b: u32, k: u32, n: u32) -> f32 { if (n >= p.N || k >= p.K) { return 0.0; } return ${bRead}; }`;
}

function store(tm: number, tn: number): string {
  const lines: string[] = [];
  for (let i = 0; i < tm; i++) {
    for (let j = 0; j < tn; j++) {
      lines.push(`  if (m0 + ${i}u < p.M && n0 + ${j}u < p.N) {
    let idx = b * p.strideC + (m0 + ${i}u) * p.N + n0 + ${j}u;
    var v = p.alpha * acc${i}_${j};
    if (p.beta != 0.0) { v = v + p.beta * C[idx]; }
    C[idx] = v;
  }`);
    }
  }
  return lines.join('\n');
}

function accDecl(tm: number, tn: number): string {
  const l: string[] = [];
  for (let i = 0; i < tm; i++) for (let j = 0; j < tn; j++) l.push(`  var acc${i}_${j} = 0.0;`);
  return l.join('\n');
}

function vec4Store(tm: number): string {
  const lines: string[] = [];
  for (let i = 0; i < tm; i++) {
    lines.push(`  if (m0 + ${i}u < p.M) {
    let idx = (b * p.strideC + (m0 + ${i}u) * p.N + n0) / 4u;
    var v = p.alpha * acc${i};
    if (p.beta != 0.0) { v = v + p.beta * C[idx]; }
    C[idx] = v;
  }`);
  }
  return lines.join('\n');
}

/**
 * A·B (nn) and Aᵀ·B (tn) with B read as vec4 along N: each thread keeps TM rows × 4 columns in
 * TM vec4 accumulators (tn = 4; the backward's dx = dy·W and the LoRA weight gradients).
 */
function registerVec4NShader(v: Variant): string {
  const { wgX, wgY, tm } = v.config;
  const body: string[] = [];
  if (v.vec4 === 'nn') {
    for (let i = 0; i < tm; i++) body.push(`    let a${i} = A[aBase${i} + k4];`);
    body.push(`    let bRow = bBase + k4 * 4u * N4;`);
    for (let kk = 0; kk < 4; kk++) body.push(`    let b${kk} = B[bRow + ${kk}u * N4];`);
    for (let i = 0; i < tm; i++) body.push(`    acc${i} = acc${i} + a${i}.x * b0 + a${i}.y * b1 + a${i}.z * b2 + a${i}.w * b3;`);
  } else {
    body.push(`    let a = A[aBase + k * M4];`);
    body.push(`    let bv = B[bBase + k * N4];`);
    for (let i = 0; i < tm; i++) body.push(`    acc${i} = acc${i} + a[${i % 4}] * bv;`);
  }
  const bases: string[] = [];
  if (v.vec4 === 'nn') {
    for (let i = 0; i < tm; i++) bases.push(`  let aBase${i} = (b * p.strideA + min(m0 + ${i}u, p.M - 1u) * p.K) / 4u;`);
  } else {
    bases.push(`  let aBase = b * p.strideA / 4u + m0 / 4u;`);
  }
  bases.push(`  let bBase = b * p.strideB / 4u + n0 / 4u;`);
  const loop = v.vec4 === 'nn' ? `for (var k4 = 0u; k4 < p.K / 4u; k4 = k4 + 1u)` : `for (var k = 0u; k < p.K; k = k + 1u)`;
  const acc = Array.from({ length: tm }, (_, i) => `  var acc${i} = vec4<f32>(0.0);`).join('\n');
  return `${HEADER}
@group(0) @binding(1) var<storage, read> A: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> B: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> C: array<vec4<f32>>;
@compute @workgroup_size(${wgX}, ${wgY}, 1)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
  let b = wid.z;
  let m0 = (wid.y * ${wgY}u + lid.y) * ${tm}u;
  let n0 = (wid.x * ${wgX}u + lid.x) * 4u;
  if (m0 >= p.M || n0 >= p.N) { return; }
  let N4 = p.N / 4u;
  let M4 = p.M / 4u;
${acc}
${bases.join('\n')}
  ${loop} {
${body.join('\n')}
  }
${vec4Store(tm)}
}`;
}

function registerShader(v: Variant): string {
  const { wgX, wgY, tm, tn } = v.config;
  const bType = v.f16B ? 'f16' : 'f32';
  if (v.vec4 === 'nn' || v.vec4 === 'tn') return registerVec4NShader(v);
  if (v.vec4 === 'nt') {
    // A (M×K) and B (N×K) both contiguous along K: vec4 loads, rows clamped and masked at the store.
    const loads: string[] = [];
    for (let i = 0; i < tm; i++) loads.push(`    let a${i} = A[aBase${i} + k4];`);
    for (let j = 0; j < tn; j++) loads.push(`    let b${j} = B[bBase${j} + k4];`);
    for (let i = 0; i < tm; i++) for (let j = 0; j < tn; j++) loads.push(`    acc${i}_${j} = acc${i}_${j} + dot(a${i}, b${j});`);
    const bases: string[] = [];
    for (let i = 0; i < tm; i++) bases.push(`  let aBase${i} = (b * p.strideA + min(m0 + ${i}u, p.M - 1u) * p.K) / 4u;`);
    for (let j = 0; j < tn; j++) bases.push(`  let bBase${j} = (b * p.strideB + min(n0 + ${j}u, p.N - 1u) * p.K) / 4u;`);
    return `${HEADER}
@group(0) @binding(1) var<storage, read> A: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> B: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> C: array<f32>;
@compute @workgroup_size(${wgX}, ${wgY}, 1)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
  let b = wid.z;
  let m0 = (wid.y * ${wgY}u + lid.y) * ${tm}u;
  let n0 = (wid.x * ${wgX}u + lid.x) * ${tn}u;
  if (m0 >= p.M || n0 >= p.N) { return; }
${accDecl(tm, tn)}
${bases.join('\n')}
  let K4 = p.K / 4u;
  for (var k4 = 0u; k4 < K4; k4 = k4 + 1u) {
${loads.join('\n')}
  }
${store(tm, tn)}
}`;
  }
  const body: string[] = [];
  for (let i = 0; i < tm; i++) body.push(`    let a${i} = loadA(b, m0 + ${i}u, k);`);
  for (let j = 0; j < tn; j++) body.push(`    let b${j} = loadB(b, k, n0 + ${j}u);`);
  for (let i = 0; i < tm; i++) for (let j = 0; j < tn; j++) body.push(`    acc${i}_${j} = fma(a${i}, b${j}, acc${i}_${j});`);
  return `${v.f16B ? 'enable f16;\n' : ''}${HEADER}
@group(0) @binding(1) var<storage, read> A: array<f32>;
@group(0) @binding(2) var<storage, read> B: array<${bType}>;
@group(0) @binding(3) var<storage, read_write> C: array<f32>;
${loaders(v)}
@compute @workgroup_size(${wgX}, ${wgY}, 1)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
  let b = wid.z;
  let m0 = (wid.y * ${wgY}u + lid.y) * ${tm}u;
  let n0 = (wid.x * ${wgX}u + lid.x) * ${tn}u;
  if (m0 >= p.M || n0 >= p.N) { return; }
${accDecl(tm, tn)}
  for (var k = 0u; k < p.K; k = k + 1u) {
${body.join('\n')}
  }
${store(tm, tn)}
}`;
}

function tiledShader(v: Variant): string {
  const { wgX, wgY, tm, tn, bk } = v.config;
  const BM = wgY * tm;
  const BN = wgX * tn;
  const NT = wgX * wgY;
  const bType = v.f16B ? 'f16' : 'f32';
  // Map the cooperative loads so consecutive threads read consecutive addresses.
  const aLoad = v.transA
    ? `let mm = i % ${BM}u; let kk = i / ${BM}u;`
    : `let kk = i % ${bk}u; let mm = i / ${bk}u;`;
  const bLoad = v.transB
    ? `let kk = i % ${bk}u; let nn = i / ${bk}u;`
    : `let nn = i % ${BN}u; let kk = i / ${BN}u;`;
  const inner: string[] = [];
  for (let i = 0; i < tm; i++) inner.push(`      let a${i} = As[k * ${BM}u + ty * ${tm}u + ${i}u];`);
  for (let j = 0; j < tn; j++) inner.push(`      let b${j} = Bs[k * ${BN}u + tx * ${tn}u + ${j}u];`);
  for (let i = 0; i < tm; i++) for (let j = 0; j < tn; j++) inner.push(`      acc${i}_${j} = fma(a${i}, b${j}, acc${i}_${j});`);
  return `${v.f16B ? 'enable f16;\n' : ''}${HEADER}
@group(0) @binding(1) var<storage, read> A: array<f32>;
@group(0) @binding(2) var<storage, read> B: array<${bType}>;
@group(0) @binding(3) var<storage, read_write> C: array<f32>;
var<workgroup> As: array<f32, ${bk * BM}>;
var<workgroup> Bs: array<f32, ${bk * BN}>;
${loaders(v)}
@compute @workgroup_size(${wgX}, ${wgY}, 1)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
  let b = wid.z;
  let tx = lid.x;
  let ty = lid.y;
  let tid = ty * ${wgX}u + tx;
  let mBase = wid.y * ${BM}u;
  let nBase = wid.x * ${BN}u;
  let m0 = mBase + ty * ${tm}u;
  let n0 = nBase + tx * ${tn}u;
${accDecl(tm, tn)}
  for (var k0 = 0u; k0 < p.K; k0 = k0 + ${bk}u) {
    for (var i = tid; i < ${BM * bk}u; i = i + ${NT}u) {
      ${aLoad}
      As[kk * ${BM}u + mm] = loadA(b, mBase + mm, k0 + kk);
    }
    for (var i = tid; i < ${BN * bk}u; i = i + ${NT}u) {
      ${bLoad}
      Bs[kk * ${BN}u + nn] = loadB(b, k0 + kk, nBase + nn);
    }
    workgroupBarrier();
    for (var k = 0u; k < ${bk}u; k = k + 1u) {
${inner.join('\n')}
    }
    workgroupBarrier();
  }
${store(tm, tn)}
}`;
}

export function matmulShader(v: Variant): string {
  return v.config.kind === 'tiled' ? tiledShader(v) : registerShader(v);
}

/**
 * C = alpha·op(A)·op(B) + beta·C. Shapes: A [...batch, M, K] ([..., K, M] when transA),
 * B [...batch, K, N] ([..., N, K] when transB) or 2-D to broadcast; C [...batch, M, N].
 */
export function matmul(ctx: GpuContext, a: Tensor, b: Tensor, opts: MatmulOptions = {}): Tensor {
  const transA = opts.transA ?? false;
  const transB = opts.transB ?? false;
  if (a.shape.length < 2 || b.shape.length < 2) throw new AppError('SHAPE_MISMATCH', 'matmul needs tensors with at least 2 dimensions.');
  const ar = a.shape.length;
  const br = b.shape.length;
  const M = transA ? a.shape[ar - 1]! : a.shape[ar - 2]!;
  const Ka = transA ? a.shape[ar - 2]! : a.shape[ar - 1]!;
  const Kb = transB ? b.shape[br - 1]! : b.shape[br - 2]!;
  const N = transB ? b.shape[br - 2]! : b.shape[br - 1]!;
  if (Ka !== Kb) throw new AppError('SHAPE_MISMATCH', `matmul: inner dimensions differ (${Ka} vs ${Kb}).`);
  const K = Ka;
  const batchA = a.shape.slice(0, -2).reduce((x, y) => x * y, 1);
  const batchB = b.shape.slice(0, -2).reduce((x, y) => x * y, 1);
  const batch = Math.max(batchA, batchB);
  if ((batchA !== 1 && batchA !== batch) || (batchB !== 1 && batchB !== batch)) {
    throw new AppError('SHAPE_MISMATCH', `matmul: batch sizes ${batchA} and ${batchB} do not broadcast.`);
  }
  const batchShape = (batchA >= batchB ? a : b).shape.slice(0, -2);
  const out = opts.out ?? ctx.tensor([...batchShape, M, N]);
  if (out.size !== batch * M * N) throw new AppError('SHAPE_MISMATCH', `matmul: output holds ${out.size} values, needs ${batch * M * N}.`);
  const strideA = batchA === 1 ? 0 : M * K;
  const strideB = batchB === 1 ? 0 : K * N;
  const config = opts.config ?? ctx.matmulConfig;
  const f16B = b.dtype === 'f16';
  if (a.dtype === 'f16') throw new AppError('INTERNAL', 'matmul: only B may be f16.');
  // vec4 variants of the register kernel (tm = tn = 4); offsets must stay multiples of 4 floats.
  let vec4: Variant['vec4'] = '';
  if (config.kind === 'register' && !f16B && config.tm === 4 && config.tn === 4) {
    const aligned = strideA % 4 === 0 && strideB % 4 === 0;
    if (!transA && transB && K % 4 === 0) vec4 = 'nt';
    else if (aligned && !transA && !transB && K % 4 === 0 && N % 4 === 0) vec4 = 'nn';
    else if (aligned && transA && !transB && M % 4 === 0 && N % 4 === 0) vec4 = 'tn';
  }
  const pipeline = ctx.pipeline(matmulShader({ transA, transB, vec4, f16B, config }));
  const params = new ArrayBuffer(48);
  const u = new Uint32Array(params);
  const f = new Float32Array(params);
  u[0] = M;
  u[1] = N;
  u[2] = K;
  u[3] = batch;
  u[4] = strideA;
  u[5] = strideB;
  u[6] = M * N;
  f[7] = opts.alpha ?? 1;
  f[8] = opts.beta ?? 0;
  const bm = config.wgY * config.tm;
  const bn = config.wgX * config.tn;
  ctx.dispatch(pipeline, params, [a, b, out], [Math.ceil(N / bn), Math.ceil(M / bm), batch]);
  return out;
}

/**
 * GFLOP/s of an M×K · K×N (A·Bᵀ layout, the linear-layer case) matmul for every tile config,
 * timed with timestamp queries where available. For the bench harness; no assertions.
 */
export async function benchMatmul(ctx: GpuContext, M = 512, N = 512, K = 512, iterations = 3): Promise<Record<string, number>> {
  return ctx.withLock(async () => {
    const a = ctx.upload(Float32Array.from({ length: M * K }, (_, i) => ((i * 7) % 13) / 13 - 0.5), [M, K]);
    const b = ctx.upload(Float32Array.from({ length: N * K }, (_, i) => ((i * 5) % 11) / 11 - 0.5), [N, K]);
    const out = ctx.tensor([M, N]);
    const result: Record<string, number> = {};
    try {
      for (const config of MATMUL_CONFIGS) {
        matmul(ctx, a, b, { transB: true, out, config }); // compile + warm up
        await ctx.sync();
        let best = Infinity;
        for (let i = 0; i < iterations; i++) {
          const ms = await ctx.time(() => matmul(ctx, a, b, { transB: true, out, config }));
          best = Math.min(best, ms);
        }
        result[config.name] = (2 * M * N * K) / (best / 1000) / 1e9;
      }
    } finally {
      a.release();
      b.release();
      out.release();
    }
    return result;
  });
}

/** Picks the fastest tile config on this adapter with a small matmul and makes it the context's default. */
export async function autotuneMatmul(ctx: GpuContext, size = 256): Promise<MatmulConfig> {
  const r = await benchMatmul(ctx, size, size, size, 2);
  let best = ctx.matmulConfig;
  let bestRate = r[best.name] ?? 0;
  for (const c of MATMUL_CONFIGS) {
    if ((r[c.name] ?? 0) > bestRate) {
      best = c;
      bestRate = r[c.name]!;
    }
  }
  ctx.matmulConfig = best;
  return best;
}
