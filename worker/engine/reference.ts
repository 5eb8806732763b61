/**
 * Plain TypeScript references for every kernel and for the whole decoder forward (with a KV cache),
 * computed in float64: the project's one CPU reference. Tests compare the WGSL kernels, the engine
 * and the generated ONNX graphs (tools/tiny-model) with these, and check the backward kernels
 * against finite differences of them. Slow on purpose: clarity over speed.
 */
import { linearWeightName, loraKey, type LinearModule, type LlamaConfig, type LoraAdapter } from '../model';

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

/** LoRA tensors for the reference: key `${layer}.${target}` (worker/model's loraKey) → A [r, in], B [out, r]. */
export type LoraRefMap = Map<string, { a: Arr; b: Arr }>;

/** A LoRA adapter as the reference applies it: y = W·x + (alpha / rank) · B·(A·x). */
export interface RefLora {
  map: ReadonlyMap<string, { a: Arr; b: Arr }>;
  rank: number;
  alpha: number;
}

/**
 * What the whole-model reference needs of a config: the Llama layout's sizes plus the few
 * numerics other decoders change. A LlamaConfig (Llama, Mistral, Qwen2) is one as it is.
 */
export interface ReferenceConfig
  extends Pick<
    LlamaConfig,
    'vocabSize' | 'hiddenSize' | 'intermediateSize' | 'numLayers' | 'numHeads' | 'numKvHeads' | 'headDim' | 'rmsNormEps' | 'ropeTheta' | 'tieWordEmbeddings' | 'attentionBias'
  > {
  /** The MLP's gate activation: `silu` (Llama, default) or `gelu_pytorch_tanh` (Gemma). */
  hiddenAct?: 'silu' | 'gelu_pytorch_tanh';
  /** Gemma: token embeddings are multiplied by √hidden (rounded to float32). */
  scaleEmbeddings?: boolean;
  /** Gemma: RMSNorm multiplies by (1 + w) instead of w. */
  normUnitOffset?: boolean;
}

/** Per layer, keys and values [batch, kvHeads, length, headDim] row-major. */
export interface KvCache {
  batch: number;
  length: number;
  keys: ArrayLike<number>[];
  values: ArrayLike<number>[];
}

export interface ForwardInput {
  /** [batch][seq] token ids; every row the same length. */
  inputIds: readonly (readonly number[])[];
  /** [batch][past + seq] of 0/1; default all ones. */
  attentionMask?: readonly (readonly number[])[];
  /** [batch][seq]; default past + s. */
  positionIds?: readonly (readonly number[])[];
  past?: KvCache;
  /** A PEFT adapter (worker/model's LoraAdapter) or the same tensors as a RefLora. */
  lora?: LoraAdapter | RefLora;
}

export interface ForwardOutput {
  /** [batch, seq, vocab] row-major. */
  logits: Float64Array;
  present: KvCache;
  batch: number;
  seqLen: number;
}

/** An empty cache (float32, so it can be fed to onnxruntime as it is). */
export function emptyKvCache(config: Pick<ReferenceConfig, 'numLayers'>, batch: number): KvCache {
  const keys: Float32Array[] = [];
  const values: Float32Array[] = [];
  for (let i = 0; i < config.numLayers; i++) {
    keys.push(new Float32Array(0));
    values.push(new Float32Array(0));
  }
  return { batch, length: 0, keys, values };
}

function matvec(w: Arr, out: number, inp: number, x: Arr): Float64Array {
  const y = new Float64Array(out);
  for (let o = 0; o < out; o++) {
    let s = 0;
    const row = o * inp;
    for (let i = 0; i < inp; i++) s += w[row + i]! * x[i]!;
    y[o] = s;
  }
  return y;
}

const GELU_C = Math.sqrt(2 / Math.PI);

/**
 * The whole decoder in float64 with a KV cache: the yardstick for the WebGPU engine and for the
 * generated ONNX graphs. Weights in the HF layout (linear weights [out, in]); q/k/v biases when the
 * config says so; padding masks and explicit positions as transformers.js feeds them; optional LoRA.
 * A query row that sees no key (a left-padding row) attends to every key evenly, as the ONNX graph does.
 */
