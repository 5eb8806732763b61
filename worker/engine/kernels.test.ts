import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { GpuContext, MATMUL_CONFIGS, type Tensor } from './context';
import {
  accumulate,
  adamw,
  attention,
  attentionBackward,
  axpby,
  crossEntropy,
  crossEntropyBackward,
  dropout,
  embedding,
  embeddingBackward,
  rmsNorm,
  rmsNormBackward,
  rmsNormWeightGrad,
  rope,
  ropeTable,
  siluMul,
  siluMulBackward,
  softmax,
  type AttnShape,
} from './kernels';
import { matmul } from './matmul';
import { createNodeGpuContext } from './node-gpu';
import { adamwRef, attentionRef, crossEntropyRef, dropoutKeepRef, embeddingRef, matmulRef, rmsNormRef, ropeRef, siluMulRef, softmaxRef } from './reference';

let ctx: GpuContext;
before(async () => {
  ctx = await createNodeGpuContext();
});
after(() => ctx.destroy());

function rand(n: number, seed: number, scale = 1): Float32Array {
  let s = seed >>> 0;
  return Float32Array.from({ length: n }, () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return ((s / 2 ** 32) * 2 - 1) * scale;
  });
}

function close(actual: ArrayLike<number>, expected: ArrayLike<number>, tol: number, what: string): void {
  assert.equal(actual.length, expected.length, `${what}: length`);
  let worst = 0;
  let at = -1;
  for (let i = 0; i < actual.length; i++) {
    const d = Math.abs(actual[i]! - expected[i]!) / Math.max(1, Math.abs(expected[i]!));
    if (!(d <= worst)) {
      worst = d;
      at = i;
    }
  }
  assert.ok(worst <= tol, `${what}: max error ${worst} at ${at} (got ${actual[at]}, want ${expected[at]})`);
}

const up = (d: Float32Array, shape: number[]): Tensor => ctx.upload(d, shape);
const read = (t: Tensor): Promise<Float32Array> => ctx.read(t);

/** Σ out·R as a function of one input, for finite differences. */
function fd(f: (x: Float64Array) => ArrayLike<number>, x: Float32Array, R: ArrayLike<number>, eps = 1e-5): Float64Array {
  const g = new Float64Array(x.length);
  const xx = Float64Array.from(x);
  for (let i = 0; i < x.length; i++) {
    const o = xx[i]!;
    xx[i] = o + eps;
    const fp = f(xx);
    xx[i] = o - eps;
    const fm = f(xx);
    xx[i] = o;
    let s = 0;
    for (let j = 0; j < R.length; j++) s += (fp[j]! - fm[j]!) * R[j]!;
    g[i] = s / (2 * eps);
  }
  return g;
}

