/** The transformers.js backend: a `BatchDecoder` on onnxruntime (web in the page, node in Node) with continuous batching. */
export { TransformersDecoder, loadTransformersDecoder, type TransformersDecoderOptions, type TransformersDevice } from './decoder';
export { configureTransformersEnv, transformersLib, type ModelFileCache, type TransformersEnvOptions } from './env';
export { measureDecodeThroughput, type DecodeThroughput } from './throughput';
