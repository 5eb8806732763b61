/**
 * The WebGPU engine: WGSL kernels (fp32) with backward passes, a Llama-family model with
 * KV-cached generation, and LoRA training. Browser and Node alike; Node acquires its GPU through
 * node-gpu.ts (not exported here, so this folder stays free of node: imports).
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
  dropout,
  sumSquares,
  type AdamWOptions,
  type AttnShape,
  type RopeTables,
} from './kernels';
export { LlamaModel, sampleToken, type GenerateOptions, type LoadOptions, type TokenRows } from './llama';
export { GpuLoraAdapter, LoraTrainer, LoraSaved, type LoraOptions, type TrainerOptions, type TrainStepResult } from './lora';
export { benchTraining, benchGeneration, type TrainingBenchOptions, type TrainingBenchResult } from './bench';
export { randomLlamaWeights, tinyLlamaConfig } from './random-weights';
