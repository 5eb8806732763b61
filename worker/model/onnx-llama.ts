/**
 * Builds a decoder in the Llama layout (Llama, Qwen2 with q/k/v biases, Gemma's
 * scaled embeddings, (1 + w) norms and tanh GELU) as a plain ONNX graph (opset 17) with the IO
 * transformers.js expects of a decoder with KV cache:
 *   input_ids, attention_mask, position_ids, past_key_values.N.key/value
 *   → logits, present.N.key/value
 * KV tensors are [batch_size, kv_heads, seq, head_dim]. The attention mask
 * combines the padding mask (left padding) with causality offset by the past
 * length; RoPE follows HF's rotate_half convention; GQA repeats kv heads.
 */
import { linearWeightName, type LinearModule, type LlamaWeights } from './config';
import type { ReferenceConfig } from '../engine/reference';
import {
  DataType,
  floatTensor,
  int64Tensor,
  type OnnxAttribute,
  type OnnxModel,
  type OnnxNode,
  type OnnxTensor,
  type OnnxValueInfo,
} from './onnx-proto';

/** Value that replaces masked attention scores before the softmax. */
export const MASKED_SCORE = -1e9;

class GraphBuilder {
  readonly nodes: OnnxNode[] = [];
  readonly initializers: OnnxTensor[] = [];
  #counter = 0;
  readonly #consts = new Map<string, string>();

  op(opType: string, inputs: string[], attributes: OnnxAttribute[] = [], nOutputs = 1): string[] {
    const id = this.#counter++;
    const name = `${opType}_${id}`;
    const outputs = Array.from({ length: nOutputs }, (_, i) => `${name}_out${i}`);
    this.nodes.push({ opType, name, inputs, outputs, attributes });
    return outputs;
  }

  /** One-output op. */
  o(opType: string, inputs: string[], attributes: OnnxAttribute[] = []): string {
    return this.op(opType, inputs, attributes)[0] as string;
  }

  /** A named op writing to a given output name (graph outputs). */
  named(opType: string, inputs: string[], output: string, attributes: OnnxAttribute[] = []): string {
    this.nodes.push({ opType, name: `${opType}_${this.#counter++}`, inputs, outputs: [output], attributes });
    return output;
  }

  weight(name: string, dims: number[], data: Float32Array | (() => Float32Array)): string {
    this.initializers.push(floatTensor(name, dims, data));
    return name;
  }

  /** int64 constant (dims [] for a scalar), shared by value. */
  i64(values: number[], dims: number[] = [values.length]): string {
    const key = `i64:${dims.join('x')}:${values.join(',')}`;
    let name = this.#consts.get(key);
    if (!name) {
      name = `const_i64_${this.#consts.size}`;
      this.initializers.push(int64Tensor(name, dims, values));
      this.#consts.set(key, name);
    }
    return name;
  }

  f32(values: number[], dims: number[] = [values.length]): string {
    const key = `f32:${dims.join('x')}:${values.join(',')}`;
    let name = this.#consts.get(key);
    if (!name) {
      name = `const_f32_${this.#consts.size}`;
      this.initializers.push(floatTensor(name, dims, Float32Array.from(values)));
      this.#consts.set(key, name);
    }
    return name;
  }
}

const ints = (name: string, value: number[]): OnnxAttribute => ({ name, type: 'ints', value });
const int = (name: string, value: number): OnnxAttribute => ({ name, type: 'int', value });

/** [out, in] row-major → [in, out] row-major, so MatMul(x, W) computes x·Wᵀ. */
function transpose2d(data: Float32Array, rows: number, cols: number): Float32Array {
  const out = new Float32Array(data.length);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) out[c * rows + r] = data[r * cols + c] as number;
  return out;
}

