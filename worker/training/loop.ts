/**
 * The LoRA training loop, one for every driver (the finetune CLI, the e2e probe, the benchmarks,
 * and `train` tasks): micro-batches cycle through the training split (reshuffled, seeded, at every
 * pass), `gradAccumulation` of them per AdamW step (the engine's LoraTrainer); the held-out loss
 * before, every `evalEvery` steps and after the last one; progress after every step; an adapter
 * snapshot every `checkpointEvery` steps. An AbortSignal stops it at the next step boundary with
 * CANCELLED; a step loss that is NaN, infinite or EXPLODED_FACTOR above where it began stops it with
 * TRAINING_DIVERGED (the checkpoints taken before it are the last good ones). Browser and Node alike (no node: imports); the caller owns the model and its GPU.
 *
 *   const data = prepareDataset(jsonl, tokenizer, { seed, heldOutFraction: 0.1, seqLen: 128, batchSize: 4 });
 *   const run = await runLoraTraining({ model, data, lora: { rank: 8, alpha: 16 }, steps: 100, lr: 1e-3 });
 *   saveAdapter({ ...run.adapter, baseModel, baseFingerprint }, model.config);
 */
import { AppError } from '../../shared';
import { GpuLoraAdapter, LoraTrainer, type LlamaModel, type LoraOptimizerState, type LoraOptions, type TrainerOptions } from '../engine';
import type { Batch, ChatTemplateChoice, LoraPair, LoraSettings, ModelTokenizer, OverflowMode } from '../model';
import { batchCycle } from './cycle';
import { meanLoss } from './eval-loss';
import { checkLoraSettings } from './lora-settings';
import { prepareDataset, type DatasetReport } from './prepare';

/** Batches already cut (prepareDataset gives these). */
export interface TrainingBatches {
  train: readonly Batch[];
  /** Evaluated, never trained on; empty or absent: no eval loss. */
  heldOut?: readonly Batch[];
}

/** JSON lines of `{"messages":[…]}`, tokenized and batched by the loop (prepareDataset, seeded with the run's seed). */
export interface TrainingConversations {
  jsonl: string;
  tokenizer: ModelTokenizer;
  seqLen: number;
  /** Conversations per micro-batch. */
  batchSize: number;
  /** Share of conversations held out for the eval loss, in [0, 1). Default 0. */
  evalFraction?: number;
  /** A chat template instead of the model's ('chatml' or Jinja); required when the model has none (CHAT_TEMPLATE_MISSING). */
  template?: ChatTemplateChoice;
  /** End-of-sequence ids, the one appended to turns first (worker/model's LoadedModel.eosTokenIds). Default: the tokenizer's EOS. */
  eosIds?: readonly number[];
  /** Conversations longer than seqLen + 1 tokens: split by turns (default), truncated or dropped; counted in the summary. */
  overflow?: OverflowMode;
}

/** The adapter as worker/model's saveAdapter takes it (add baseModel and baseFingerprint). */
export interface TrainedAdapter {
  settings: LoraSettings;
  /** Keyed by `loraKey(layer, module)`. */
  weights: Map<string, LoraPair>;
}

export interface TrainingStep {
  /** Optimizer steps done, 1-based, and the run's total. */
  step: number;
  total: number;
  /** Token-weighted mean loss of this step's micro-batches (as trained: dropout included, before the update). */
  loss: number;
  /** The latest held-out loss (the one before training until the first eval); absent with no held-out split. */
  evalLoss?: number;
  /** True when evalLoss was computed after this step. */
  evaluated: boolean;
  /** Global gradient norm before clipping (only when maxGradNorm is set). */
  gradNorm?: number;
  /** Token positions trained on so far (rows × seqLen of every micro-batch) and their rate. */
  trainTokens: number;
  tokensPerSec: number;
  /** Seconds since the first step began (eval and checkpoints included). */
  elapsedSec: number;
}

export interface TrainingCheckpoint extends TrainedAdapter {
  /** Optimizer steps done when it was taken. */
  step: number;
  /** Everything a run needs to go on from here (LoraTrainingOptions.resume): same model, data and options. */
  resume: TrainingResume;
}

