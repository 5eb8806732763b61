/** The tiny-model generator and the reference Llama forward it is checked against. */
export { buildTinyModel, DEFAULT_TINY_SIZES, INIT_STD, SPECIAL_TOKENS, PAD_ID, BOS_ID, EOS_ID, IM_START_ID, IM_END_ID } from './generate';
export type { TinyModel, TinyModelOptions, TinySizes } from './generate';
export { makeTinyModel, manifestOf } from './make';
export { referenceForward, emptyKvCache, type KvCache, type ForwardInput, type ForwardOutput } from './reference';
export { buildLlamaOnnx, MASKED_SCORE } from './onnx-llama';
export { encodeModel, type OnnxModel } from './onnx-proto';
export { trainBpe, tokenizerJson, bytesToUnicode } from './bpe';
