/**
 * Training speed for the bench harness and the tests: the training loop (runLoraTraining) on a
 * random model of any Llama config and one fixed batch, timed after a warm-up step. It measures;
 * it asserts nothing.
 */
import { LlamaModel, randomLlamaWeights, tinyLlamaConfig, type GpuContext } from '../engine';
import type { Batch, LlamaConfig } from '../model';
import { runLoraTraining } from './loop';

export interface TrainingBenchOptions {
  config?: LlamaConfig;
  batchSize?: number;
  seqLen?: number;
  /** Timed steps (after one warm-up step). Default 5. */
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
  /** Loss of the warm-up step and of the last timed one. */
  firstLoss: number;
  lastLoss: number;
}

/** Times full LoRA training steps (forward, backward, AdamW) through the training loop, after one warm-up step. */
export async function benchTraining(ctx: GpuContext, opts: TrainingBenchOptions = {}): Promise<TrainingBenchResult> {
  const config = opts.config ?? tinyLlamaConfig({ vocabSize: 256, hiddenSize: 64, intermediateSize: 128, numLayers: 2, numHeads: 4, numKvHeads: 2, headDim: 16, maxPositions: 256 });
  const B = opts.batchSize ?? 2;
  const T = opts.seqLen ?? 32;
  const steps = opts.steps ?? 5;
  const rank = opts.rank ?? 8;
  const ids = Int32Array.from({ length: B * (T + 1) }, (_, i) => (i * 7919) % config.vocabSize);
  const batch: Batch = {
    rows: B,
    seqLen: T,
    inputIds: Int32Array.from({ length: B * T }, (_, i) => ids[i + Math.floor(i / T)]!),
    targets: Int32Array.from({ length: B * T }, (_, i) => ids[i + Math.floor(i / T) + 1]!),
    lossMask: new Float32Array(B * T).fill(1),
  };
  const model = await LlamaModel.load(ctx, config, randomLlamaWeights(config, 1));
  try {
    let warmSec = 0;
    let endSec = 0;
    const run = await runLoraTraining({
      model,
      data: { train: [batch] },
      lora: { rank, alpha: 2 * rank, seed: 1 },
      steps: steps + 1,
      lr: 1e-3,
      trainLoss: false,
      onStep: (s) => {
        if (s.step === 1) warmSec = s.elapsedSec;
        endSec = s.elapsedSec;
      },
    });
    const ms = ((endSec - warmSec) * 1000) / steps;
    return {
      config: `L${config.numLayers} H${config.hiddenSize} V${config.vocabSize}`,
      batchSize: B,
      seqLen: T,
      steps,
      msPerStep: ms,
      tokensPerSecond: (B * T) / (ms / 1000),
      firstLoss: run.firstStepLoss,
      lastLoss: run.lastStepLoss,
    };
  } finally {
    model.release();
  }
}