/**
 * A run's state at a step boundary (a checkpoint): the adapter and its optimizer, and what the summary counts so
 * far. Given back as `resume` with the same model, data and options, the run goes on from `step + 1` and ends as
 * an uninterrupted one would (the same batches in the same order, the same dropout, the same updates).
 */
export interface TrainingResume {
  /** Optimizer steps done. */
  step: number;
  state: LoraOptimizerState;
  stepLosses: number[];
  evalLosses: { step: number; loss: number }[];
  trainLossBefore: number | null;
  evalLossBefore: number | null;
  /** The latest held-out loss at `step` (null with no held-out split). */
  evalLoss: number | null;
}

export interface LoraTrainingOptions {
  /** A loaded model; the loop attaches its own adapter and puts back whatever was attached before. */
  model: LlamaModel;
  data: TrainingBatches | TrainingConversations;
  /** Rank, alpha, dropout, targets (default all seven) and the init/dropout seed (default `seed`). */
  lora: LoraOptions;
  /** Optimizer steps. */
  steps: number;
  lr: number;
  weightDecay?: number;
  /** Micro-batches per optimizer step. Default 1. */
  gradAccumulation?: number;
  /** Clip the global gradient norm to this (0 or absent: off). */
  maxGradNorm?: number;
  /** Held-out loss every this many steps (and after the last); 0 or absent: only before and after. */
  evalEvery?: number;
  /** Seeds the batch order (and the split and the adapter, where those are not given). Default 0. */
  seed?: number;
  /** Mean loss over the whole training split before and after (two extra passes). Default true. */
  trainLoss?: boolean;
  /** Checked before every optimizer step: an aborted signal ends the run with CANCELLED. */
  signal?: AbortSignal;
  /** After every optimizer step (awaited). */
  onStep?: (step: TrainingStep) => void | Promise<void>;
  /** A snapshot of the adapter every this many steps (not after the last: the result carries that). */
  checkpointEvery?: number;
  onCheckpoint?: (checkpoint: TrainingCheckpoint) => void | Promise<void>;
  /** Go on from a checkpoint of this same run (its `resume`) instead of from the start. */
  resume?: TrainingResume;
}

export interface LoraTrainingSummary {
  steps: number;
  microSteps: number;
  trainBatches: number;
  heldOutBatches: number;
  /** Loss of every optimizer step, in order. */
  stepLosses: number[];
  firstStepLoss: number;
  lastStepLoss: number;
  /** Mean masked loss over the training split, before and after (null when `trainLoss` is false). */
  trainLossBefore: number | null;
  trainLossAfter: number | null;
  /** Mean masked loss over the held-out split, before and after (null when nothing is held out). */
  evalLossBefore: number | null;
  evalLossAfter: number | null;
  /** Every held-out loss measured after a step. */
  evalLosses: { step: number; loss: number }[];
  trainTokens: number;
  /** trainTokens over trainSeconds: eval passes, checkpoints and callbacks left out. */
  tokensPerSec: number;
  trainSeconds: number;
  /** The whole call, losses before and after included. */
  totalSeconds: number;
  adapter: TrainedAdapter & { parameters: number };
  /** What became of the conversations (null when the caller passed batches). */
  dataset: DatasetReport | null;
  /** What a user would not expect: conversations dropped or cut, no held-out rows. */
  warnings: string[];
}

function positiveInt(name: string, v: number): number {
  if (!Number.isSafeInteger(v) || v < 1) throw new AppError('INVALID_ARGUMENT', `${name} must be a positive integer (got ${v}).`, { [name]: v });
  return v;
}

function toBatches(data: TrainingBatches | TrainingConversations, seed: number): { train: readonly Batch[]; heldOut: readonly Batch[]; report: DatasetReport | null } {
  if ('jsonl' in data) {
    const p = prepareDataset(data.jsonl, data.tokenizer, {
      seed,
      heldOutFraction: data.evalFraction ?? 0,
      seqLen: data.seqLen,
      batchSize: data.batchSize,
      ...(data.template !== undefined ? { template: data.template } : {}),
      ...(data.eosIds !== undefined ? { eosIds: data.eosIds } : {}),
      ...(data.overflow !== undefined ? { overflow: data.overflow } : {}),
    });
    return { train: p.train, heldOut: p.heldOut, report: p.report };
  }
  return { train: data.train, heldOut: data.heldOut ?? [], report: null };
}

