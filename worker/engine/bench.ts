/**
 * Micro-benchmarks for the bench harness (`npm run bench -- training`): LoRA training steps and
 * KV-cached generation on a random model of any Llama config. They measure; they assert nothing.
 * benchMatmul (GFLOP/s per tile config) lives in matmul.ts.
 */
import type { Batch, LlamaConfig } from '../model';
import { GpuContext } from './context';
import { LlamaModel } from './llama';
import { GpuLoraAdapter, LoraTrainer } from './lora';
import { randomLlamaWeights, tinyLlamaConfig } from './random-weights';

export interface TrainingBenchOptions {
  config?: LlamaConfig;
  batchSize?: number;
  seqLen?: number;
  steps?: number;
  rank?: number;
}

export interface TrainingBenchResult {
  config: string;
  batchSize: number;
  seqLen: number;
  steps: number;
  msPerStep: number;
  tokensPerSecond: number;
  firstLoss: number;
  lastLoss: number;
}

/** Times full LoRA training steps (forward, backward, AdamW) after one warm-up step. */
export async function benchTraining(ctx: GpuContext, opts: TrainingBenchOptions = {}): Promise<TrainingBenchResult> {
  const config = opts.config ?? tinyLlamaConfig({ vocabSize: 256, hiddenSize: 64, intermediateSize: 128, numLayers: 2, numHeads: 4, numKvHeads: 2, headDim: 16, maxPositions: 256 });
  const B = opts.batchSize ?? 2;
  const T = opts.seqLen ?? 32;
  const steps = opts.steps ?? 5;
  const model = await LlamaModel.load(ctx, config, randomLlamaWeights(config, 1));
  const adapter = GpuLoraAdapter.create(ctx, config, { rank: opts.rank ?? 8, alpha: 2 * (opts.rank ?? 8), seed: 1 });
  try {
    const trainer = new LoraTrainer(model, adapter, { lr: 1e-3 });
    const ids = Int32Array.from({ length: B * (T + 1) }, (_, i) => (i * 7919) % config.vocabSize);
    const batch: Batch = {
      rows: B,
      seqLen: T,
      inputIds: Int32Array.from({ length: B * T }, (_, i) => ids[i + Math.floor(i / T)]!),
      targets: Int32Array.from({ length: B * T }, (_, i) => ids[i + Math.floor(i / T) + 1]!),
      lossMask: new Float32Array(B * T).fill(1),
    };
    const first = await trainer.step(batch);
    let last = first;
    const t0 = performance.now();
    for (let i = 0; i < steps; i++) last = await trainer.step(batch);
    const ms = (performance.now() - t0) / steps;
    return {
      config: `L${config.numLayers} H${config.hiddenSize} V${config.vocabSize}`,
      batchSize: B,
      seqLen: T,
      steps,
      msPerStep: ms,
      tokensPerSecond: (B * T) / (ms / 1000),
      firstLoss: first.loss,
      lastLoss: last.loss,
    };
  } finally {
    adapter.release();
    model.release();
  }
}

/** Greedy decoding speed with the KV cache: prompt of promptLen tokens, then newTokens. */
export async function benchGeneration(ctx: GpuContext, opts: { config?: LlamaConfig; promptLen?: number; newTokens?: number } = {}): Promise<{ tokensPerSecond: number; msPerToken: number }> {
  const config = opts.config ?? tinyLlamaConfig({ vocabSize: 256, hiddenSize: 64, intermediateSize: 128, headDim: 16, maxPositions: 256, eosTokenIds: [] });
  const model = await LlamaModel.load(ctx, config, randomLlamaWeights(config, 1));
  try {
    const prompt = Array.from({ length: opts.promptLen ?? 16 }, (_, i) => (i * 31) % config.vocabSize);
    const n = opts.newTokens ?? 16;
    await model.generate(prompt, { maxNewTokens: 2, stopTokens: [] });
    const t0 = performance.now();
    const out = await model.generate(prompt, { maxNewTokens: n, stopTokens: [] });
    const ms = (performance.now() - t0) / out.length;
    return { tokensPerSecond: 1000 / ms, msPerToken: ms };
  } finally {
    model.release();
  }
}