export function referenceForward(config: ReferenceConfig, weights: ReadonlyMap<string, { data: Arr }>, input: ForwardInput): ForwardOutput {
  const { hiddenSize: H, numHeads: nH, numKvHeads: nKv, headDim: hd, vocabSize: V, intermediateSize: I } = config;
  const B = input.inputIds.length;
  const S = input.inputIds[0]?.length ?? 0;
  if (input.inputIds.some((r) => r.length !== S)) throw new Error('inputIds rows differ in length');
  const past = input.past ?? emptyKvCache(config, B);
  if (past.batch !== B) throw new Error(`past batch ${past.batch} != ${B}`);
  const P = past.length;
  const T = P + S;
  const mask = input.attentionMask ?? Array.from({ length: B }, () => new Array<number>(T).fill(1));
  const positions = input.positionIds ?? Array.from({ length: B }, () => Array.from({ length: S }, (_, s) => P + s));
  const w = (name: string): Arr => {
    const t = weights.get(name);
    if (!t) throw new Error(`reference: missing weight ${name}`);
    return t.data;
  };
  const normOffset = config.normUnitOffset ? 1 : 0;
  const rmsNorm = (x: Arr, name: string): Float64Array => {
    const g = w(name);
    let ss = 0;
    for (let i = 0; i < H; i++) ss += x[i]! * x[i]!;
    const inv = 1 / Math.sqrt(ss / H + config.rmsNormEps);
    const y = new Float64Array(H);
    for (let i = 0; i < H; i++) y[i] = x[i]! * inv * (normOffset + g[i]!);
    return y;
  };
  const invFreq = Array.from({ length: hd / 2 }, (_, i) => Math.fround(1 / config.ropeTheta ** ((2 * i) / hd)));
  /** HF rotate_half RoPE on one head vector in place, at position p. */
  const rope = (x: Float64Array, offset: number, p: number): void => {
    const half = hd / 2;
    for (let i = 0; i < half; i++) {
      const angle = Math.fround(p * invFreq[i]!);
      const c = Math.cos(angle);
      const s = Math.sin(angle);
      const a = x[offset + i]!;
      const b = x[offset + i + half]!;
      x[offset + i] = a * c - b * s;
      x[offset + i + half] = b * c + a * s;
    }
  };
  const lora: RefLora | undefined =
    input.lora && 'settings' in input.lora ? { map: input.lora.weights, rank: input.lora.settings.r, alpha: input.lora.settings.alpha } : input.lora;
  const loraScale = lora ? lora.alpha / lora.rank : 0;
  const linear = (x: Arr, layer: number, module: LinearModule, out: number, inp: number): Float64Array => {
    const name = linearWeightName(layer, module);
    const y = matvec(w(name), out, inp, x);
    const biasName = name.replace(/\.weight$/, '.bias');
    const bias = weights.get(biasName);
    if (config.attentionBias && !bias && (module === 'q_proj' || module === 'k_proj' || module === 'v_proj')) throw new Error(`reference: missing weight ${biasName}`);
    if (bias) for (let o = 0; o < out; o++) y[o] = y[o]! + bias.data[o]!;
    const pair = lora?.map.get(loraKey(layer, module));
    if (pair && lora) {
      const bax = matvec(pair.b, out, lora.rank, matvec(pair.a, lora.rank, inp, x));
      for (let o = 0; o < out; o++) y[o] = y[o]! + loraScale * bax[o]!;
    }
    return y;
  };
  const act =
    config.hiddenAct === 'gelu_pytorch_tanh'
      ? (g: number): number => 0.5 * g * (1 + Math.tanh(GELU_C * (g + 0.044715 * g * g * g)))
      : (g: number): number => g / (1 + Math.exp(-g));

  // Hidden states [B*S][H].
  const embed = w('model.embed_tokens.weight');
  const embedScale = config.scaleEmbeddings ? Math.fround(Math.sqrt(H)) : 1;
  let hidden: Float64Array[] = [];
  for (let b = 0; b < B; b++) {
    for (let s = 0; s < S; s++) {
      const id = input.inputIds[b]![s]!;
      if (!(Number.isInteger(id) && id >= 0 && id < V)) throw new Error(`token id ${id} out of range`);
      hidden.push(Float64Array.from({ length: H }, (_, i) => embed[id * H + i]! * embedScale));
    }
  }
  const present: KvCache = { batch: B, length: T, keys: [], values: [] };
  const rep = nH / nKv;
  const scale = 1 / Math.sqrt(hd);
  for (let layer = 0; layer < config.numLayers; layer++) {
    const pre = `model.layers.${layer}.`;
    const qs: Float64Array[] = [];
    const keys = new Float64Array(B * nKv * T * hd);
    const values = new Float64Array(B * nKv * T * hd);
    const oldK = past.keys[layer]!;
    const oldV = past.values[layer]!;
    for (let b = 0; b < B; b++) {
      for (let kh = 0; kh < nKv; kh++) {
        const src = (b * nKv + kh) * P * hd;
        const dst = (b * nKv + kh) * T * hd;
        for (let i = 0; i < P * hd; i++) {
          keys[dst + i] = oldK[src + i]!;
          values[dst + i] = oldV[src + i]!;
        }
      }
    }
    for (let b = 0; b < B; b++) {
      for (let s = 0; s < S; s++) {
        const x = rmsNorm(hidden[b * S + s]!, `${pre}input_layernorm.weight`);
        const p = positions[b]![s]!;
        const q = linear(x, layer, 'q_proj', nH * hd, H);
        const k = linear(x, layer, 'k_proj', nKv * hd, H);
        const v = linear(x, layer, 'v_proj', nKv * hd, H);
        for (let h = 0; h < nH; h++) rope(q, h * hd, p);
        for (let h = 0; h < nKv; h++) {
          rope(k, h * hd, p);
          const dst = ((b * nKv + h) * T + P + s) * hd;
          keys.set(k.subarray(h * hd, (h + 1) * hd), dst);
          values.set(v.subarray(h * hd, (h + 1) * hd), dst);
        }
        qs.push(q);
      }
    }
    present.keys.push(keys);
    present.values.push(values);
    const next: Float64Array[] = [];
    for (let b = 0; b < B; b++) {
      for (let s = 0; s < S; s++) {
        const q = qs[b * S + s]!;
        const ctx = new Float64Array(nH * hd);
        const visible: number[] = [];
        for (let j = 0; j < T; j++) if (j <= P + s && mask[b]?.[j] === 1) visible.push(j);
        const keysSeen = visible.length ? visible : Array.from({ length: T }, (_, j) => j);
        for (let h = 0; h < nH; h++) {
          const base = (b * nKv + Math.floor(h / rep)) * T * hd;
          const scores = keysSeen.map((j) => {
            let d = 0;
            for (let c = 0; c < hd; c++) d += q[h * hd + c]! * keys[base + j * hd + c]!;
            return visible.length ? d * scale : 0;
          });
          const probs = softmaxRef(scores);
          for (const [n, j] of keysSeen.entries()) {
            for (let c = 0; c < hd; c++) ctx[h * hd + c] = ctx[h * hd + c]! + probs[n]! * values[base + j * hd + c]!;
          }
        }
        const x0 = hidden[b * S + s]!;
        const attnOut = linear(ctx, layer, 'o_proj', H, nH * hd);
        const x1 = x0.map((val, i) => val + attnOut[i]!);
        const y = rmsNorm(x1, `${pre}post_attention_layernorm.weight`);
        const gate = linear(y, layer, 'gate_proj', I, H);
        const up = linear(y, layer, 'up_proj', I, H);
        const m = gate.map((g, i) => act(g) * up[i]!);
        const down = linear(m, layer, 'down_proj', H, I);
        next.push(x1.map((val, i) => val + down[i]!));
      }
    }
    hidden = next;
  }
  const head = !config.tieWordEmbeddings && weights.has('lm_head.weight') ? w('lm_head.weight') : embed;
  const logits = new Float64Array(B * S * V);
  for (const [n, x] of hidden.entries()) logits.set(matvec(head, V, H, rmsNorm(x, 'model.norm.weight')), n * V);
  return { logits, present, batch: B, seqLen: S };
}