/** A step loss this many times above the larger of the first step's and a uniform guess's (ln vocab) has exploded. */
export const EXPLODED_FACTOR = 8;

/** TRAINING_DIVERGED when `loss` (of step `step`) is NaN, infinite or exploded; the run stops there. */
function checkDiverged(loss: number, step: number, total: number, first: number | undefined, vocabSize: number): void {
  const ceiling = EXPLODED_FACTOR * Math.max(first ?? 0, Math.log(Math.max(2, vocabSize)));
  if (Number.isFinite(loss) && loss <= ceiling) return;
  throw new AppError(
    'TRAINING_DIVERGED',
    `Training diverged at step ${step} of ${total}: the loss is ${loss}${Number.isFinite(loss) ? `, above ${ceiling.toFixed(2)} (${EXPLODED_FACTOR}× where it began)` : ''}. Lower the learning rate or set maxGradNorm; the adapter of this run is not kept.`,
    { step, steps: total, loss: Number.isFinite(loss) ? loss : String(loss), ...(first !== undefined ? { firstLoss: first } : {}) },
  );
}

function cancelled(done: number, total: number, signal: AbortSignal): AppError {
  return new AppError('CANCELLED', `Training was cancelled after ${done} of ${total} steps.`, { step: done, steps: total }, { cause: signal.reason });
}

