/**
 * Plain TypeScript references for every kernel and for the whole Llama forward, computed in
 * float64. Tests compare the WGSL kernels with these and check the backward kernels against
 * finite differences of them. Slow on purpose: clarity over speed.
 */
import type { LlamaConfig, LlamaWeights } from '../model';

type Arr = ArrayLike<number>;

export function matmulRef(a: Arr, b: Arr, M: number, N: number, K: number, transA = false, transB = false, batch = 1, strideA = M * K, strideB = K * N): Float64Array {
  const c = new Float64Array(batch * M * N);
  for (let bi = 0; bi < batch; bi++) {
    for (let m = 0; m < M; m++) {
      for (let n = 0; n < N; n++) {
        let s = 0;
        for (let k = 0; k < K; k++) {
          const av = a[bi * strideA + (transA ? k * M + m : m * K + k)]!;
          const bv = b[bi * strideB + (transB ? n * K + k : k * N + n)]!;
          s += av * bv;
        }
        c[bi * M * N + m * N + n] = s;
      }
    }
  }
  return c;
}

export function rmsNormRef(x: Arr, w: Arr, rows: number, H: number, eps: number): { y: Float64Array; rstd: Float64Array } {
  const y = new Float64Array(rows * H);
  const rstd = new Float64Array(rows);
  for (let r = 0; r < rows; r++) {
    let s = 0;
    for (let c = 0; c < H; c++) s += x[r * H + c]! ** 2;
    const rs = 1 / Math.sqrt(s / H + eps);
    rstd[r] = rs;
    for (let c = 0; c < H; c++) y[r * H + c] = x[r * H + c]! * rs * w[c]!;
  }
  return { y, rstd };
}

/** HF rotate_half rotary embedding; row r of [rows, heads·hd] sits at position past + r % T. */
export function ropeRef(x: Arr, rows: number, T: number, past: number, heads: number, hd: number, theta: number): Float64Array {
  const y = new Float64Array(rows * heads * hd);
  const half = hd / 2;
  for (let r = 0; r < rows; r++) {
    const pos = past + (r % T);
    for (let h = 0; h < heads; h++) {
      const base = (r * heads + h) * hd;
      for (let d = 0; d < half; d++) {
        const inv = Math.fround(1 / Math.fround(theta ** Math.fround((2 * d) / hd)));
        const ang = Math.fround(pos * inv);
        const c = Math.cos(ang);
        const s = Math.sin(ang);
        const x1 = x[base + d]!;
        const x2 = x[base + d + half]!;
        y[base + d] = x1 * c - x2 * s;
        y[base + d + half] = x2 * c + x1 * s;
      }
    }
  }
  return y;
}

export interface AttnRefShape {
  B: number;
  T: number;
  nh: number;
  nkv: number;
  hd: number;
}

/** Causal GQA attention: q [B·T, nh·hd], k/v [B·T, nkv·hd] → [B·T, nh·hd]. */
export function attentionRef(q: Arr, k: Arr, v: Arr, s: AttnRefShape, scale: number): Float64Array {
  const { B, T, nh, nkv, hd } = s;
  const out = new Float64Array(B * T * nh * hd);
  const g = nh / nkv;
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < nh; h++) {
      const kh = Math.floor(h / g);
      for (let i = 0; i < T; i++) {
        const sc: number[] = [];
        for (let j = 0; j <= i; j++) {
          let d = 0;
          for (let e = 0; e < hd; e++) d += q[(b * T + i) * nh * hd + h * hd + e]! * k[(b * T + j) * nkv * hd + kh * hd + e]!;
          sc.push(d * scale);
        }
        const p = softmaxRef(sc);
        for (let e = 0; e < hd; e++) {
          let o = 0;
          for (let j = 0; j <= i; j++) o += p[j]! * v[(b * T + j) * nkv * hd + kh * hd + e]!;
          out[(b * T + i) * nh * hd + h * hd + e] = o;
        }
      }
    }
  }
  return out;
}

export function softmaxRef(x: readonly number[]): number[] {
  const m = Math.max(...x);
  const e = x.map((v) => Math.exp(v - m));
  const s = e.reduce((a, b) => a + b, 0);
  return e.map((v) => v / s);
}

export function siluMulRef(g: Arr, u: Arr): Float64Array {
  const o = new Float64Array(g.length);
  for (let i = 0; i < g.length; i++) o[i] = (g[i]! / (1 + Math.exp(-g[i]!))) * u[i]!;
  return o;
}

export function embeddingRef(ids: Arr, table: Arr, H: number): Float64Array {
  const o = new Float64Array(ids.length * H);
  for (let r = 0; r < ids.length; r++) for (let c = 0; c < H; c++) o[r * H + c] = table[ids[r]! * H + c]!;
  return o;
}

/** Mean over masked rows of −log softmax(logits)[target]. */
export function crossEntropyRef(logits: Arr, targets: Arr, mask: Arr, V: number): number {
  const rows = targets.length;
  let total = 0;
  let count = 0;
  for (let r = 0; r < rows; r++) {
    if (!mask[r]) continue;
    let m = -Infinity;
    for (let j = 0; j < V; j++) m = Math.max(m, logits[r * V + j]!);
    let s = 0;
    for (let j = 0; j < V; j++) s += Math.exp(logits[r * V + j]! - m);
    total += (m + Math.log(s) - logits[r * V + targets[r]!]!) * mask[r]!;
    count += mask[r]!;
  }
  return count > 0 ? total / count : 0;
}

