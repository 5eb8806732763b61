/**
 * `train` tasks on the node: a LoRA adapter trained on the engine (worker/training's runLoraTraining, our WGSL
 * kernels) for a model of the node's weight store, handed back in the PEFT layout (adapter_config.json and
 * adapter_model.safetensors) for the coordinator's adapter registry.
 *
 * The base is loaded on the GPU for the run and released after it: the copy a `generate` decoder holds is never
 * touched (the loop attaches its own adapter to the model it trains).
 */
import { AppError, type ErrorInfo, type LoraConfig, type TrainResult } from '../../shared';
import { LlamaModel, type GpuContext } from '../engine';
import { loadModelFolder, saveAdapter } from '../model';
import { decodeCheckpoint, encodeCheckpoint, runDigest, runLoraTraining, type TrainingResume, type TrainingStep } from '../training';
import type { ModelFiles } from './service';

export interface TrainRunRequest {
  taskId: string;
  model: string;
  adapterName: string;
  /** JSON lines of `{"messages": [...]}`. */
  jsonl: string;
  lora: LoraConfig;
  steps: number;
  learningRate?: number;
  batchSize?: number;
  gradAccumulation?: number;
  evalFraction?: number;
  seed?: number;
  seqLen?: number;
  /** Epoch ms after which the run stops (DEADLINE_EXCEEDED). */
  deadline?: number | null;
  /** A checkpoint every this many steps (progress with `checkpoint`); 0 or absent: none. */
  checkpointEvery?: number;
  /** A checkpoint of this same run (an earlier attempt's, on any node): go on from it. One that does not resume is set aside (a warning) and the run starts over. */
  resume?: Uint8Array;
}

/** After every optimizer step. */
export interface TrainProgress {
  step: number;
  total: number;
  loss: number;
  /** The latest held-out loss; `evaluated` when it was measured after this step. */
  evalLoss?: number;
  evaluated: boolean;
  tokensPerSec: number;
  /** Set on a checkpoint (after step `step`, before its loss progress): the bytes to resume from (worker/training/checkpoint.ts). */
  checkpoint?: Uint8Array;
}

/** The run's summary as the task result has it (shared/protocol.ts TrainResult), with the adapter's PEFT files as bytes. */
export type TrainRunResult = Omit<TrainResult, 'adapter'> & { adapter: { config: string; safetensors: Uint8Array } };

export type TrainRunOutcome = { ok: true; result: TrainRunResult } | { ok: false; error: ErrorInfo };

export const TRAIN_DEFAULTS = { learningRate: 1e-3, batchSize: 4, gradAccumulation: 1, evalFraction: 0, seed: 0, seqLen: 128 } as const;

/** Trains on `ctx` with the model in `files`; throws coded errors (the service turns them into the outcome). */
export async function trainOnEngine(ctx: GpuContext, files: ModelFiles, req: TrainRunRequest, onStep: (p: TrainProgress) => void, signal: AbortSignal): Promise<TrainRunResult> {
  const t0 = performance.now();
  const loaded = await loadModelFolder((p) => files.readFile(p));
  const model = await LlamaModel.load(ctx, loaded.config, loaded.weights);
  try {
    const seed = req.seed ?? TRAIN_DEFAULTS.seed;
    const seqLen = Math.min(req.seqLen ?? TRAIN_DEFAULTS.seqLen, loaded.config.maxPositions - 1);
    const batchSize = req.batchSize ?? TRAIN_DEFAULTS.batchSize;
    const evalFraction = req.evalFraction ?? TRAIN_DEFAULTS.evalFraction;
    const lr = req.learningRate ?? TRAIN_DEFAULTS.learningRate;
    const gradAccumulation = req.gradAccumulation ?? TRAIN_DEFAULTS.gradAccumulation;
    const lora = { rank: req.lora.rank, alpha: req.lora.alpha, dropout: req.lora.dropout ?? 0, targets: req.lora.targetModules, seed };
    // The run's identity: a checkpoint resumes only the run it was taken of.
    const run = await runDigest({ modelFingerprint: loaded.fingerprint, lora, seed, lr, steps: req.steps, gradAccumulation, batchSize, seqLen, evalFraction, jsonl: req.jsonl });
    const warnings: string[] = [];
    let resume: TrainingResume | undefined;
    if (req.resume) {
      try {
        resume = decodeCheckpoint(req.resume, run);
      } catch (err) {
        warnings.push(`The checkpoint given could not be resumed (${err instanceof Error ? err.message : String(err)}); the run started over.`);
      }
    }
    let lastStep: TrainingStep | null = null;
    const runFrom = (from: TrainingResume | undefined) => runLoraTraining({
      model,
      data: { jsonl: req.jsonl, tokenizer: loaded.tokenizer, seqLen, batchSize, evalFraction, eosIds: loaded.eosTokenIds },
      lora,
      steps: req.steps,
      lr,
      gradAccumulation,
      seed,
      signal,
      ...(from ? { resume: from } : {}),
      ...(req.checkpointEvery ? { checkpointEvery: req.checkpointEvery } : {}),
      onCheckpoint: (c) => {
        const loss = c.resume.stepLosses[c.resume.stepLosses.length - 1] ?? 0;
        onStep({ step: c.step, total: req.steps, loss, evaluated: false, tokensPerSec: lastStep?.tokensPerSec ?? 0, checkpoint: encodeCheckpoint(c.resume, run) });
      },
      onStep: (s) => {
        lastStep = s;
        onStep({ step: s.step, total: s.total, loss: s.loss, ...(s.evalLoss !== undefined ? { evalLoss: s.evalLoss } : {}), evaluated: s.evaluated, tokensPerSec: s.tokensPerSec });
      },
    });
    let runResult;
    try {
      runResult = await runFrom(resume);
    } catch (err) {
      // A checkpoint that decodes but does not fit (another shape, a step past the run's end: a node that lied)
      // costs the steps it claimed, not the task: the run starts over.
      if (!resume || !(err instanceof AppError) || err.code !== 'TRAINING_CHECKPOINT_INVALID') throw err;
      warnings.push(`The checkpoint given could not be resumed (${err.message}); the run started over.`);
      resume = undefined;
      runResult = await runFrom(undefined);
    }
    const peft = saveAdapter({ ...runResult.adapter, baseModel: req.model, baseFingerprint: loaded.fingerprint }, loaded.config);
    return {
      adapterName: req.adapterName,
      steps: runResult.steps,
      trainLoss: runResult.stepLosses,
      trainLossBefore: runResult.trainLossBefore,
      trainLossAfter: runResult.trainLossAfter,
      evalLossBefore: runResult.evalLossBefore,
      evalLoss: runResult.evalLossAfter,
      trainTokens: runResult.trainTokens,
      tokensPerSec: runResult.tokensPerSec,
      durationMs: performance.now() - t0,
      dataset: runResult.dataset,
      warnings: [...warnings, ...runResult.warnings],
      ...(resume ? { resumedFrom: resume.step } : {}),
      adapter: { config: peft.configJson, safetensors: peft.safetensors },
    };
  } finally {
    model.release();
  }
}
