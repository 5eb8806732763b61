/**
 * `train` tasks on the node: a LoRA adapter trained on the engine (worker/training's runLoraTraining, our WGSL
 * kernels) for a model of the node's weight store, handed back in the PEFT layout (adapter_config.json and
 * adapter_model.safetensors) for the coordinator's adapter registry.
 *
 * The base is loaded on the GPU for the run and released after it: the copy a `generate` decoder holds is never
 * touched (the loop attaches its own adapter to the model it trains).
 */
import type { ErrorInfo, LoraConfig, TrainResult } from '../../shared';
import { LlamaModel, type GpuContext } from '../engine';
import { loadModelFolder, saveAdapter } from '../model';
import { runLoraTraining } from '../training';
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
    const run = await runLoraTraining({
      model,
      data: {
        jsonl: req.jsonl,
        tokenizer: loaded.tokenizer,
        seqLen: Math.min(req.seqLen ?? TRAIN_DEFAULTS.seqLen, loaded.config.maxPositions - 1),
        batchSize: req.batchSize ?? TRAIN_DEFAULTS.batchSize,
        evalFraction: req.evalFraction ?? TRAIN_DEFAULTS.evalFraction,
        eosIds: loaded.eosTokenIds,
      },
      lora: { rank: req.lora.rank, alpha: req.lora.alpha, dropout: req.lora.dropout ?? 0, targets: req.lora.targetModules, seed },
      steps: req.steps,
      lr: req.learningRate ?? TRAIN_DEFAULTS.learningRate,
      gradAccumulation: req.gradAccumulation ?? TRAIN_DEFAULTS.gradAccumulation,
      seed,
      signal,
      onStep: (s) => onStep({ step: s.step, total: s.total, loss: s.loss, ...(s.evalLoss !== undefined ? { evalLoss: s.evalLoss } : {}), evaluated: s.evaluated, tokensPerSec: s.tokensPerSec }),
    });
    const peft = saveAdapter({ ...run.adapter, baseModel: req.model, baseFingerprint: loaded.fingerprint }, loaded.config);
    return {
      adapterName: req.adapterName,
      steps: run.steps,
      trainLoss: run.stepLosses,
      trainLossBefore: run.trainLossBefore,
      trainLossAfter: run.trainLossAfter,
      evalLossBefore: run.evalLossBefore,
      evalLoss: run.evalLossAfter,
      trainTokens: run.trainTokens,
      tokensPerSec: run.tokensPerSec,
      durationMs: performance.now() - t0,
      dataset: run.dataset,
      warnings: run.warnings,
      adapter: { config: peft.configJson, safetensors: peft.safetensors },
    };
  } finally {
    model.release();
  }
}
