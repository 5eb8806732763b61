/**
 * Text generation on a node: the contract (BatchDecoder → Batcher → InferenceRuntime), the
 * in-thread runtime and its comlink worker, and the backends.
 */
export type {
  AdapterHost,
  BatchDecoder,
  CachedModelInfo,
  DecodeEntry,
  GenerateRunOutcome,
  GenerateRunRequest,
  GenerationProgress,
  GenerationRequest,
  InferenceEvent,
  InferenceRuntime,
  InferenceRuntimeStats,
  PrefillEntry,
} from './types';
export { InferenceService, type InferenceServiceOptions, type InferenceBackend, type LoadRequest, type ModelSource, type ModelFiles } from './service';
export { engineBackend, transformersBackend, type EngineBackendOptions, type TransformersBackendOptions } from './backends';
export { weightStoreSource } from './sources';
export { TRAIN_DEFAULTS, trainOnEngine, type TrainProgress, type TrainRunOutcome, type TrainRunRequest, type TrainRunResult } from './train';
export { exposeInference, reportInferenceFailure, RemoteInference, type InferenceWorkerApi } from './worker-api';
export type { InferenceWorkerConfig } from './inference-worker';