function pcg(v: number): number {
  const s = (Math.imul(v >>> 0, 747796405) + 2891336453) >>> 0;
  const w = Math.imul(((s >>> ((s >>> 28) + 4)) ^ s) >>> 0, 277803737) >>> 0;
  return ((w >>> 22) ^ w) >>> 0;
}

/** The dropout kernel's keep mask. */
export function dropoutKeepRef(n: number, p: number, seed: number): Uint8Array {
  const keep = new Uint8Array(n);
  const hs = pcg(seed);
  for (let i = 0; i < n; i++) keep[i] = (pcg((i ^ hs) >>> 0) >>> 8) / 16777216 >= Math.fround(p) ? 1 : 0;
  return keep;
}

export function adamwRef(p: Float64Array, g: Arr, m: Float64Array, v: Float64Array, step: number, lr: number, b1: number, b2: number, eps: number, wd: number): void {
  for (let i = 0; i < p.length; i++) {
    m[i] = b1 * m[i]! + (1 - b1) * g[i]!;
    v[i] = b2 * v[i]! + (1 - b2) * g[i]! ** 2;
    const mh = m[i]! / (1 - b1 ** step);
    const vh = v[i]! / (1 - b2 ** step);
    p[i] = p[i]! - lr * (mh / (Math.sqrt(vh) + eps) + wd * p[i]!);
  }
}

/** LoRA tensors for the reference: key `${layer}.${target}` → A [r, in], B [out, r]. */
export type LoraRefMap = Map<string, { a: Arr; b: Arr }>;

function linearRef(x: Arr, rows: number, w: Arr, out: number, inn: number, lora?: { a: Arr; b: Arr }, rank = 0, scaling = 0): Float64Array {
  const y = matmulRef(x, w, rows, out, inn, false, true);
  if (lora) {
    const a = matmulRef(x, lora.a, rows, rank, inn, false, true);
    const d = matmulRef(a, lora.b, rows, out, rank, false, true);
    for (let i = 0; i < y.length; i++) y[i] = y[i]! + scaling * d[i]!;
  }
  return y;
}

/** Whole Llama forward in float64: tokens [B][T] → logits [B·T, V]. Optional LoRA (no dropout). */
export function llamaForwardRef(cfg: LlamaConfig, w: LlamaWeights, tokens: readonly (readonly number[])[], lora?: { map: LoraRefMap; rank: number; alpha: number }): Float64Array {
  const B = tokens.length;
  const T = tokens[0]!.length;
  const N = B * T;
  const { hiddenSize: H, numHeads: nh, numKvHeads: nkv, headDim: hd, intermediateSize: I, vocabSize: V } = cfg;
  const get = (name: string): Arr => {
    const t = w.get(name);
    if (!t) throw new Error(`reference: missing weight ${name}`);
    return t.data;
  };
  const scaling = lora ? lora.alpha / lora.rank : 0;
  const lin = (x: Arr, layer: number, target: string, name: string, out: number, inn: number): Float64Array => {
    const y = linearRef(x, N, get(name), out, inn, lora?.map.get(`${layer}.${target}`), lora?.rank ?? 0, scaling);
    const bias = w.get(name.replace(/\.weight$/, '.bias'));
    if (bias) for (let i = 0; i < y.length; i++) y[i] = y[i]! + bias.data[i % out]!;
    return y;
  };
  let x: Float64Array = embeddingRef(tokens.flat(), get('model.embed_tokens.weight'), H);
  for (let l = 0; l < cfg.numLayers; l++) {
    const pre = `model.layers.${l}.`;
    const h1 = rmsNormRef(x, get(`${pre}input_layernorm.weight`), N, H, cfg.rmsNormEps).y;
    const q = ropeRef(lin(h1, l, 'q_proj', `${pre}self_attn.q_proj.weight`, nh * hd, H), N, T, 0, nh, hd, cfg.ropeTheta);
    const k = ropeRef(lin(h1, l, 'k_proj', `${pre}self_attn.k_proj.weight`, nkv * hd, H), N, T, 0, nkv, hd, cfg.ropeTheta);
    const v = lin(h1, l, 'v_proj', `${pre}self_attn.v_proj.weight`, nkv * hd, H);
    const att = attentionRef(q, k, v, { B, T, nh, nkv, hd }, 1 / Math.sqrt(hd));
    const o = lin(att, l, 'o_proj', `${pre}self_attn.o_proj.weight`, H, nh * hd);
    const x2 = x.map((val, i) => val + o[i]!);
    const h2 = rmsNormRef(x2, get(`${pre}post_attention_layernorm.weight`), N, H, cfg.rmsNormEps).y;
    const g = lin(h2, l, 'gate_proj', `${pre}mlp.gate_proj.weight`, I, H);
    const u = lin(h2, l, 'up_proj', `${pre}mlp.up_proj.weight`, I, H);
    const m = siluMulRef(g, u);
    const d = lin(m, l, 'down_proj', `${pre}mlp.down_proj.weight`, H, I);
    x = x2.map((val, i) => val + d[i]!);
  }
  const hf = rmsNormRef(x, get('model.norm.weight'), N, H, cfg.rmsNormEps).y;
  const head = w.has('lm_head.weight') && !cfg.tieWordEmbeddings ? get('lm_head.weight') : get('model.embed_tokens.weight');
  return matmulRef(hf, head, N, V, H, false, true);
}