export function buildDecoderOnnx(config: ReferenceConfig, weights: LlamaWeights, docString?: string): OnnxModel {
  const g = new GraphBuilder();
  const { hiddenSize: H, numHeads: nH, numKvHeads: nKv, headDim: hd, vocabSize: V } = config;
  const layerName = (i: number, part: string): string => `model.layers.${i}.${part}`;
  const biasOf = (i: number, module: 'q_proj' | 'k_proj' | 'v_proj'): string | undefined =>
    config.attentionBias ? layerName(i, `self_attn.${module}.bias`) : undefined;
  const names = {
    embed: 'model.embed_tokens.weight',
    finalNorm: 'model.norm.weight',
    lmHead: !config.tieWordEmbeddings && weights.has('lm_head.weight') ? 'lm_head.weight' : undefined,
    layers: Array.from({ length: config.numLayers }, (_, i) => ({
      inputNorm: layerName(i, 'input_layernorm.weight'),
      postAttentionNorm: layerName(i, 'post_attention_layernorm.weight'),
      qBias: biasOf(i, 'q_proj'),
      kBias: biasOf(i, 'k_proj'),
      vBias: biasOf(i, 'v_proj'),
    })),
  };
  const get = (name: string): Float32Array => {
    const w = weights.get(name);
    if (!w) throw new Error(`missing weight ${name}`);
    return w.data;
  };
  const linear = (x: string, layer: number, module: LinearModule, bias?: string): string => {
    const name = linearWeightName(layer, module);
    const w = weights.get(name);
    if (!w) throw new Error(`missing weight ${name}`);
    const [out, inp] = w.shape as [number, number];
    // Made when written (lazy): a large model's transposed weights are never all in memory at once.
    const y = g.o('MatMul', [x, g.weight(`${name}.T`, [inp, out], () => transpose2d(w.data, out, inp))]);
    return bias ? g.o('Add', [y, g.weight(bias, [out], get(bias))]) : y;
  };
  const eps = g.f32([config.rmsNormEps], []);
  const rmsNorm = (x: string, weightName: string): string => {
    const ms = g.o('ReduceMean', [g.o('Mul', [x, x])], [ints('axes', [-1]), int('keepdims', 1)]);
    const normed = g.o('Div', [x, g.o('Sqrt', [g.o('Add', [ms, eps])])]);
    // Gemma scales by (1 + w), added in float32 as Hugging Face does.
    const w = config.normUnitOffset ? Float32Array.from(get(weightName), (v) => 1 + v) : get(weightName);
    return g.o('Mul', [normed, g.weight(weightName, [H], w)]);
  };
  const c = Math.sqrt(2 / Math.PI);
  const activation = (x: string): string =>
    config.hiddenAct === 'gelu_pytorch_tanh'
      ? // 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))
        g.o('Mul', [
          g.o('Mul', [x, g.f32([0.5], [])]),
          g.o('Add', [g.f32([1], []), g.o('Tanh', [g.o('Mul', [g.f32([c], []), g.o('Add', [x, g.o('Mul', [g.f32([0.044715], []), g.o('Mul', [x, g.o('Mul', [x, x])])])])])])]),
        ])
      : g.o('Mul', [x, g.o('Sigmoid', [x])]);

  // Embedding (Gemma multiplies it by √hidden).
  let h = g.o('Gather', [g.weight(names.embed, [V, H], () => get(names.embed)), 'input_ids'], [int('axis', 0)]);
  if (config.scaleEmbeddings) h = g.o('Mul', [h, g.f32([Math.sqrt(H)], [])]);

  // Rotary tables from position_ids: cos/sin [B, 1, S, hd].
  const invFreq: number[] = [];
  for (let i = 0; i < hd / 2; i++) invFreq.push(1 / config.ropeTheta ** ((2 * i) / hd));
  const pos = g.o('Unsqueeze', [g.o('Cast', ['position_ids'], [int('to', DataType.FLOAT)]), g.i64([2])]);
  const freqs = g.o('Mul', [pos, g.f32(invFreq)]);
  const emb = g.o('Concat', [freqs, freqs], [int('axis', -1)]);
  const cos = g.o('Unsqueeze', [g.o('Cos', [emb]), g.i64([1])]);
  const sin = g.o('Unsqueeze', [g.o('Sin', [emb]), g.i64([1])]);
  const rope = (x: string): string => {
    const x1 = g.o('Slice', [x, g.i64([0]), g.i64([hd / 2]), g.i64([3])]);
    const x2 = g.o('Slice', [x, g.i64([hd / 2]), g.i64([hd]), g.i64([3])]);
    const rotated = g.o('Concat', [g.o('Neg', [x2]), x1], [int('axis', 3)]);
    return g.o('Add', [g.o('Mul', [x, cos]), g.o('Mul', [rotated, sin])]);
  };

  // Mask [B, 1, S, T]: key j visible to query i iff j <= past + i and attention_mask[b, j] = 1.
  const one = g.i64([1], []);
  const seqLen = g.o('Gather', [g.o('Shape', ['input_ids']), one], [int('axis', 0)]);
  const totalLen = g.o('Gather', [g.o('Shape', ['attention_mask']), one], [int('axis', 0)]);
  const pastLen = g.o('Sub', [totalLen, seqLen]);
  const keyIdx = g.o('Unsqueeze', [g.o('Range', [g.i64([0], []), totalLen, one]), g.i64([0])]);
  const queryIdx = g.o('Unsqueeze', [g.o('Range', [pastLen, totalLen, one]), g.i64([1])]);
  const causal = g.o('LessOrEqual', [keyIdx, queryIdx]);
  const padding = g.o('Unsqueeze', [g.o('Cast', ['attention_mask'], [int('to', DataType.BOOL)]), g.i64([1, 2])]);
  const allowed = g.o('And', [causal, padding]);
  const masked = g.f32([MASKED_SCORE], []);
  const scale = g.f32([1 / Math.sqrt(hd)], []);
  const rep = nH / nKv;
  const repeatKv = (x: string): string => {
    if (rep === 1) return x;
    const u = g.o('Unsqueeze', [x, g.i64([2])]);
    const tiled = g.o('Concat', Array.from({ length: rep }, () => u), [int('axis', 2)]);
    return g.o('Reshape', [tiled, g.i64([0, nH, -1, hd])]);
  };
  const heads = (x: string, n: number): string =>
    g.o('Transpose', [g.o('Reshape', [x, g.i64([0, 0, n, hd])])], [ints('perm', [0, 2, 1, 3])]);

  for (const [i, l] of names.layers.entries()) {
    const x = rmsNorm(h, l.inputNorm);
    const q = rope(heads(linear(x, i, 'q_proj', l.qBias), nH));
    const k = rope(heads(linear(x, i, 'k_proj', l.kBias), nKv));
    const v = heads(linear(x, i, 'v_proj', l.vBias), nKv);
    const presentK = g.named('Concat', [`past_key_values.${i}.key`, k], `present.${i}.key`, [int('axis', 2)]);
    const presentV = g.named('Concat', [`past_key_values.${i}.value`, v], `present.${i}.value`, [int('axis', 2)]);
    const kt = g.o('Transpose', [repeatKv(presentK)], [ints('perm', [0, 1, 3, 2])]);
    const scores = g.o('Mul', [g.o('MatMul', [q, kt]), scale]);
    const probs = g.o('Softmax', [g.o('Where', [allowed, scores, masked])], [int('axis', -1)]);
    const ctx = g.o('MatMul', [probs, repeatKv(presentV)]);
    const merged = g.o('Reshape', [g.o('Transpose', [ctx], [ints('perm', [0, 2, 1, 3])]), g.i64([0, 0, nH * hd])]);
    h = g.o('Add', [h, linear(merged, i, 'o_proj')]);
    const y = rmsNorm(h, l.postAttentionNorm);
    const gate = linear(y, i, 'gate_proj');
    const act = activation(gate);
    h = g.o('Add', [h, linear(g.o('Mul', [act, linear(y, i, 'up_proj')]), i, 'down_proj')]);
  }
  const final = rmsNorm(h, names.finalNorm);
  const lmHead = names.lmHead;
  const head = lmHead
    ? g.weight(`${lmHead}.T`, [H, V], () => transpose2d(get(lmHead), V, H))
    : g.o('Transpose', [names.embed], [ints('perm', [1, 0])]);
  g.named('MatMul', [final, head], 'logits');

  const inputs: OnnxValueInfo[] = [
    { name: 'input_ids', elemType: DataType.INT64, shape: ['batch_size', 'sequence_length'] },
    { name: 'attention_mask', elemType: DataType.INT64, shape: ['batch_size', 'total_sequence_length'] },
    { name: 'position_ids', elemType: DataType.INT64, shape: ['batch_size', 'sequence_length'] },
  ];
  const outputs: OnnxValueInfo[] = [{ name: 'logits', elemType: DataType.FLOAT, shape: ['batch_size', 'sequence_length', V] }];
  for (let i = 0; i < config.numLayers; i++) {
    for (const kind of ['key', 'value']) {
      inputs.push({ name: `past_key_values.${i}.${kind}`, elemType: DataType.FLOAT, shape: ['batch_size', nKv, 'past_sequence_length', hd] });
      outputs.push({ name: `present.${i}.${kind}`, elemType: DataType.FLOAT, shape: ['batch_size', nKv, 'total_sequence_length', hd] });
    }
  }
  return {
    irVersion: 8,
    opsetVersion: 17,
    producerName: 'execution-node tiny-model',
    producerVersion: '1',
    ...(docString ? { docString } : {}),
    graph: { name: 'decoder', nodes: g.nodes, initializers: g.initializers, inputs, outputs },
  };
}
