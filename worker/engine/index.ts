/**
 * The WebGPU engine: WGSL kernels (fp32) with backward passes, a Llama-family model with
 * KV-cached generation, and LoRA training. Browser and Node alike; Node acquires its GPU through
 * `worker/engine/node-gpu.ts` (createNodeGpuContext), which only Node code imports.
 *
 *   const ctx = await GpuContext.create();                  // navigator.gpu in a browser
 *   const model = await LlamaModel.load(ctx, config, weights); // worker/model's parseLlamaConfig + loadLlamaWeights
 *   const adapter = GpuLoraAdapter.create(ctx, config, { rank: 8, alpha: 16, dropout: 0.05, seed: 1 });
 *   const trainer = new LoraTrainer(model, adapter, { lr: 1e-3, accumulationSteps: 4, maxGradNorm: 1 });
 *   for (const batch of makeBatches(...)) await trainer.step(batch);  // { loss, tokens, updated, step, gradNorm? }
 *   saveAdapter({ settings: adapter.settings, baseModel, baseFingerprint, weights: await adapter.toPairs() }, config);
 *   await model.generate(promptIds, { maxNewTokens: 64, temperature: 0.7, topP: 0.9, seed: 1 });
 *   const dec = await EngineDecoder.create(model, { maxSlots: 8 });   // continuous batching (BatchDecoder)
 */
export { GpuContext, Tensor, MATMUL_CONFIGS, type DType, type GpuContextOptions, type GpuInfo, type MatmulConfig } from './context';
export { matmul, benchMatmul, autotuneMatmul, matmulShader, type MatmulOptions } from './matmul';
export {
  axpby,
  add,
  accumulate,
  scaleInPlace,
  addBias,
  rmsNorm,
  rmsNormBackward,
  rmsNormWeightGrad,
  rope,
  ropeTable,
  attnScores,
  softmax,
  softmaxBackward,
  attnApply,
  attnApplyT,
  attention,
  attentionBackward,
  kvWrite,
  siluMul,
  siluMulBackward,
  embedding,
  embeddingBackward,
  crossEntropy,
  crossEntropyBackward,
  adamw,
  gradClipFactor,
  dropout,
  sumSquares,
  type AdamWOptions,
  type AttnShape,
  type RopeTables,
} from './kernels';
export { ropeRows, kvWriteRows, attentionRows, type SlotRows, type SlotShape } from './slot-kernels';
export { AdapterPack, NO_ADAPTER } from './adapter-pack';
export type { AdaptableModel, AdapterActivations, LinearAdapter, LowRankFactors } from './adapter-types';
export { LlamaModel, sampleToken, type GenerateOptions, type LoadOptions, type RowBatch, type SlotCache, type TokenRows } from './llama';
export { EngineDecoder, type EngineDecoderOptions } from './decoder';
export { GpuLoraAdapter, LoraTrainer, LoraSaved, type LoraOptimizerState, type LoraOptions, type LoraParamState, type TrainerOptions, type TrainStepResult } from './lora';
export { benchGeneration, benchEngineBatch, type EngineBatchBenchOptions, type EngineBatchBenchResult } from './bench';
export { randomLlamaWeights, randomLoraPairs, tinyLlamaConfig } from './random-weights';