/** Whole Llama forward in float64 without a cache: tokens [B][T] → logits [B·T, V]. Optional LoRA (no dropout). */
export function llamaForwardRef(cfg: ReferenceConfig, w: ReadonlyMap<string, { data: Arr }>, tokens: readonly (readonly number[])[], lora?: RefLora): Float64Array {
  return referenceForward(cfg, w, lora ? { inputIds: tokens, lora } : { inputIds: tokens }).logits;
}

/** Greedy decoding with the reference and its KV cache; stops after an id in `stopIds` (included). */
export function referenceGreedy(config: ReferenceConfig, weights: ReadonlyMap<string, { data: Arr }>, prompt: readonly number[], maxNewTokens: number, stopIds: readonly number[] = []): number[] {
  const V = config.vocabSize;
  const out: number[] = [];
  let past: KvCache | undefined;
  let input: readonly number[] = prompt;
  for (let step = 0; step < maxNewTokens; step++) {
    const r = referenceForward(config, weights, past ? { inputIds: [input], past } : { inputIds: [input] });
    const last = r.logits.subarray((input.length - 1) * V, input.length * V);
    let best = 0;
    for (let i = 1; i < V; i++) if (last[i]! > last[best]!) best = i;
    out.push(best);
    if (stopIds.includes(best)) break;
    past = r.present;
    input = [best];
  }
  return out;
}
