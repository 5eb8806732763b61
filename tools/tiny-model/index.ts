/** The tiny-model generator, its built-in models, and the CPU reference it is checked against (worker/engine's). */
export {
  buildTinyModel,
  DEFAULT_TINY_SIZES,
  INIT_STD,
  SPECIAL_TOKENS,
  TINY_ARCHS,
  PAD_ID,
  BOS_ID,
  EOS_ID,
  IM_START_ID,
  IM_END_ID,
} from './generate';
export type { GemmaTinyConfig, TinyArch, TinyConfig, TinyModel, TinyModelOptions, TinySizes } from './generate';
export { makeTinyModel, manifestOf, currentManifest, specOf, GENERATOR_VERSION, type GeneratedManifest, type GeneratorSpec } from './make';
export { BUILTIN_MODELS, LARGE_LLAMA_SIZES, makeBuiltinModels, type BuiltinModel, type BuiltinWritten } from './builtin';
export {
  referenceForward,
  referenceGreedy,
  emptyKvCache,
  type KvCache,
  type ForwardInput,
  type ForwardOutput,
  type ReferenceConfig,
  type RefLora,
} from '../../worker/engine/reference';
export { buildDecoderOnnx, MASKED_SCORE } from '../../worker/model/onnx-llama';
export { encodeModel, type OnnxModel } from '../../worker/model/onnx-proto';
export { trainBpe, tokenizerJson, bytesToUnicode } from './bpe';