describe('matmul', () => {
  for (const config of MATMUL_CONFIGS) {
    it(`${config.name}: all transposes, batched and broadcast, alpha/beta`, async () => {
      const [B, M, N, K] = [2, 13, 11, 20];
      for (const [ta, tb] of [[false, false], [false, true], [true, false], [true, true]] as const) {
        const a = rand(B * M * K, 1);
        const b = rand(N * K, 2);
        const c0 = rand(B * M * N, 3);
        const at = up(a, ta ? [B, K, M] : [B, M, K]);
        const bt = up(b, tb ? [N, K] : [K, N]);
        const ct = up(c0, [B, M, N]);
        matmul(ctx, at, bt, { transA: ta, transB: tb, alpha: 0.5, beta: 1, out: ct, config });
        const want = matmulRef(a, b, M, N, K, ta, tb, B, M * K, 0).map((v, i) => 0.5 * v + c0[i]!);
        close(await read(ct), want, 1e-5, `${config.name} ta=${ta} tb=${tb}`);
        for (const t of [at, bt, ct]) t.release();
      }
    });
  }
  it('vec4 path (A·Bᵀ, K % 4 = 0) with ragged M, N', async () => {
    const [M, N, K] = [37, 29, 64];
    const a = rand(M * K, 4);
    const b = rand(N * K, 5);
    const out = matmul(ctx, up(a, [M, K]), up(b, [N, K]), { transB: true, config: MATMUL_CONFIGS[0] });
    close(await read(out), matmulRef(a, b, M, N, K, false, true), 1e-5, 'vec4');
  });
  it('vec4 paths A·B (K, N % 4 = 0) and Aᵀ·B (M, N % 4 = 0): batched, broadcast, ragged, alpha/beta', async () => {
    for (const config of MATMUL_CONFIGS.filter((c) => c.kind === 'register')) {
      for (const [ta, M, N, K] of [[false, 37, 28, 64], [false, 5, 8, 12], [true, 36, 20, 29], [true, 8, 64, 3]] as const) {
        const B = 2;
        const a = rand(B * M * K, 6);
        const b = rand(K * N, 7);
        const c0 = rand(B * M * N, 8);
        const ct = up(c0, [B, M, N]);
        matmul(ctx, up(a, ta ? [B, K, M] : [B, M, K]), up(b, [K, N]), { transA: ta, alpha: 0.5, beta: 1, out: ct, config });
        const want = matmulRef(a, b, M, N, K, ta, false, B, M * K, 0).map((v, i) => 0.5 * v + c0[i]!);
        close(await read(ct), want, 1e-5, `${config.name} ta=${ta} ${M}x${N}x${K}`);
        const plain = matmul(ctx, up(a.slice(0, M * K), ta ? [K, M] : [M, K]), up(b, [K, N]), { transA: ta, config });
        close(await read(plain), matmulRef(a, b, M, N, K, ta, false), 1e-5, `${config.name} ta=${ta} ${M}x${N}x${K} unbatched`);
      }
    }
  });
});

describe('element-wise and norms', () => {
  it('axpby and accumulate', async () => {
    const x = rand(300, 1);
    const y = rand(300, 2);
    const o = axpby(ctx, up(x, [300]), up(y, [300]), 2, -1);
    close(await read(o), Array.from(x, (v, i) => 2 * v - y[i]!), 1e-6, 'axpby');
    const yt = up(y, [300]);
    accumulate(ctx, up(x, [300]), yt, 0.5, 1);
    close(await read(yt), Array.from(x, (v, i) => 0.5 * v + y[i]!), 1e-6, 'accumulate');
  });

  for (const mode of ['serial', 'workgroup'] as const)
  it(`rmsnorm forward, dx and dw match the reference and finite differences (${mode} rows)`, async () => {
    ctx.rowMode = mode;
    const [rows, H, eps] = [5, 70, 1e-6];
    const x = rand(rows * H, 7);
    const w = rand(H, 8);
    const R = rand(rows * H, 9);
    const xt = up(x, [rows, H]);
    const wt = up(w, [H]);
    const { y, rstd } = rmsNorm(ctx, xt, wt, eps);
    const ref = rmsNormRef(x, w, rows, H, eps);
    close(await read(y), ref.y, 1e-5, 'rmsnorm y');
    const dx = rmsNormBackward(ctx, xt, wt, rstd, up(R, [rows, H]));
    close(await read(dx), fd((xx) => rmsNormRef(xx, w, rows, H, eps).y, x, R), 1e-4, 'rmsnorm dx');
    const dw = rmsNormWeightGrad(ctx, xt, rstd, up(R, [rows, H]), ctx.tensor([H]));
    close(await read(dw), fd((ww) => rmsNormRef(x, ww, rows, H, eps).y, w, R), 1e-4, 'rmsnorm dw');
  });

  it('silu-gated MLP forward and backward', async () => {
    const n = 200;
    const g = rand(n, 10, 3);
    const u = rand(n, 11);
    const R = rand(n, 12);
    const gt = up(g, [n]);
    const ut = up(u, [n]);
    close(await read(siluMul(ctx, gt, ut)), siluMulRef(g, u), 1e-5, 'silu fwd');
    const { dGate, dUp } = siluMulBackward(ctx, gt, ut, up(R, [n]));
    close(await read(dGate), fd((gg) => siluMulRef(gg, u), g, R), 1e-4, 'silu dgate');
    close(await read(dUp), fd((uu) => siluMulRef(g, uu), u, R), 1e-4, 'silu dup');
  });

  it('embedding lookup and scatter-add backward', async () => {
    const [V, H] = [9, 6];
    const table = rand(V * H, 13);
    const ids = [3, 0, 3, 8, 1];
    const idT = ctx.upload(Uint32Array.from(ids), [ids.length]);
    close(await read(embedding(ctx, idT, up(table, [V, H]))), embeddingRef(ids, table, H), 0, 'embedding');
    const R = rand(ids.length * H, 14);
    const dE = embeddingBackward(ctx, idT, up(R, [ids.length, H]), ctx.tensor([V, H]));
    close(await read(dE), fd((tt) => embeddingRef(ids, tt, H), table, R), 1e-5, 'embedding backward');
  });
});

