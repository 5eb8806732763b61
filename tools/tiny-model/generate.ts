/**
 * A tiny model (Llama, Qwen2 or Gemma), built in memory from a seed: config, tokenizer,
 * weights in safetensors and the same weights in an fp32 ONNX decoder. Pure (no file
 * access), so the same bytes come out in Node and in a browser.
 */
import {
  CHATML_TEMPLATE,
  llamaWeightShapes,
  mulberry32,
  parseLlamaConfig,
  writeSafetensors,
  type LlamaConfig,
  type LlamaWeights,
} from '../../worker/model';
import { trainBpe, tokenizerJson } from './bpe';
import { CORPUS } from './corpus';
import { buildDecoderOnnx } from '../../worker/model/onnx-llama';
import type { ReferenceConfig } from '../../worker/engine/reference';
import { encodeModel } from '../../worker/model/onnx-proto';

/** The shape of a tiny model: the size fields of a LlamaConfig. */
export type TinySizes = Pick<
  LlamaConfig,
  'vocabSize' | 'hiddenSize' | 'intermediateSize' | 'numLayers' | 'numHeads' | 'numKvHeads' | 'headDim' | 'maxPositions'
>;

export const DEFAULT_TINY_SIZES: TinySizes = {
  vocabSize: 384,
  hiddenSize: 64,
  intermediateSize: 128,
  numLayers: 2,
  numHeads: 4,
  numKvHeads: 2,
  headDim: 16,
  maxPositions: 256,
};

/** Std of the normal init; norm weights are 1 + this · N(0, 1). Large enough that attention is not uniform. */
export const INIT_STD = 0.08;

export const SPECIAL_TOKENS = ['<pad>', '<s>', '</s>', '<|im_start|>', '<|im_end|>'] as const;
export const PAD_ID = 0;
export const BOS_ID = 1;
export const EOS_ID = 2;
export const IM_START_ID = 3;
export const IM_END_ID = 4;

/** The architectures the generator writes: two the engine runs (Llama, Qwen2) and Gemma, which only transformers.js runs. */
export const TINY_ARCHS = ['llama', 'qwen2', 'gemma'] as const;
export type TinyArch = (typeof TINY_ARCHS)[number];

export interface TinyModelOptions {
  seed: number;
  arch?: TinyArch;
  sizes?: Partial<TinySizes>;
}

/** A Gemma config as the reference and the ONNX builder read it: the Llama layout plus Gemma's numerics. */
export interface GemmaTinyConfig extends Omit<LlamaConfig, 'architecture'>, ReferenceConfig {
  architecture: 'GemmaForCausalLM';
  hiddenAct: 'gelu_pytorch_tanh';
  scaleEmbeddings: true;
  normUnitOffset: true;
}

export type TinyConfig = LlamaConfig | GemmaTinyConfig;

export interface TinyModel<C extends TinyConfig = TinyConfig> {
  config: C;
  weights: LlamaWeights;
  /** File name (relative to the model folder) → bytes, in the Hugging Face layout. */
  files: Map<string, Uint8Array>;
}

const json = (value: unknown): Uint8Array => new TextEncoder().encode(JSON.stringify(value, null, 2) + '\n');

/** config.json for each architecture, in the fields Hugging Face's own classes write. */
function configJsonFor(arch: TinyArch, sizes: TinySizes): Record<string, unknown> {
  const common = {
    vocab_size: sizes.vocabSize,
    hidden_size: sizes.hiddenSize,
    intermediate_size: sizes.intermediateSize,
    num_hidden_layers: sizes.numLayers,
    num_attention_heads: sizes.numHeads,
    num_key_value_heads: sizes.numKvHeads,
    head_dim: sizes.headDim,
    max_position_embeddings: sizes.maxPositions,
  };
  const tail = {
    initializer_range: INIT_STD,
    bos_token_id: BOS_ID,
    eos_token_id: IM_END_ID,
    pad_token_id: PAD_ID,
    torch_dtype: 'float32',
    use_cache: true,
    transformers_version: '4.46.0',
  };
  switch (arch) {
    case 'llama':
      return {
        architectures: ['LlamaForCausalLM'],
        model_type: 'llama',
        ...common,
        hidden_act: 'silu',
        rms_norm_eps: 1e-5,
        rope_theta: 10000,
        rope_scaling: null,
        attention_bias: false,
        attention_dropout: 0,
        mlp_bias: false,
        tie_word_embeddings: false,
        ...tail,
      };
    case 'qwen2':
      return {
        architectures: ['Qwen2ForCausalLM'],
        model_type: 'qwen2',
        ...common,
        hidden_act: 'silu',
        rms_norm_eps: 1e-6,
        rope_theta: 1000000,
        rope_scaling: null,
        attention_dropout: 0,
        use_sliding_window: false,
        sliding_window: null,
        max_window_layers: sizes.numLayers,
        tie_word_embeddings: true,
        ...tail,
      };
    case 'gemma':
      return {
        architectures: ['GemmaForCausalLM'],
        model_type: 'gemma',
        ...common,
        hidden_act: 'gelu_pytorch_tanh',
        hidden_activation: 'gelu_pytorch_tanh',
        rms_norm_eps: 1e-6,
        rope_theta: 10000,
        rope_scaling: null,
        attention_bias: false,
        attention_dropout: 0,
        tie_word_embeddings: true,
        ...tail,
      };
    default: {
      const never: never = arch;
      throw new Error(`Unknown tiny-model arch ${String(never)}`);
    }
  }
}

