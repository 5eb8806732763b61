/**
 * One LoRA fine-tuning run in Node: a model folder and a JSON-lines conversation file in, a PEFT
 * adapter folder out, on WebGPU (Dawn via the `webgpu` package). The loop: micro-batches cycle
 * through the training split (reshuffled each pass), `gradAccum` of them per AdamW step; the
 * held-out split's loss is measured before, every `evalEvery` steps and after.
 */
import { mkdir, readFile, stat, writeFile } from 'node:fs/promises';
import { basename, join, resolve } from 'node:path';
import { AppError } from '../../shared';
import { GpuLoraAdapter, LlamaModel, LoraTrainer, type GpuContext } from '../../worker/engine';
// Node's WebGPU lives outside the engine's index on purpose (the engine stays free of node: imports).
import { createNodeGpuContext } from '../../worker/node';
import {
  ADAPTER_CONFIG_FILE,
  ADAPTER_WEIGHTS_FILE,
  loadModelFolder,
  prepareDataset,
  saveAdapter,
  seededShuffle,
  type Batch,
  type LinearModule,
} from '../../worker/model';
import type { FinetuneOptions } from './options';
import type { ProgressUpdate } from './progress';

export interface FinetuneHooks {
  onProgress?: (update: ProgressUpdate) => void;
  /** One-off lines: what was loaded, where the adapter went. */
  onNote?: (text: string) => void;
  /** A GPU context to use (kept open); by default one is created on Node's WebGPU and destroyed after. */
  ctx?: GpuContext;
}

export interface FinetuneSummary {
  adapterDir: string;
  files: string[];
  model: string;
  data: string;
  conversations: number;
  trainBatches: number;
  heldOutBatches: number;
  steps: number;
  microSteps: number;
  /** Mean masked loss over the whole training split, before and after. */
  trainLossBefore: number;
  trainLossAfter: number;
  /** Mean masked loss over the held-out split, before and after (null when nothing is held out). */
  evalLossBefore: number | null;
  evalLossAfter: number | null;
  /** Mean loss of the first and last optimizer step (as trained, dropout included). */
  firstStepLoss: number;
  lastStepLoss: number;
  /** Token positions processed by training (rows × seq) and their rate (eval time left out). */
  trainTokens: number;
  tokensPerSec: number;
  trainSeconds: number;
  totalSeconds: number;
  adapter: {
    rank: number;
    alpha: number;
    dropout: number;
    targetModules: LinearModule[];
    parameters: number;
    baseFingerprint: string;
  };
  gpu: { description: string; isFallbackAdapter: boolean; matmulConfig: string };
}

const REQUIRED_FILES = ['config.json', 'tokenizer.json', 'tokenizer_config.json'];

async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch {
    return false;
  }
}

/** MODEL_NOT_FOUND for a missing folder, MODEL_FILE_MISSING (listing them) for missing files. */
export async function checkModelFolder(dir: string): Promise<void> {
  let isDir = false;
  try {
    isDir = (await stat(dir)).isDirectory();
  } catch {
    isDir = false;
  }
  if (!isDir) {
    throw new AppError('MODEL_NOT_FOUND', `No model folder at ${dir}. Pass --model with a folder holding config.json, model.safetensors and the tokenizer files (npm run model:tiny -- --out DIR makes one).`, { dir });
  }
  const missing: string[] = [];
  for (const f of REQUIRED_FILES) if (!(await exists(join(dir, f)))) missing.push(f);
  if (!(await exists(join(dir, 'model.safetensors'))) && !(await exists(join(dir, 'model.safetensors.index.json')))) missing.push('model.safetensors');
  if (missing.length) {
    throw new AppError('MODEL_FILE_MISSING', `The model folder ${dir} lacks ${missing.join(', ')}. Download or generate the model again.`, { dir, missing });
  }
}

async function readDataset(path: string): Promise<string> {
  try {
    return await readFile(path, 'utf8');
  } catch (err) {
    throw new AppError('DATASET_NOT_FOUND', `Cannot read the dataset ${path} (${(err as NodeJS.ErrnoException).code ?? 'error'}). Pass --data with a JSON-lines file of {"messages":[…]}.`, { path }, { cause: err });
  }
}

/** Token-weighted mean loss over batches (no gradients). */
async function meanLoss(model: LlamaModel, batches: readonly Batch[]): Promise<number> {
  let sum = 0;
  let count = 0;
  for (const b of batches) {
    let n = 0;
    for (const m of b.lossMask) n += m;
    if (n === 0) continue;
    sum += (await model.evalLoss(b)) * n;
    count += n;
  }
  return count > 0 ? sum / count : 0;
}

/** Cycles through batches, reshuffling their order (seeded) at every pass. */
function batchCycle(batches: readonly Batch[], seed: number): () => Batch {
  let order: Batch[] = [];
  let pass = 0;
  return () => {
    if (!order.length) order = seededShuffle(batches, seed + pass++);
    return order.pop() as Batch;
  };
}

