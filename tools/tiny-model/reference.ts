/**
 * A slow, plain fp32 Llama forward pass with a KV cache, written to be obviously
 * correct rather than fast: the yardstick for the ONNX graph and for the WebGPU
 * engine. Weights are in the HF layout (linear weights [out, in]); activations are
 * stored as float32 and sums accumulate in float64. No I/O: runs in Node and browsers.
 *
 * Optional LoRA: y = W·x + (alpha / r) · B·(A·x) for the adapter's target modules.
 */
import { linearWeightName, llamaWeightNames, loraKey, type LinearModule, type LlamaConfig, type LlamaWeights, type LoraAdapter } from '../../worker/model';

/** Per layer, keys and values [batch, kvHeads, length, headDim] row-major. */
export interface KvCache {
  batch: number;
  length: number;
  keys: Float32Array[];
  values: Float32Array[];
}

export interface ForwardInput {
  /** [batch][seq] token ids; every row the same length. */
  inputIds: number[][];
  /** [batch][past + seq] of 0/1; default all ones. */
  attentionMask?: number[][];
  /** [batch][seq]; default past + s. */
  positionIds?: number[][];
  past?: KvCache;
  lora?: LoraAdapter;
}

export interface ForwardOutput {
  /** [batch, seq, vocab] row-major. */
  logits: Float32Array;
  present: KvCache;
  batch: number;
  seqLen: number;
}

export function emptyKvCache(config: LlamaConfig, batch: number): KvCache {
  const keys: Float32Array[] = [];
  const values: Float32Array[] = [];
  for (let i = 0; i < config.numLayers; i++) {
    keys.push(new Float32Array(0));
    values.push(new Float32Array(0));
  }
  return { batch, length: 0, keys, values };
}

function matvec(w: Float32Array, out: number, inp: number, x: Float32Array): Float32Array {
  const y = new Float32Array(out);
  for (let o = 0; o < out; o++) {
    let s = 0;
    const row = o * inp;
    for (let i = 0; i < inp; i++) s += (w[row + i] as number) * (x[i] as number);
    y[o] = s;
  }
  return y;
}

function rmsNorm(x: Float32Array, w: Float32Array, eps: number): Float32Array {
  let ss = 0;
  for (const v of x) ss += v * v;
  const inv = 1 / Math.sqrt(ss / x.length + eps);
  const y = new Float32Array(x.length);
  for (let i = 0; i < x.length; i++) y[i] = (x[i] as number) * inv * (w[i] as number);
  return y;
}

/** HF rotate_half RoPE on one head vector in place, at position p. */
function applyRope(x: Float32Array, offset: number, hd: number, p: number, invFreq: Float32Array): void {
  const half = hd / 2;
  for (let i = 0; i < half; i++) {
    const angle = Math.fround(p * (invFreq[i] as number));
    const c = Math.cos(angle);
    const s = Math.sin(angle);
    const a = x[offset + i] as number;
    const b = x[offset + i + half] as number;
    x[offset + i] = a * c - b * s;
    x[offset + i + half] = b * c + a * s;
  }
}