export function buildTinyModel(options: TinyModelOptions & { arch: 'gemma' }): TinyModel<GemmaTinyConfig>;
export function buildTinyModel(options: TinyModelOptions & { arch?: 'llama' | 'qwen2' }): TinyModel<LlamaConfig>;
export function buildTinyModel(options: TinyModelOptions): TinyModel;
export function buildTinyModel(options: TinyModelOptions): TinyModel {
  const arch = options.arch ?? 'llama';
  if (!(TINY_ARCHS as readonly string[]).includes(arch)) throw new Error(`Unknown tiny-model arch ${String(arch)}; use one of ${TINY_ARCHS.join(', ')}`);
  if (!Number.isSafeInteger(options.seed)) throw new Error(`The seed must be an integer (got ${options.seed})`);
  const sizes = { ...DEFAULT_TINY_SIZES, ...options.sizes };
  const numMerges = sizes.vocabSize - SPECIAL_TOKENS.length - 256;
  if (numMerges < 0) throw new Error(`vocabSize must be at least ${SPECIAL_TOKENS.length + 256}`);
  const bpe = trainBpe(CORPUS, numMerges);
  if (bpe.merges.length !== numMerges) throw new Error(`The corpus yields only ${bpe.merges.length} merges; lower vocabSize`);

  const configJson = configJsonFor(arch, sizes);
  // Gemma keeps the Llama tensor layout (names and shapes, tied head); only its numerics differ.
  const layout = parseLlamaConfig(arch === 'gemma' ? { ...configJson, architectures: ['LlamaForCausalLM'], model_type: 'llama' } : configJson);
  const config: TinyConfig =
    arch === 'gemma'
      ? { ...layout, architecture: 'GemmaForCausalLM', modelType: 'gemma', hiddenAct: 'gelu_pytorch_tanh', scaleEmbeddings: true, normUnitOffset: true }
      : layout;

  const rng = mulberry32(options.seed);
  const weights: LlamaWeights = new Map();
  // Gemma stores norm weights as w in (1 + w), so they sit near zero; the others near one.
  const normCentre = arch === 'gemma' ? 0 : 1;
  for (const [name, shape] of llamaWeightShapes(layout)) {
    const data = new Float32Array(shape.reduce((a, b) => a * b, 1));
    const centre = name.endsWith('norm.weight') ? normCentre : 0;
    for (let i = 0; i < data.length; i++) data[i] = centre + INIT_STD * rng.normal();
    weights.set(name, { shape, data });
  }

  const specials = SPECIAL_TOKENS.map((content, id) => ({ id, content }));
  const tokenizerConfig = {
    add_bos_token: false,
    add_eos_token: false,
    added_tokens_decoder: Object.fromEntries(
      specials.map((s) => [String(s.id), { content: s.content, lstrip: false, normalized: false, rstrip: false, single_word: false, special: true }]),
    ),
    bos_token: '<s>',
    eos_token: '<|im_end|>',
    pad_token: '<pad>',
    unk_token: null,
    chat_template: CHATML_TEMPLATE,
    clean_up_tokenization_spaces: false,
    model_max_length: sizes.maxPositions,
    tokenizer_class: 'PreTrainedTokenizerFast',
  };
  const generationConfig = {
    bos_token_id: BOS_ID,
    eos_token_id: [IM_END_ID, EOS_ID],
    pad_token_id: PAD_ID,
    do_sample: false,
    transformers_version: '4.46.0',
  };
  const tensors = [...weights.entries()].map(([name, w]) => ({ name, dtype: 'F32' as const, shape: w.shape, data: w.data }));
  const doc = `Tiny ${arch} for tests, seed ${options.seed}. Not a trained model.`;
  const files = new Map<string, Uint8Array>([
    ['config.json', json(configJson)],
    ['generation_config.json', json(generationConfig)],
    ['tokenizer.json', json(tokenizerJson(bpe, specials))],
    ['tokenizer_config.json', json(tokenizerConfig)],
    ['model.safetensors', writeSafetensors(tensors, { format: 'pt', seed: String(options.seed) })],
    ['onnx/model.onnx', encodeModel(buildDecoderOnnx(config, weights, doc))],
  ]);
  return { config, weights, files };
}