/** Trains a fresh LoRA adapter on `model` and returns its weights with the run's losses and speed. */
export async function runLoraTraining(opts: LoraTrainingOptions): Promise<LoraTrainingSummary> {
  const t0 = performance.now();
  const { model, signal } = opts;
  const steps = positiveInt('steps', opts.steps);
  const accum = positiveInt('gradAccumulation', opts.gradAccumulation ?? 1);
  if (!(opts.lr > 0)) throw new AppError('INVALID_ARGUMENT', `lr must be above 0 (got ${opts.lr}).`, { lr: opts.lr });
  const seed = opts.seed ?? 0;
  const evalEvery = opts.evalEvery ?? 0;
  const checkpointEvery = opts.onCheckpoint ? (opts.checkpointEvery ?? 0) : 0;
  checkLoraSettings(model.config, opts.lora);
  const data = toBatches(opts.data, seed);
  if (data.train.length === 0) {
    throw new AppError('DATASET_INVALID', 'No training conversation has an assistant token within the sequence length. Add conversations, hold fewer out or raise the sequence length.', {
      heldOutBatches: data.heldOut.length,
    });
  }
  if (signal?.aborted) throw cancelled(0, steps, signal);

  const resume = opts.resume;
  if (resume && !(Number.isSafeInteger(resume.step) && resume.step >= 1 && resume.step < steps && resume.stepLosses.length === resume.step)) {
    throw new AppError('TRAINING_CHECKPOINT_INVALID', `The training checkpoint is at step ${resume.step}, which a run of ${steps} steps cannot go on from.`, { step: resume.step, steps });
  }
  const previous = model.adapter;
  const adapter = GpuLoraAdapter.create(model.ctx, model.config, { ...opts.lora, seed: opts.lora.seed ?? seed });
  try {
    if (resume) adapter.importState(resume.state);
    const trainerOptions: TrainerOptions = { lr: opts.lr, accumulationSteps: accum };
    if (opts.weightDecay !== undefined) trainerOptions.weightDecay = opts.weightDecay;
    if (opts.maxGradNorm !== undefined && opts.maxGradNorm > 0) trainerOptions.maxGradNorm = opts.maxGradNorm;
    const trainer = new LoraTrainer(model, adapter, trainerOptions);
    const measureTrain = opts.trainLoss ?? true;
    const hasEval = data.heldOut.length > 0;
    // Resumed: the losses before training are the first run's (this adapter has trained since).
    const trainLossBefore = resume ? resume.trainLossBefore : measureTrain ? await meanLoss(model, data.train) : null;
    const evalLossBefore = resume ? resume.evalLossBefore : hasEval ? await meanLoss(model, data.heldOut) : null;
    let evalLoss = (resume ? resume.evalLoss : evalLossBefore) ?? undefined;
    const evalLosses: { step: number; loss: number }[] = resume ? resume.evalLosses.map((e) => ({ ...e })) : [];

    const next = batchCycle(data.train, seed);
    const stepLosses: number[] = resume ? [...resume.stepLosses] : [];
    let trainTokens = 0;
    // Resumed: the batches the first run took, taken again (the cycle is seeded), so the next ones follow on.
    for (let k = 0; k < (resume?.step ?? 0) * accum; k++) {
      const batch = next();
      trainTokens += batch.rows * batch.seqLen;
    }
    // The speed is this run's own: the tokens it trained on over its own time.
    const replayedTokens = trainTokens;
    const tStart = performance.now();
    let asideMs = 0; // eval, checkpoints, callbacks
    for (let step = (resume?.step ?? 0) + 1; step <= steps; step++) {
      if (signal?.aborted) throw cancelled(step - 1, steps, signal);
      let lossSum = 0;
      let lossTokens = 0;
      let gradNorm: number | undefined;
      for (let k = 0; k < accum; k++) {
        const batch = next();
        const r = await trainer.step(batch);
        lossSum += r.loss * r.tokens;
        lossTokens += r.tokens;
        trainTokens += batch.rows * batch.seqLen;
        if (r.gradNorm !== undefined) gradNorm = r.gradNorm;
      }
      const loss = lossTokens > 0 ? lossSum / lossTokens : 0;
      checkDiverged(loss, step, steps, stepLosses[0], model.config.vocabSize);
      stepLosses.push(loss);
      const tAside = performance.now();
      const evaluated = hasEval && (step === steps || (evalEvery > 0 && step % evalEvery === 0));
      if (evaluated) {
        evalLoss = await meanLoss(model, data.heldOut);
        evalLosses.push({ step, loss: evalLoss });
      }
      if (checkpointEvery > 0 && step % checkpointEvery === 0 && step < steps) {
        const state = await adapter.exportState();
        const weights = new Map([...state.params].map(([key, p]) => [key, { a: p.a, b: p.b }]));
        const resumeHere: TrainingResume = { step, state, stepLosses: [...stepLosses], evalLosses: evalLosses.map((e) => ({ ...e })), trainLossBefore, evalLossBefore, evalLoss: evalLoss ?? null };
        await opts.onCheckpoint?.({ step, settings: { ...adapter.settings, targetModules: [...adapter.settings.targetModules] }, weights, resume: resumeHere });
      }
      const now = performance.now();
      asideMs += now - tAside;
      if (opts.onStep) {
        const trainingSec = (now - tStart - asideMs) / 1000;
        const update: TrainingStep = { step, total: steps, loss, evaluated, trainTokens, tokensPerSec: (trainTokens - replayedTokens) / Math.max(trainingSec, 1e-9), elapsedSec: (now - tStart) / 1000 };
        if (evalLoss !== undefined) update.evalLoss = evalLoss;
        if (gradNorm !== undefined) update.gradNorm = gradNorm;
        await opts.onStep(update);
        asideMs += performance.now() - now;
      }
    }
    const trainSeconds = (performance.now() - tStart - asideMs) / 1000;
    const trainLossAfter = measureTrain ? await meanLoss(model, data.train) : null;
    return {
      steps,
      microSteps: steps * accum,
      trainBatches: data.train.length,
      heldOutBatches: data.heldOut.length,
      stepLosses,
      firstStepLoss: stepLosses[0]!,
      lastStepLoss: stepLosses[stepLosses.length - 1]!,
      trainLossBefore,
      trainLossAfter,
      evalLossBefore,
      evalLossAfter: hasEval ? (evalLoss ?? null) : null,
      evalLosses,
      trainTokens,
      tokensPerSec: (trainTokens - replayedTokens) / Math.max(trainSeconds, 1e-9),
      trainSeconds,
      totalSeconds: (performance.now() - t0) / 1000,
      adapter: { settings: { ...adapter.settings, targetModules: [...adapter.settings.targetModules] }, weights: await adapter.toPairs(), parameters: adapter.parameterCount },
      dataset: data.report,
      warnings: data.report?.warnings ?? [],
    };
  } finally {
    model.setAdapter(previous);
    adapter.release();
  }
}
