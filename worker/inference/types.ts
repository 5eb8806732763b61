/**
 * The contract of text generation on a node, in three layers:
 *
 *  - `BatchDecoder`: one loaded model on one backend (our WebGPU engine, or transformers.js on
 *    onnxruntime-web / onnxruntime-node), holding up to `maxSlots` sequences, each with its own KV
 *    cache slot. It only turns tokens into next-token logits; it knows nothing of sampling.
 *  - `Batcher` (continuous batching, one per loaded model): admits requests into free slots at the
 *    next step, runs one `decode` for every active sequence per step, samples each row with its own
 *    parameters and seed, applies stop tokens / stop strings / constraints, streams, and frees the
 *    slot when a sequence ends.
 *  - `InferenceRuntime`: the node's door (in-thread for tests, behind a comlink worker in the page):
 *    weight store → backend choice → batcher, per model, with a GPU memory budget.
 */
import type { TrainProgress, TrainRunOutcome, TrainRunRequest } from './train';
import type { ErrorInfo, GenerateResult, InferenceBackendKind, InferenceDevice, ModelCapability, ResponseFormat, TokenLogprob } from '../../shared';

/** One row of a prefill: a sequence's prompt written into its slot from position 0. */
export interface PrefillEntry {
  slot: number;
  tokens: Uint32Array;
  /** LoRA adapter name (engine only), or null for the base model. */
  adapter: string | null;
}

/** One row of a decode step: the token appended at the slot's next position. */
export interface DecodeEntry {
  slot: number;
  token: number;
  adapter: string | null;
}

/**
 * One model loaded on one backend, with a KV cache of `maxSlots` sequences. Calls are serialised by
 * the caller (the Batcher): never two at once.
 */
export interface BatchDecoder {
  readonly backend: InferenceBackendKind;
  readonly device: InferenceDevice;
  readonly vocabSize: number;
  /** Sequences held at once. */
  readonly maxSlots: number;
  /** Positions per sequence (prompt plus generated); the model's context or less. */
  readonly maxPositions: number;
  /** Bytes of device memory the weights and the KV cache take (for the node's budget). */
  readonly memoryBytes: number;
  /** Resets each entry's slot and runs its prompt; returns the logits of each prompt's last position. */
  prefill(entries: readonly PrefillEntry[]): Promise<Float32Array[]>;
  /** One step for every entry (each at its own position); returns one row of logits per entry. */
  decode(entries: readonly DecodeEntry[]): Promise<Float32Array[]>;
  /** The sequence in this slot ended; the slot may be reused. */
  free(slot: number): void;
  /** Frees the weights and the cache. */
  release(): Promise<void>;
  /** LoRA adapters switched per request (the engine); absent where the backend has none. */
  readonly adapters?: AdapterHost;
}

/** Adapters a decoder holds, by name; rows of one step may each name a different one. */
export interface AdapterHost {
  has(name: string): boolean;
  /** The adapters loaded now (what the node advertises, so the router sends their requests here). */
  names(): string[];
  /** Loads a PEFT adapter (adapter_config.json + adapter_model.safetensors) for this decoder's base (ADAPTER_MISMATCH otherwise). */
  load(name: string, files: { configJson: string; safetensors: Uint8Array }): Promise<void>;
  remove(name: string): void;
}

/** What a generation asks for, after the prompt has been tokenized. */
export interface GenerationRequest {
  id: string;
  promptIds: readonly number[];
  maxNewTokens: number;
  /** 0 or absent: greedy. */
  temperature?: number;
  topK?: number;
  topP?: number;
  /** The same seed (and the same request) gives the same tokens, whatever else shares the batch. */
  seed?: number;
  /** Token ids that end the sequence (EOS); included in `tokens`, not in the text. */
  stopTokenIds: readonly number[];
  /** Strings that end the text; cut from the text. */
  stopStrings?: readonly string[];
  /** Alternatives per token to report (0: the chosen one only); absent: no logprobs. */
  logprobs?: number;
  responseFormat?: ResponseFormat;
  adapter?: string | null;
  signal?: AbortSignal;
  onProgress?: (p: GenerationProgress) => void;
}

/** Streamed while generating: the text and ids added since the last call. */
export interface GenerationProgress {
  text: string;
  ids: number[];
  /** Tokens generated so far. */
  tokens: number;
  logprobs?: TokenLogprob[];
}

/** A task's `generate` request as the node's lease runner hands it to the runtime. */
export interface GenerateRunRequest {
  taskId: string;
  model: string;
  adapter?: string;
  prompt?: string;
  messages?: { role: 'system' | 'user' | 'assistant'; content: string }[];
  maxNewTokens?: number;
  temperature?: number;
  topK?: number;
  topP?: number;
  seed?: number;
  stop?: string[];
  logprobs?: number;
  responseFormat?: ResponseFormat;
  /** Epoch ms after which the run stops with DEADLINE_EXCEEDED. */
  deadline?: number | null;
}

export type GenerateRunOutcome = { ok: true; result: GenerateResult } | { ok: false; error: ErrorInfo };

export interface InferenceRuntimeStats {
  /** Sequences decoding now, over all models. */
  active: number;
  /** Requests waiting for a slot. */
  waiting: number;
  maxSequences: number;
  tokensGenerated: number;
  /** Decode speed over the last few seconds, all sequences together. */
  tokensPerSec: number;
  gpuMemoryBytes: number;
  gpuBudgetBytes: number;
}

/** Events for the page: downloads, loads and unloads, throughput. */
export type InferenceEvent =
  | { type: 'download'; model: string; loadedBytes: number; totalBytes: number }
  /** `ms`: the whole load; `filesMs`: of it, making the files available (download and verify, or the store's check). */
  | { type: 'load'; model: string; backend: InferenceBackendKind; device: InferenceDevice; ms: number; filesMs: number }
  | { type: 'unload'; model: string; reason: string }
  /** An adapter of `model` was loaded onto its decoder. */
  | { type: 'adapter'; model: string; adapter: string }
  | { type: 'tokens'; model: string; tokens: number; at: number };

/** A model in the node's weight store, as the page lists it. */
export interface CachedModelInfo {
  name: string;
  /** Bytes stored. */
  bytes: number;
  /** The manifest's total, when known. */
  totalBytes: number | null;
  /** Every file stored and matching its SHA-256. */
  verified: boolean;
  complete: boolean;
  lastUsed: number;
}

export interface InferenceRuntime {
  /** Runs one generation; never throws: failures come back as `{ ok: false }` with a code. */
  generate(req: GenerateRunRequest, onProgress?: (p: GenerationProgress) => void): Promise<GenerateRunOutcome>;
  /** Stops a running generation (it ends CANCELLED and frees its slot). */
  cancel(taskId: string, reason?: string): boolean;
  /** What the node advertises: models held and loaded, their backend and device. */
  models(): Promise<ModelCapability[]>;
  /** The weight store's models (size, digest state, last use). */
  cached(): Promise<CachedModelInfo[]>;
  stats(): InferenceRuntimeStats;
  on(listener: (e: InferenceEvent) => void): () => void;
  close(): Promise<void>;
  /** Whether this runtime runs `train` tasks (an engine on WebGPU). */
  readonly trains?: boolean;
  /** Runs one `train` task; never throws (failures are `{ ok: false }` with a code). Cancelled with cancel(taskId). */
  train?(req: TrainRunRequest, onProgress?: (p: TrainProgress) => void): Promise<TrainRunOutcome>;
}