export async function finetune(opts: FinetuneOptions, hooks: FinetuneHooks = {}): Promise<FinetuneSummary> {
  const t0 = performance.now();
  const modelDir = resolve(opts.model);
  const dataPath = resolve(opts.data);
  const outDir = resolve(opts.out);
  await checkModelFolder(modelDir);
  const text = await readDataset(dataPath);
  const loaded = await loadModelFolder((name) => readFile(join(modelDir, name)));
  const { config, tokenizer } = loaded;
  const data = prepareDataset(text, tokenizer, { seed: opts.seed, heldOutFraction: opts.evalFraction, seqLen: opts.seq, batchSize: opts.batch });
  if (data.train.length === 0) {
    throw new AppError('DATASET_INVALID', `No training conversation has an assistant token within --seq ${opts.seq} tokens (${data.conversations} read). Add conversations, lower --eval-fraction or raise --seq.`, {
      conversations: data.conversations,
    });
  }
  hooks.onNote?.(
    `model ${basename(modelDir)} (${config.numLayers} layers, hidden ${config.hiddenSize}, vocab ${config.vocabSize}); ` +
      `${data.conversations} conversations → ${data.train.length} train / ${data.heldOut.length} held-out batches`,
  );

  const ctx = hooks.ctx ?? (await createNodeGpuContext());
  let model: LlamaModel | null = null;
  let adapter: GpuLoraAdapter | null = null;
  try {
    model = await LlamaModel.load(ctx, config, loaded.weights);
    adapter = GpuLoraAdapter.create(ctx, config, { rank: opts.rank, alpha: opts.alpha, dropout: opts.dropout, targets: opts.targets, seed: opts.seed });
    const trainer = new LoraTrainer(model, adapter, {
      lr: opts.lr,
      weightDecay: opts.weightDecay,
      accumulationSteps: opts.gradAccum,
      ...(opts.maxGradNorm > 0 ? { maxGradNorm: opts.maxGradNorm } : {}),
    });
    const trainLossBefore = await meanLoss(model, data.train);
    const hasEval = data.heldOut.length > 0;
    const evalLossBefore = hasEval ? await meanLoss(model, data.heldOut) : null;
    let evalLoss = evalLossBefore ?? undefined;

    const next = batchCycle(data.train, opts.seed);
    const tStart = performance.now();
    let trainTokens = 0;
    let firstStepLoss = Number.NaN;
    let lastStepLoss = Number.NaN;
    let evalMs = 0;
    for (let step = 1; step <= opts.steps; step++) {
      let lossSum = 0;
      let lossTokens = 0;
      for (let k = 0; k < opts.gradAccum; k++) {
        const batch = next();
        const r = await trainer.step(batch);
        lossSum += r.loss * r.tokens;
        lossTokens += r.tokens;
        trainTokens += batch.rows * batch.seqLen;
      }
      const loss = lossTokens > 0 ? lossSum / lossTokens : 0;
      if (step === 1) firstStepLoss = loss;
      lastStepLoss = loss;
      // The eval loss every evalEvery steps and always after the last one (the summary's evalLossAfter).
      const evaluated = hasEval && (step === opts.steps || (opts.evalEvery > 0 && step % opts.evalEvery === 0));
      if (evaluated) {
        const te = performance.now();
        evalLoss = await meanLoss(model, data.heldOut);
        evalMs += performance.now() - te;
      }
      const elapsedSec = (performance.now() - tStart) / 1000;
      const trainingSec = elapsedSec - evalMs / 1000;
      hooks.onProgress?.({ step, total: opts.steps, loss, evalLoss, evaluated, tokensPerSec: trainTokens / Math.max(trainingSec, 1e-9), elapsedSec });
    }
    const trainSeconds = (performance.now() - tStart - evalMs) / 1000;
    const trainLossAfter = await meanLoss(model, data.train);
    const evalLossAfter = hasEval ? (evalLoss ?? null) : null;

    const files = saveAdapter({ settings: adapter.settings, baseModel: basename(modelDir), baseFingerprint: loaded.fingerprint, weights: await adapter.toPairs() }, config);
    await mkdir(outDir, { recursive: true });
    await writeFile(join(outDir, ADAPTER_CONFIG_FILE), files.configJson);
    await writeFile(join(outDir, ADAPTER_WEIGHTS_FILE), files.safetensors);
    hooks.onNote?.(`adapter written to ${outDir}`);
    const info = ctx.info();
    return {
      adapterDir: outDir,
      files: [ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE],
      model: modelDir,
      data: dataPath,
      conversations: data.conversations,
      trainBatches: data.train.length,
      heldOutBatches: data.heldOut.length,
      steps: opts.steps,
      microSteps: opts.steps * opts.gradAccum,
      trainLossBefore,
      trainLossAfter,
      evalLossBefore,
      evalLossAfter,
      firstStepLoss,
      lastStepLoss,
      trainTokens,
      tokensPerSec: trainTokens / Math.max(trainSeconds, 1e-9),
      trainSeconds,
      totalSeconds: (performance.now() - t0) / 1000,
      adapter: {
        rank: opts.rank,
        alpha: opts.alpha,
        dropout: opts.dropout,
        targetModules: [...adapter.settings.targetModules],
        parameters: adapter.parameterCount,
        baseFingerprint: loaded.fingerprint,
      },
      gpu: { description: info.description || info.vendor, isFallbackAdapter: info.isFallbackAdapter, matmulConfig: info.matmulConfig },
    };
  } finally {
    adapter?.release();
    model?.release();
    if (!hooks.ctx) ctx.destroy();
  }
}
