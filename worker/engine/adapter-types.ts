/**
 * What a Llama model and a low-rank adapter need from each other, so that llama.ts and lora.ts do
 * not import each other: the model calls a `LinearAdapter` on its linear layers; the trainer drives
 * an `AdaptableModel`. GpuLoraAdapter (lora.ts) and LlamaModel (llama.ts) implement them.
 */
import type { Batch, LinearModule, LlamaConfig } from '../model';
import type { GpuContext, Tensor } from './context';

/** What an adapted linear keeps from its forward for the backward. */
export interface AdapterActivations {
  release(): void;
}

/** A low-rank delta on some of a model's linear layers. */
export interface LinearAdapter {
  /** GPU_DEVICE_LOST when made on an older device; ADAPTER_MISMATCH when made for another shape. */
  checkCompatible(config: LlamaConfig): void;
  has(layer: number, module: LinearModule): boolean;
  /** Adds the delta of x into y [rows, out]; in training returns what the backward needs. */
  forward(ctx: GpuContext, layer: number, module: LinearModule, x: Tensor, y: Tensor, train: boolean): AdapterActivations | null;
  /** Accumulates the adapter's weight gradients and adds its share of dx. */
  backward(ctx: GpuContext, layer: number, module: LinearModule, dy: Tensor, saved: AdapterActivations, dx: Tensor): void;
  /** The factors on one projection (null: not adapted there), for batched inference over packed adapters (adapter-pack.ts). */
  lowRank(layer: number, module: LinearModule): LowRankFactors | null;
  /** Changes whenever the factors' values change (an optimizer step, an imported state): packs of older values are stale. */
  readonly weightsVersion: number;
}

/** One projection's low-rank delta: scaling · B · A, A [rank, in] and B [out, rank] row-major. */
export interface LowRankFactors {
  a: Tensor;
  b: Tensor;
  rank: number;
  scaling: number;
}

/** A model that a LoRA trainer can attach an adapter to and step. */
export interface AdaptableModel {
  readonly adapter: LinearAdapter | null;
  setAdapter(adapter: LinearAdapter | null): void;
  lossAndGrad(batch: Batch, gradScale?: number, afterBackward?: () => Tensor | null): Promise<{ loss: number; tokens: number; extra?: Float32Array }>;
}
