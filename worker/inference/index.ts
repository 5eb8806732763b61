/**
 * Text generation on a node: the contract (BatchDecoder → Batcher → InferenceRuntime), the
 * in-thread runtime and its comlink worker, and the backends.
 */
export type {
  BatchDecoder,
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
