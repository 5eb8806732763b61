/**
 * The Llama-family model config (Hugging Face `config.json`) and the weight
 * names and shapes it implies. Mistral and Qwen2 checkpoints use the same tensor
 * layout (Qwen2 adds q/k/v biases), so they are read the same way.
 */
import { AppError } from '../../shared';
import { sha256Hex } from './sha256';
import { tensorAsFloat32, type SafetensorsFile } from './safetensors';

export const SUPPORTED_ARCHITECTURES = ['LlamaForCausalLM', 'MistralForCausalLM', 'Qwen2ForCausalLM'] as const;
export type LlamaArchitecture = (typeof SUPPORTED_ARCHITECTURES)[number];

export interface LlamaConfig {
  architecture: LlamaArchitecture;
  /** `model_type` from config.json (llama, mistral, qwen2). */
  modelType: string;
  vocabSize: number;
  hiddenSize: number;
  intermediateSize: number;
  numLayers: number;
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  rmsNormEps: number;
  ropeTheta: number;
  maxPositions: number;
  tieWordEmbeddings: boolean;
  /** q/k/v projections carry a bias (Qwen2, or Llama with attention_bias true). */
  attentionBias: boolean;
  bosTokenId: number | null;
  /** One or more end ids (config.json allows a list). */
  eosTokenIds: number[];
  padTokenId: number | null;
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function bad(what: string): AppError {
  return new AppError('MODEL_CORRUPT', `config.json: ${what}. Fix the model's config.json.`);
}

function posInt(raw: Record<string, unknown>, key: string, fallback?: number): number {
  const v = raw[key] ?? fallback;
  if (!Number.isSafeInteger(v) || (v as number) <= 0) throw bad(`${key} must be a positive integer (got ${JSON.stringify(v)})`);
  return v as number;
}

function posNum(raw: Record<string, unknown>, key: string, fallback: number): number {
  const v = raw[key] ?? fallback;
  if (typeof v !== 'number' || !(v > 0)) throw bad(`${key} must be a positive number (got ${JSON.stringify(v)})`);
  return v;
}

function optId(v: unknown, key: string): number | null {
  if (v === undefined || v === null) return null;
  if (!Number.isSafeInteger(v) || (v as number) < 0) throw bad(`${key} must be a token id`);
  return v as number;
}

/**
 * `model_type` → the class-name stem of its architectures, for the families whose pairing is
 * unambiguous (transformers picks the network by model_type, many other tools by architectures).
 */
const MODEL_TYPE_STEMS: Readonly<Record<string, string>> = {
  llama: 'Llama',
  mistral: 'Mistral',
  mixtral: 'Mixtral',
  qwen2: 'Qwen2',
  qwen2_moe: 'Qwen2Moe',
  qwen3: 'Qwen3',
  qwen3_moe: 'Qwen3Moe',
  gemma: 'Gemma',
  gemma2: 'Gemma2',
  gemma3: 'Gemma3',
  gemma3_text: 'Gemma3',
  phi: 'Phi',
  phi3: 'Phi3',
  gpt2: 'GPT2',
  gpt_neox: 'GPTNeoX',
  falcon: 'Falcon',
  olmo: 'Olmo',
  olmo2: 'Olmo2',
  stablelm: 'StableLm',
  starcoder2: 'Starcoder2',
  granite: 'Granite',
  cohere: 'Cohere',
  smollm3: 'SmolLM3',
};

/** What follows the stem in a Hugging Face class name (LlamaForCausalLM, Qwen2Model, GPT2LMHeadModel, …). */
const HEAD_SUFFIX = /^(For[A-Z][A-Za-z]*|Model|LMHeadModel|PreTrainedModel)$/;

/** The known model_type whose stem + a head suffix spells `architecture`, or null. */
function modelTypeOfArchitecture(architecture: string): string | null {
  let best: { type: string; stem: string } | null = null;
  for (const [type, stem] of Object.entries(MODEL_TYPE_STEMS)) {
    if (!architecture.startsWith(stem) || !HEAD_SUFFIX.test(architecture.slice(stem.length))) continue;
    if (!best || stem.length > best.stem.length) best = { type, stem };
  }
  return best?.type ?? null;
}

/**
 * Refuses (MODEL_CONFIG_INCONSISTENT) a config.json whose `model_type` names one known family and
 * whose `architectures` name another, e.g. model_type llama with ["Qwen2ForCausalLM"]: transformers
 * builds the network from model_type, this engine and other tools from architectures, so the same
 * folder would run as two different models. Unknown names on either side are not judged.
 */
export function checkModelType(config: Record<string, unknown>): void {
  const modelType = config.model_type;
  const archs = Array.isArray(config.architectures) ? config.architectures.filter((a): a is string => typeof a === 'string') : [];
  if (typeof modelType !== 'string') return;
  const stem = MODEL_TYPE_STEMS[modelType];
  for (const arch of archs) {
    const archType = modelTypeOfArchitecture(arch);
    const fits = stem !== undefined && arch.startsWith(stem) && HEAD_SUFFIX.test(arch.slice(stem.length));
    if (archType !== null && stem !== undefined && !fits) {
      throw new AppError(
        'MODEL_CONFIG_INCONSISTENT',
        `config.json says model_type ${JSON.stringify(modelType)} but architectures ${JSON.stringify(archs)} (a ${archType} class); ` +
          `transformers would build a ${modelType} network and other tools a ${archType} one. Fix config.json so both name the same family.`,
        { modelType, architectures: archs, architectureModelType: archType },
      );
    }
  }
}

/** Parses config.json (text or parsed object); refuses architectures outside the Llama layout. */
export function parseLlamaConfig(json: string | unknown): LlamaConfig {
  let raw: unknown = json;
  if (typeof json === 'string') {
    try {
      raw = JSON.parse(json);
    } catch (err) {
      throw bad(`not JSON (${(err as Error).message})`);
    }
  }
  if (!isRecord(raw)) throw bad('not a JSON object');
  checkModelType(raw);
  const archs = raw.architectures;
  const arch = Array.isArray(archs) && typeof archs[0] === 'string' ? archs[0] : undefined;
  if (!arch || !(SUPPORTED_ARCHITECTURES as readonly string[]).includes(arch)) {
    throw new AppError(
      'MODEL_UNSUPPORTED',
      `Architecture ${arch ?? '(none)'} is not supported by the training engine; use one of ${SUPPORTED_ARCHITECTURES.join(', ')}.`,
      { architecture: arch ?? null },
    );
  }
  const hiddenSize = posInt(raw, 'hidden_size');
  const numHeads = posInt(raw, 'num_attention_heads');
  const numKvHeads = posInt(raw, 'num_key_value_heads', numHeads);
  const headDim = posInt(raw, 'head_dim', Math.floor(hiddenSize / numHeads));
  if (numHeads % numKvHeads !== 0) throw bad(`num_attention_heads ${numHeads} is not a multiple of num_key_value_heads ${numKvHeads}`);
  if (headDim % 2 !== 0) throw bad(`head_dim ${headDim} must be even for rotary embeddings`);
  const rope = raw.rope_scaling;
  if (isRecord(rope) && rope.rope_type !== undefined && rope.rope_type !== 'default') {
    throw new AppError('MODEL_UNSUPPORTED', `rope_scaling type ${String(rope.rope_type)} is not supported; use a model with plain RoPE.`);
  }
  const eos = raw.eos_token_id;
  const eosTokenIds = Array.isArray(eos) ? eos.map((e, i) => optId(e, `eos_token_id[${i}]`) as number) : eos == null ? [] : [optId(eos, 'eos_token_id') as number];
  return {
    architecture: arch as LlamaArchitecture,
    modelType: typeof raw.model_type === 'string' ? raw.model_type : (modelTypeOfArchitecture(arch) ?? 'llama'),
    vocabSize: posInt(raw, 'vocab_size'),
    hiddenSize,
    intermediateSize: posInt(raw, 'intermediate_size'),
    numLayers: posInt(raw, 'num_hidden_layers'),
    numHeads,
    numKvHeads,
    headDim,
    rmsNormEps: posNum(raw, 'rms_norm_eps', 1e-6),
    ropeTheta: posNum(raw, 'rope_theta', 10000),
    maxPositions: posInt(raw, 'max_position_embeddings', 2048),
    tieWordEmbeddings: raw.tie_word_embeddings === true,
    attentionBias: arch === 'Qwen2ForCausalLM' || raw.attention_bias === true,
    bosTokenId: optId(raw.bos_token_id, 'bos_token_id'),
    eosTokenIds,
    padTokenId: optId(raw.pad_token_id, 'pad_token_id'),
  };
}

/** A stable hash of the fields that define the network's shape and numerics. */
export function configFingerprint(config: LlamaConfig): string {
  const fields = [
    config.architecture,
    config.vocabSize,
    config.hiddenSize,
    config.intermediateSize,
    config.numLayers,
    config.numHeads,
    config.numKvHeads,
    config.headDim,
    config.rmsNormEps,
    config.ropeTheta,
    config.tieWordEmbeddings,
    config.attentionBias,
  ];
  return sha256Hex(JSON.stringify(fields));
}

export type AttentionProj = 'q_proj' | 'k_proj' | 'v_proj' | 'o_proj';
export type MlpProj = 'gate_proj' | 'up_proj' | 'down_proj';
export type LinearModule = AttentionProj | MlpProj;
export const LINEAR_MODULES: readonly LinearModule[] = ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'];

export interface LayerWeightNames {
  inputNorm: string;
  postAttentionNorm: string;
  q: string;
  k: string;
  v: string;
  o: string;
  /** Present only when `attentionBias`. */
  qBias?: string;
  kBias?: string;
  vBias?: string;
  gate: string;
  up: string;
  down: string;
}

export interface LlamaWeightNames {
  embed: string;
  layers: LayerWeightNames[];
  finalNorm: string;
  /** Absent when the output projection is tied to the embedding. */
  lmHead?: string;
}

export function linearWeightName(layer: number, module: LinearModule): string {
  const part = module === 'gate_proj' || module === 'up_proj' || module === 'down_proj' ? 'mlp' : 'self_attn';
  return `model.layers.${layer}.${part}.${module}.weight`;
}

export function llamaWeightNames(config: LlamaConfig): LlamaWeightNames {
  const layers: LayerWeightNames[] = [];
  for (let i = 0; i < config.numLayers; i++) {
    const p = `model.layers.${i}`;
    const l: LayerWeightNames = {
      inputNorm: `${p}.input_layernorm.weight`,
      postAttentionNorm: `${p}.post_attention_layernorm.weight`,
      q: `${p}.self_attn.q_proj.weight`,
      k: `${p}.self_attn.k_proj.weight`,
      v: `${p}.self_attn.v_proj.weight`,
      o: `${p}.self_attn.o_proj.weight`,
      gate: `${p}.mlp.gate_proj.weight`,
      up: `${p}.mlp.up_proj.weight`,
      down: `${p}.mlp.down_proj.weight`,
    };
    if (config.attentionBias) {
      l.qBias = `${p}.self_attn.q_proj.bias`;
      l.kBias = `${p}.self_attn.k_proj.bias`;
      l.vBias = `${p}.self_attn.v_proj.bias`;
    }
    layers.push(l);
  }
  const names: LlamaWeightNames = { embed: 'model.embed_tokens.weight', layers, finalNorm: 'model.norm.weight' };
  if (!config.tieWordEmbeddings) names.lmHead = 'lm_head.weight';
  return names;
}

/** [in, out] sizes of a linear module: the weight is stored [out, in]. */
export function linearShape(config: LlamaConfig, module: LinearModule): { in: number; out: number } {
  const q = config.numHeads * config.headDim;
  const kv = config.numKvHeads * config.headDim;
  switch (module) {
    case 'q_proj':
      return { in: config.hiddenSize, out: q };
    case 'k_proj':
    case 'v_proj':
      return { in: config.hiddenSize, out: kv };
    case 'o_proj':
      return { in: q, out: config.hiddenSize };
    case 'gate_proj':
    case 'up_proj':
      return { in: config.hiddenSize, out: config.intermediateSize };
    case 'down_proj':
      return { in: config.intermediateSize, out: config.hiddenSize };
    default: {
      const never: never = module;
      throw new AppError('INTERNAL', `Unknown module ${String(never)}`);
    }
  }
}

/** Every tensor name the config implies, with its expected shape. */
export function llamaWeightShapes(config: LlamaConfig): Map<string, number[]> {
  const names = llamaWeightNames(config);
  const H = config.hiddenSize;
  const shapes = new Map<string, number[]>();
  shapes.set(names.embed, [config.vocabSize, H]);
  for (const [i, l] of names.layers.entries()) {
    shapes.set(l.inputNorm, [H]);
    shapes.set(l.postAttentionNorm, [H]);
    for (const m of LINEAR_MODULES) {
      const s = linearShape(config, m);
      shapes.set(linearWeightName(i, m), [s.out, s.in]);
    }
    if (l.qBias && l.kBias && l.vBias) {
      shapes.set(l.qBias, [config.numHeads * config.headDim]);
      shapes.set(l.kBias, [config.numKvHeads * config.headDim]);
      shapes.set(l.vBias, [config.numKvHeads * config.headDim]);
    }
  }
  shapes.set(names.finalNorm, [H]);
  if (names.lmHead) shapes.set(names.lmHead, [config.vocabSize, H]);
  return shapes;
}

export interface WeightTensor {
  shape: number[];
  data: Float32Array;
}

/** Name → weight as float32 (row-major, HF layout). */
export type LlamaWeights = Map<string, WeightTensor>;

/**
 * Reads every weight the config needs from one file or the shards of a sharded
 * checkpoint, checking each shape (SHAPE_MISMATCH) and presence (MODEL_FILE_MISSING).
 */
export function loadLlamaWeights(files: SafetensorsFile | readonly SafetensorsFile[], config: LlamaConfig): LlamaWeights {
  const shards: readonly SafetensorsFile[] = Array.isArray(files) ? files : [files as SafetensorsFile];
  const out: LlamaWeights = new Map();
  for (const [name, shape] of llamaWeightShapes(config)) {
    const file = shards.find((f) => f.tensors.has(name));
    const t = file?.tensors.get(name);
    if (!file || !t) throw new AppError('MODEL_FILE_MISSING', `The weights have no tensor ${name}; the checkpoint does not match config.json.`, { tensor: name });
    if (t.shape.length !== shape.length || t.shape.some((d, i) => d !== shape[i])) {
      throw new AppError('SHAPE_MISMATCH', `Tensor ${name} is [${t.shape.join(', ')}] but config.json implies [${shape.join(', ')}].`, {
        tensor: name,
        actual: t.shape,
        expected: shape,
      });
    }
    out.set(name, { shape: shape.slice(), data: tensorAsFloat32(file, name) });
  }
  return out;
}