export function referenceForward(config: LlamaConfig, weights: LlamaWeights, input: ForwardInput): ForwardOutput {
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
  const names = llamaWeightNames(config);
  const w = (name: string): Float32Array => {
    const t = weights.get(name);
    if (!t) throw new Error(`missing weight ${name}`);
    return t.data;
  };
  const invFreq = new Float32Array(hd / 2);
  for (let i = 0; i < hd / 2; i++) invFreq[i] = 1 / config.ropeTheta ** ((2 * i) / hd);
  const lora = input.lora;
  const loraScale = lora ? lora.settings.alpha / lora.settings.r : 0;
  const linear = (x: Float32Array, layer: number, module: LinearModule, out: number, inp: number, bias?: string): Float32Array => {
    const y = matvec(w(linearWeightName(layer, module)), out, inp, x);
    if (bias) {
      const b = w(bias);
      for (let o = 0; o < out; o++) y[o] = (y[o] as number) + (b[o] as number);
    }
    const pair = lora?.weights.get(loraKey(layer, module));
    if (pair && lora) {
      const r = lora.settings.r;
      const ax = matvec(pair.a, r, inp, x);
      const bax = matvec(pair.b, out, r, ax);
      for (let o = 0; o < out; o++) y[o] = (y[o] as number) + loraScale * (bax[o] as number);
    }
    return y;
  };

  // Hidden states [B*S][H].
  const embed = w(names.embed);
  let hidden: Float32Array[] = [];
  for (let b = 0; b < B; b++) {
    for (let s = 0; s < S; s++) {
      const id = input.inputIds[b]?.[s] as number;
      if (!(id >= 0 && id < V)) throw new Error(`token id ${id} out of range`);
      hidden.push(embed.slice(id * H, (id + 1) * H));
    }
  }
  const present: KvCache = { batch: B, length: T, keys: [], values: [] };
  const rep = nH / nKv;
  const scale = 1 / Math.sqrt(hd);
  for (const [layer, l] of names.layers.entries()) {
    const qs: Float32Array[] = [];
    const keys = new Float32Array(B * nKv * T * hd);
    const values = new Float32Array(B * nKv * T * hd);
    const oldK = past.keys[layer] as Float32Array;
    const oldV = past.values[layer] as Float32Array;
    for (let b = 0; b < B; b++) {
      for (let kh = 0; kh < nKv; kh++) {
        const src = (b * nKv + kh) * P * hd;
        const dst = (b * nKv + kh) * T * hd;
        keys.set(oldK.subarray(src, src + P * hd), dst);
        values.set(oldV.subarray(src, src + P * hd), dst);
      }
    }
    for (let b = 0; b < B; b++) {
      for (let s = 0; s < S; s++) {
        const x = rmsNorm(hidden[b * S + s] as Float32Array, w(l.inputNorm), config.rmsNormEps);
        const p = positions[b]?.[s] as number;
        const q = linear(x, layer, 'q_proj', nH * hd, H, l.qBias);
        const k = linear(x, layer, 'k_proj', nKv * hd, H, l.kBias);
        const v = linear(x, layer, 'v_proj', nKv * hd, H, l.vBias);
        for (let h = 0; h < nH; h++) applyRope(q, h * hd, hd, p, invFreq);
        for (let h = 0; h < nKv; h++) {
          applyRope(k, h * hd, hd, p, invFreq);
          const dst = ((b * nKv + h) * T + P + s) * hd;
          keys.set(k.subarray(h * hd, (h + 1) * hd), dst);
          values.set(v.subarray(h * hd, (h + 1) * hd), dst);
        }
        qs.push(q);
      }
    }
    present.keys.push(keys);
    present.values.push(values);
    const next: Float32Array[] = [];
    for (let b = 0; b < B; b++) {
      for (let s = 0; s < S; s++) {
        const q = qs[b * S + s] as Float32Array;
        const ctx = new Float32Array(nH * hd);
        for (let h = 0; h < nH; h++) {
          const kh = Math.floor(h / rep);
          const base = (b * nKv + kh) * T * hd;
          const visible: number[] = [];
          for (let j = 0; j < T; j++) if (j <= P + s && mask[b]?.[j] === 1) visible.push(j);
          // A row with no visible key (a left-padding query) attends to every key evenly, as the ONNX graph does.
          const keysSeen = visible.length ? visible : Array.from({ length: T }, (_, j) => j);
          const scores = keysSeen.map((j) => {
            let d = 0;
            for (let c = 0; c < hd; c++) d += (q[h * hd + c] as number) * (keys[base + j * hd + c] as number);
            return visible.length ? d * scale : 0;
          });
          const m = Math.max(...scores);
          const e = scores.map((sc) => Math.exp(sc - m));
          const z = e.reduce((a, c) => a + c, 0);
          for (const [n, j] of keysSeen.entries()) {
            const pj = (e[n] as number) / z;
            for (let c = 0; c < hd; c++) ctx[h * hd + c] = (ctx[h * hd + c] as number) + pj * (values[base + j * hd + c] as number);
          }
        }
        const x0 = hidden[b * S + s] as Float32Array;
        const attnOut = linear(ctx, layer, 'o_proj', H, nH * hd);
        const x1 = new Float32Array(H);
        for (let i = 0; i < H; i++) x1[i] = (x0[i] as number) + (attnOut[i] as number);
        const y = rmsNorm(x1, w(l.postAttentionNorm), config.rmsNormEps);
        const gate = linear(y, layer, 'gate_proj', I, H);
        const up = linear(y, layer, 'up_proj', I, H);
        const act = new Float32Array(I);
        for (let i = 0; i < I; i++) {
          const g = gate[i] as number;
          act[i] = (g / (1 + Math.exp(-g))) * (up[i] as number);
        }
        const down = linear(act, layer, 'down_proj', H, I);
        const x2 = new Float32Array(H);
        for (let i = 0; i < H; i++) x2[i] = (x1[i] as number) + (down[i] as number);
        next.push(x2);
      }
    }
    hidden = next;
  }
  const head = w(names.lmHead ?? names.embed);
  const logits = new Float32Array(B * S * V);
  for (const [n, x] of hidden.entries()) {
    logits.set(matvec(head, V, H, rmsNorm(x, w(names.finalNorm), config.rmsNormEps)), n * V);
  }
  return { logits, present, batch: B, seqLen: S };
}
