/**
 * LoRA training on the engine, the one loop every driver runs: the finetune CLI (tools/finetune),
 * the e2e probe in Chromium, the benchmarks and `train` tasks. Browser and Node alike.
 *
 *   const run = await runLoraTraining({ model, data: { jsonl, tokenizer, seqLen: 128, batchSize: 4, evalFraction: 0.1 },
 *     lora: { rank: 8, alpha: 16, targets: ['q_proj', 'v_proj'] }, steps: 100, lr: 1e-3, signal, onStep });
 *   saveAdapter({ ...run.adapter, baseModel, baseFingerprint }, model.config);   // worker/model
 */
export {
  runLoraTraining,
  type LoraTrainingOptions,
  type LoraTrainingSummary,
  type TrainingBatches,
  type TrainingConversations,
  type TrainingStep,
  type TrainingCheckpoint,
  type TrainingResume,
  type TrainedAdapter,
} from './loop';
export { decodeCheckpoint, encodeCheckpoint, runDigest, type CheckpointRun } from './checkpoint';
export { parseConversations, type Conversation } from './dataset';
export { prepareDataset, type PrepareOptions, type PreparedDataset, type DatasetReport } from './prepare';
export { checkLoraSettings } from './lora-settings';
export { benchTraining, type TrainingBenchOptions, type TrainingBenchResult } from './bench';
export { batchCycle } from './cycle';
export { meanLoss } from './eval-loss';
