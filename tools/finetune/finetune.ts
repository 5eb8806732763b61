/**
 * One LoRA fine-tuning run in Node: a model folder and a JSON-lines conversation file in, a PEFT
 * adapter folder out, on WebGPU (Dawn via the `webgpu` package). The files and the progress are
 * this file's; the loop is worker/training's runLoraTraining, the same one the page and the
 * benchmarks run.
 */
import { mkdir, readFile, stat, writeFile } from 'node:fs/promises';
import { basename, join, resolve } from 'node:path';
import { AppError } from '../../shared';
import { LlamaModel, type GpuContext } from '../../worker/engine';
// Node's WebGPU lives outside the engine's index on purpose (the engine stays free of node: imports).
import { createNodeGpuContext } from '../../worker/node';
import {
  ADAPTER_CONFIG_FILE,
  ADAPTER_WEIGHTS_FILE,
  loadModelFolder,
  saveAdapter,
  type LinearModule,
} from '../../worker/model';
import { prepareDataset, runLoraTraining, type DatasetReport } from '../../worker/training';
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
  /** What became of each conversation (kept, split, truncated, dropped), rows and targets per split, warnings. */
  dataset: DatasetReport;
  warnings: string[];
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

/** --template: 'chatml', '@FILE' (read here) or Jinja text. */
async function templateText(value: string | undefined): Promise<string | undefined> {
  if (value === undefined || !value.startsWith('@')) return value;
  try {
    return await readFile(resolve(value.slice(1)), 'utf8');
  } catch (err) {
    throw new AppError('INVALID_ARGUMENT', `--template ${value}: cannot read ${value.slice(1)} (${(err as NodeJS.ErrnoException).code ?? 'error'}).`, { option: 'template', value }, { cause: err });
  }
}

export async function finetune(opts: FinetuneOptions, hooks: FinetuneHooks = {}): Promise<FinetuneSummary> {
  const t0 = performance.now();
  const modelDir = resolve(opts.model);
  const dataPath = resolve(opts.data);
  const outDir = resolve(opts.out);
  await checkModelFolder(modelDir);
  const text = await readDataset(dataPath);
  const template = await templateText(opts.template);
  const loaded = await loadModelFolder((name) => readFile(join(modelDir, name)));
  const { config, tokenizer } = loaded;
  const data = prepareDataset(text, tokenizer, {
    seed: opts.seed,
    heldOutFraction: opts.evalFraction,
    seqLen: opts.seq,
    batchSize: opts.batch,
    eosIds: loaded.eosTokenIds,
    overflow: opts.overflow,
    ...(template !== undefined ? { template } : {}),
  });
  const r = data.report;
  hooks.onNote?.(
    `model ${basename(modelDir)} (${config.numLayers} layers, hidden ${config.hiddenSize}, vocab ${config.vocabSize}); ` +
      `${r.conversations} conversations (${r.kept} kept, ${r.split} split, ${r.truncated} truncated, ${r.dropped} dropped) → ` +
      `${data.train.length} train / ${data.heldOut.length} held-out batches`,
  );
  for (const w of r.warnings) hooks.onNote?.(`warning: ${w}`);

  const ctx = hooks.ctx ?? (await createNodeGpuContext());
  let model: LlamaModel | null = null;
  try {
    model = await LlamaModel.load(ctx, config, loaded.weights);
    const run = await runLoraTraining({
      model,
      data,
      lora: { rank: opts.rank, alpha: opts.alpha, dropout: opts.dropout, targets: opts.targets, seed: opts.seed },
      steps: opts.steps,
      lr: opts.lr,
      weightDecay: opts.weightDecay,
      gradAccumulation: opts.gradAccum,
      maxGradNorm: opts.maxGradNorm,
      evalEvery: opts.evalEvery,
      seed: opts.seed,
      onStep: (s) => {
        const update: ProgressUpdate = { step: s.step, total: s.total, loss: s.loss, evalLoss: s.evalLoss, evaluated: s.evaluated, tokensPerSec: s.tokensPerSec, elapsedSec: s.elapsedSec };
        hooks.onProgress?.(update);
      },
    });

    const files = saveAdapter({ ...run.adapter, baseModel: basename(modelDir), baseFingerprint: loaded.fingerprint }, config);
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
      conversations: r.conversations,
      dataset: r,
      warnings: r.warnings,
      trainBatches: run.trainBatches,
      heldOutBatches: run.heldOutBatches,
      steps: run.steps,
      microSteps: run.microSteps,
      trainLossBefore: run.trainLossBefore ?? Number.NaN,
      trainLossAfter: run.trainLossAfter ?? Number.NaN,
      evalLossBefore: run.evalLossBefore,
      evalLossAfter: run.evalLossAfter,
      firstStepLoss: run.firstStepLoss,
      lastStepLoss: run.lastStepLoss,
      trainTokens: run.trainTokens,
      tokensPerSec: run.tokensPerSec,
      trainSeconds: run.trainSeconds,
      totalSeconds: (performance.now() - t0) / 1000,
      adapter: {
        rank: opts.rank,
        alpha: opts.alpha,
        dropout: opts.dropout,
        targetModules: [...run.adapter.settings.targetModules],
        parameters: run.adapter.parameters,
        baseFingerprint: loaded.fingerprint,
      },
      gpu: { description: info.description || info.vendor, isFallbackAdapter: info.isFallbackAdapter, matmulConfig: info.matmulConfig },
    };
  } finally {
    model?.release();
    if (!hooks.ctx) ctx.destroy();
  }
}
