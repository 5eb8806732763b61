/**
 * A BatchDecoder on the CPU over the project's float64 reference decoder (worker/engine/reference,
 * imported directly: the engine's index does not offer it, and tools/tiny-model's pulls in node:fs):
 * one KV cache per slot, each sequence run on its own, so a row's logits never depend on what
 * shares the step. Slow on purpose; for tests and small models in Node.
 */
import { AppError, type InferenceBackendKind, type InferenceDevice } from '../../shared';
import { emptyKvCache, referenceForward, type KvCache, type ReferenceConfig } from '../engine/reference';
import type { LlamaWeights, LoraAdapter } from '../model';
import type { BatchDecoder, DecodeEntry, PrefillEntry } from './types';

export interface ReferenceDecoderOptions {
  maxSlots: number;
  /** Positions per slot; default (and at most) the model's context. */
  maxPositions?: number;
  /** LoRA adapters the entries may name. */
  adapters?: ReadonlyMap<string, LoraAdapter>;
  /** What it reports itself as (it stands in for a backend in runtime tests). */
  backend?: InferenceBackendKind;
  device?: InferenceDevice;
}

export class ReferenceDecoder implements BatchDecoder {
  readonly backend: InferenceBackendKind;
  readonly device: InferenceDevice;
  readonly vocabSize: number;
  readonly maxSlots: number;
  readonly maxPositions: number;
  readonly memoryBytes: number;
  readonly #config: ReferenceConfig;
  readonly #weights: LlamaWeights;
  readonly #adapters: ReadonlyMap<string, LoraAdapter>;
  readonly #caches = new Map<number, KvCache>();
  #released = false;

  constructor(config: ReferenceConfig & { maxPositions: number }, weights: LlamaWeights, options: ReferenceDecoderOptions) {
    if (!(Number.isInteger(options.maxSlots) && options.maxSlots >= 1)) throw new AppError('INTERNAL', `maxSlots must be a positive integer (got ${options.maxSlots})`);
    this.#config = config;
    this.#weights = weights;
    this.#adapters = options.adapters ?? new Map();
    this.backend = options.backend ?? 'engine';
    this.device = options.device ?? 'wasm';
    this.vocabSize = config.vocabSize;
    this.maxSlots = options.maxSlots;
    this.maxPositions = Math.min(options.maxPositions ?? config.maxPositions, config.maxPositions);
    let weightBytes = 0;
    for (const w of weights.values()) weightBytes += w.data.byteLength;
    const kvBytes = 2 * config.numLayers * config.numKvHeads * config.headDim * this.maxPositions * 4 * this.maxSlots;
    this.memoryBytes = weightBytes + kvBytes;
  }

  async prefill(entries: readonly PrefillEntry[]): Promise<Float32Array[]> {
    this.#check();
    const rows: Float32Array[] = [];
    for (const e of entries) {
      this.#checkSlot(e.slot);
      if (e.tokens.length === 0) throw new AppError('INFERENCE_FAILED', `Slot ${e.slot}: an empty prompt cannot be prefilled.`);
      if (e.tokens.length > this.maxPositions) throw new AppError('PROMPT_TOO_LONG', `Slot ${e.slot}: ${e.tokens.length} tokens exceed ${this.maxPositions} positions.`);
      this.#caches.delete(e.slot);
      const out = referenceForward(this.#config, this.#weights, { inputIds: [Array.from(e.tokens)], past: emptyKvCache(this.#config, 1), lora: this.#adapter(e.adapter) });
      this.#caches.set(e.slot, out.present);
      const V = this.vocabSize;
      rows.push(Float32Array.from(out.logits.subarray((out.seqLen - 1) * V, out.seqLen * V)));
    }
    return rows;
  }

  async decode(entries: readonly DecodeEntry[]): Promise<Float32Array[]> {
    this.#check();
    const rows: Float32Array[] = [];
    for (const e of entries) {
      this.#checkSlot(e.slot);
      const past = this.#caches.get(e.slot);
      if (!past) throw new AppError('INFERENCE_FAILED', `Slot ${e.slot} holds no sequence; prefill it first.`);
      if (past.length >= this.maxPositions) throw new AppError('PROMPT_TOO_LONG', `Slot ${e.slot} is full (${this.maxPositions} positions).`);
      const out = referenceForward(this.#config, this.#weights, { inputIds: [[e.token]], past, lora: this.#adapter(e.adapter) });
      this.#caches.set(e.slot, out.present);
      rows.push(Float32Array.from(out.logits));
    }
    return rows;
  }

  free(slot: number): void {
    this.#caches.delete(slot);
  }

  async release(): Promise<void> {
    this.#released = true;
    this.#caches.clear();
  }

  #check(): void {
    if (this.#released) throw new AppError('INFERENCE_FAILED', 'The decoder was released.');
  }

  #checkSlot(slot: number): void {
    if (!(Number.isInteger(slot) && slot >= 0 && slot < this.maxSlots)) throw new AppError('INFERENCE_FAILED', `Slot ${slot} is outside 0..${this.maxSlots - 1}.`);
  }

  #adapter(name: string | null): LoraAdapter | undefined {
    if (name === null) return undefined;
    const a = this.#adapters.get(name);
    if (!a) throw new AppError('ADAPTER_NOT_FOUND', `No adapter "${name}" is loaded for this model.`, { adapter: name });
    return a;
  }
}