describe('rotary embeddings', () => {
  it('forward matches HF rotate_half; inverse is the backward', async () => {
    const [B, T, heads, hd, theta, past] = [2, 5, 3, 8, 10000, 4];
    const rows = B * T;
    const x = rand(rows * heads * hd, 15);
    const tab = ropeTable(32, hd, theta);
    const tables = { cos: up(tab.cos, [32, hd / 2]), sin: up(tab.sin, [32, hd / 2]), positions: 32 };
    const y = rope(ctx, up(x, [rows, heads * hd]), tables, T, past, heads, hd);
    close(await read(y), ropeRef(x, rows, T, past, heads, hd, theta), 1e-5, 'rope');
    const R = rand(rows * heads * hd, 16);
    const dx = rope(ctx, up(R, [rows, heads * hd]), tables, T, past, heads, hd, true);
    close(await read(dx), fd((xx) => ropeRef(xx, rows, T, past, heads, hd, theta), x, R), 1e-4, 'rope backward');
  });
});

for (const hd of [6, 8])
describe(`attention (head size ${hd}${hd % 4 === 0 ? ', vec4 kernels' : ''})`, () => {
  const s: AttnShape = { B: 2, T: 5, Tk: 5, nh: 4, nkv: 2, hd, kvRows: 5, past: 0 };
  const scale = 1 / Math.sqrt(s.hd);
  const q = rand(s.B * s.T * s.nh * s.hd, 17);
  const k = rand(s.B * s.T * s.nkv * s.hd, 18);
  const v = rand(s.B * s.T * s.nkv * s.hd, 19);
  const refShape = { B: s.B, T: s.T, nh: s.nh, nkv: s.nkv, hd: s.hd };

  for (const mode of ['serial', 'workgroup'] as const)
  it(`stable softmax with and without the causal mask (${mode} rows)`, async () => {
    ctx.rowMode = mode;
    const x = Float32Array.from([1000, 1001, 999, 3, 0.5, -2, 7, 7.5, 1, 2, 3, 4]);
    const t = softmax(ctx, up(x, [3, 4]), 3, 4, 0, false);
    const want = [0, 1, 2].flatMap((r) => softmaxRef(Array.from(x.slice(r * 4, r * 4 + 4))));
    close(await read(t), want, 1e-6, 'softmax');
    const c = softmax(ctx, up(x, [3, 4]), 3, 4, 0, true);
    const wantC = [0, 1, 2].flatMap((r) => [...softmaxRef(Array.from(x.slice(r * 4, r * 4 + r + 1))), ...new Array<number>(3 - r).fill(0)]);
    close(await read(c), wantC, 1e-6, 'causal softmax');
  });

  for (const mode of ['serial', 'workgroup'] as const)
  it(`causal GQA forward and backward (dq, dk, dv) match finite differences (${mode} rows)`, async () => {
    ctx.rowMode = mode;
    const qt = up(q, [s.B * s.T, s.nh * s.hd]);
    const kt = up(k, [s.B * s.T, s.nkv * s.hd]);
    const vt = up(v, [s.B * s.T, s.nkv * s.hd]);
    const { out, prob } = attention(ctx, qt, kt, vt, s, scale);
    close(await read(out), attentionRef(q, k, v, refShape, scale), 1e-5, 'attention');
    const R = rand(q.length, 20);
    const { dq, dk, dv } = attentionBackward(ctx, qt, kt, vt, prob, up(R, [s.B * s.T, s.nh * s.hd]), s, scale);
    close(await read(dq), fd((x) => attentionRef(x, k, v, refShape, scale), q, R), 1e-4, 'dq');
    close(await read(dk), fd((x) => attentionRef(q, x, v, refShape, scale), k, R), 1e-4, 'dk');
    close(await read(dv), fd((x) => attentionRef(q, k, x, refShape, scale), v, R), 1e-4, 'dv');
  });
});

