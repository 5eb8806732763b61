/**
 * Micro-benchmarks for the bench harness (`npm run bench -- training`, `-- inference`): KV-cached
 * generation and continuous-batching decode on a random model of any Llama config. They measure;
 * they assert nothing. benchMatmul (GFLOP/s per tile config) lives in matmul.ts; training steps
 * (benchTraining) are timed through the training loop in worker/training.
 */
import type { LlamaConfig } from '../model';
import { GpuContext } from './context';
import { EngineDecoder } from './decoder';
import { LlamaModel } from './llama';
import { randomLlamaWeights, tinyLlamaConfig } from './random-weights';

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

export interface EngineBatchBenchOptions {
  config?: LlamaConfig;
  /** Concurrent sequences of the batched run (default 8). */
  sequences?: number;
  promptLen?: number;
  /** Decode steps timed per run (default 32). */
  steps?: number;
}

export interface EngineBatchBenchResult {
  config: string;
  sequences: number;
  steps: number;
  /** Decode tokens/s with one sequence. */
  singleTokensPerSec: number;
  /** Decode tokens/s with `sequences` sequences sharing each step. */
  batchTokensPerSec: number;
  /** batch ÷ single. */
  speedup: number;
  msPerStepSingle: number;
  msPerStepBatch: number;
}

/**
 * Decode throughput of EngineDecoder: one sequence, then `sequences` sequences in one decode step
 * each (prompts prefilled first and not timed, one warm-up step each), greedy.
 */
export async function benchEngineBatch(ctx: GpuContext, opts: EngineBatchBenchOptions = {}): Promise<EngineBatchBenchResult> {
  const config = opts.config ?? tinyLlamaConfig({ vocabSize: 256, hiddenSize: 64, intermediateSize: 128, headDim: 16, maxPositions: 256, eosTokenIds: [] });
  const n = Math.max(1, opts.sequences ?? 8);
  const promptLen = Math.max(1, Math.min(opts.promptLen ?? 16, config.maxPositions - 2));
  // A sequence holds the prompt, the warm-up step's token and one per timed step.
  const steps = Math.max(1, Math.min(opts.steps ?? 32, config.maxPositions - promptLen - 1));
  const model = await LlamaModel.load(ctx, config, randomLlamaWeights(config, 1));
  const dec = await EngineDecoder.create(model, { maxSlots: n, maxPositions: promptLen + steps + 1 });
  const argmax = (x: Float32Array): number => {
    let best = 0;
    for (let i = 1; i < x.length; i++) if (x[i]! > x[best]!) best = i;
    return best;
  };
  const run = async (count: number): Promise<number> => {
    const entries = Array.from({ length: count }, (_, s) => ({ slot: s, tokens: Uint32Array.from({ length: promptLen }, (_, i) => (i * 31 + s * 7) % config.vocabSize), adapter: null }));
    let next = (await dec.prefill(entries)).map(argmax);
    const step = async (): Promise<void> => {
      next = (await dec.decode(next.map((token, slot) => ({ slot, token, adapter: null })))).map(argmax);
    };
    await step(); // warm-up
    const t0 = performance.now();
    for (let i = 0; i < steps; i++) await step();
    const ms = (performance.now() - t0) / steps;
    for (let s = 0; s < count; s++) dec.free(s);
    return ms;
  };
  try {
    const single = await run(1);
    const batch = await run(n);
    const singleTps = 1000 / single;
    const batchTps = (1000 * n) / batch;
    return {
      config: `L${config.numLayers} H${config.hiddenSize} V${config.vocabSize}`,
      sequences: n,
      steps,
      singleTokensPerSec: singleTps,
      batchTokensPerSec: batchTps,
      speedup: batchTps / singleTps,
      msPerStepSingle: single,
      msPerStepBatch: batch,
    };
  } finally {
    await dec.release();
  }
}