describe('loss, optimizer, dropout', () => {
  for (const mode of ['serial', 'workgroup'] as const)
  it(`masked cross-entropy: mean over masked rows, gradient to logits (${mode} rows)`, async () => {
    ctx.rowMode = mode;
    const [rows, V] = [6, 11];
    const logits = rand(rows * V, 21, 4);
    const targets = [1, 10, 0, 5, 5, 2];
    const mask = [1, 0, 1, 1, 0, 1];
    const lt = up(logits, [rows, V]);
    const tt = ctx.upload(Uint32Array.from(targets), [rows]);
    const mt = up(Float32Array.from(mask), [rows]);
    const { loss, lse } = crossEntropy(ctx, lt, tt, mt);
    const rowLoss = await read(loss);
    const count = mask.reduce((a, b) => a + b, 0);
    assert.ok(Math.abs(rowLoss.reduce((a, b) => a + b, 0) / count - crossEntropyRef(logits, targets, mask, V)) < 1e-5);
    const d = crossEntropyBackward(ctx, lt, tt, mt, lse, 1 / count);
    close(await read(d), fd((x) => [crossEntropyRef(x, targets, mask, V)], logits, [1]), 1e-4, 'ce backward');
  });

  it('AdamW: decoupled weight decay and bias correction over three steps', async () => {
    const n = 50;
    const p0 = rand(n, 22);
    const pt = up(p0, [n]);
    const mt = ctx.zeros([n]);
    const vt = ctx.zeros([n]);
    const pr = Float64Array.from(p0);
    const mr = new Float64Array(n);
    const vr = new Float64Array(n);
    for (let step = 1; step <= 3; step++) {
      const g = rand(n, 30 + step);
      adamw(ctx, pt, up(g, [n]), mt, vt, step, { lr: 0.01, weightDecay: 0.1 });
      adamwRef(pr, g, mr, vr, step, 0.01, 0.9, 0.999, 1e-8, 0.1);
    }
    close(await read(pt), pr, 1e-5, 'adamw');
  });

  it('seeded dropout: same mask for the same seed, scaled by 1/(1-p), backward = same op', async () => {
    const n = 4000;
    const p = 0.25;
    const x = rand(n, 40);
    const y = await read(dropout(ctx, up(x, [n]), p, 1234));
    const keep = dropoutKeepRef(n, p, 1234);
    close(y, Array.from(x, (v, i) => (keep[i] ? v / (1 - p) : 0)), 1e-6, 'dropout');
    const kept = keep.reduce((a, b) => a + b, 0) / n;
    assert.ok(Math.abs(kept - 0.75) < 0.03, `kept fraction ${kept}`);
    const other = await read(dropout(ctx, up(x, [n]), p, 99));
    assert.notDeepEqual(Array.from(other), Array.from(y));
  });
});
