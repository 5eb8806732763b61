/**
 * What the Chromium checks ask of the engine, as a same-thread class: load a model folder over
 * HTTP, logits, a few LoRA training steps on a conversation set, and timings for the training
 * bench. `engine-worker.ts` exposes it from a Web Worker with comlink; nothing here is worker-only.
 */
import { AppError } from '../../shared';
import { benchMatmul, GpuContext, GpuLoraAdapter, LlamaModel, LoraTrainer, MATMUL_CONFIGS, matmul } from '../../worker/engine';
import { LINEAR_MODULES, loadModelFolder, mulberry32, type Batch, type LinearModule, type LoadedModel } from '../../worker/model';
import { runLoraTraining } from '../../worker/training';

export interface ProbeGpu {
  description: string;
  isFallbackAdapter: boolean;
  matmulConfig: string;
  features: string[];
}

export interface TrainRequest {
  jsonl: string;
  steps: number;
  lr: number;
  seq: number;
  batch: number;
  rank: number;
  alpha: number;
  targets?: LinearModule[];
  seed?: number;
}

export interface TrainReport {
  lossBefore: number;
  lossAfter: number;
  stepLosses: number[];
  batches: number;
  ms: number;
}

export interface MatmulBench {
  /**
   * GPU time (timestamp queries, the engine's benchMatmul: A·Bᵀ) of the best config, GFLOP/s. It once
   * read 3–4× above the wall-clock figures below, which time A·B: that layout had only a scalar kernel.
   */
  gflops: number;
  best: string;
  perConfig: Record<string, number>;
  /** Upload A and B, multiply, read C back — wall clock, best of the runs (the method used for onnxruntime-web). */
  wallGflops: number;
  /** A and B already on the GPU, C left there: record the best config's matmul and wait for the queue (wall clock). */
  residentGflops: number;
}

export interface ModelBench {
  tokens: number;
  forwardMs: number;
  forwardTokensPerSec: number;
  /** One LoRA step (forward, loss, backward, AdamW), best of the runs. */
  trainStepMs: number;
  trainTokensPerSec: number;
  trainStepOverForward: number;
  /** Where a step's time goes: forward + loss with the adapter (no backward), and forward + loss + backward (no optimizer). */
  lossOnlyMs: number;
  lossAndGradMs: number;
  adapter: string;
}

/** Deterministic token rows for timing: ids in [5, vocab). */
export function benchTokens(rows: number, seqLen: number, vocab: number, seed = 1): number[][] {
  const rng = mulberry32(seed);
  return Array.from({ length: rows }, () => Array.from({ length: seqLen }, () => 5 + rng.int(vocab - 5)));
}

export class EngineProbe {
  #ctx: GpuContext | null = null;
  #loaded: LoadedModel | null = null;
  #model: LlamaModel | null = null;

  /** Opens the GPU (navigator.gpu) and loads the model folder found at `baseUrl` (ending in '/'). */
  async init(baseUrl: string): Promise<ProbeGpu> {
    this.#ctx ??= await GpuContext.create();
    this.#loaded = await loadModelFolder(async (name) => {
      const res = await fetch(new URL(name, baseUrl));
      if (!res.ok) throw new AppError('MODEL_FILE_MISSING', `GET ${name} answered ${res.status}.`, { file: name });
      return new Uint8Array(await res.arrayBuffer());
    });
    this.#model?.release();
    this.#model = await LlamaModel.load(this.#ctx, this.#loaded.config, this.#loaded.weights);
    const info = this.#ctx.info();
    return { description: info.description || info.vendor, isFallbackAdapter: info.isFallbackAdapter, matmulConfig: info.matmulConfig, features: info.features };
  }

  #need(): { ctx: GpuContext; model: LlamaModel; loaded: LoadedModel } {
    if (!this.#ctx || !this.#model || !this.#loaded) throw new AppError('INTERNAL', 'Call init(baseUrl) first.');
    return { ctx: this.#ctx, model: this.#model, loaded: this.#loaded };
  }

  /** Logits [rows·T, V] of the base model. */
  logits(ids: number[][]): Promise<Float32Array> {
    const { model } = this.#need();
    model.setAdapter(null);
    return model.forward(ids);
  }

  /** Token ids of a one-question chat prompt (the model's own tokenizer and template). */
  prompt(question: string): number[] {
    const { loaded } = this.#need();
    return loaded.tokenizer.encode(loaded.tokenizer.applyChatTemplate([{ role: 'user', content: question }], { addGenerationPrompt: true }));
  }

  /** LoRA steps on a JSON-lines conversation set (worker/training's loop); losses over the whole set before and after. */
  async train(req: TrainRequest): Promise<TrainReport> {
    const { model, loaded } = this.#need();
    const t0 = performance.now();
    const seed = req.seed ?? 0;
    const run = await runLoraTraining({
      model,
      data: { jsonl: req.jsonl, tokenizer: loaded.tokenizer, seqLen: req.seq, batchSize: req.batch },
      lora: { rank: req.rank, alpha: req.alpha, targets: req.targets ?? LINEAR_MODULES, seed },
      steps: req.steps,
      lr: req.lr,
      seed,
    });
    return { lossBefore: run.trainLossBefore ?? Number.NaN, lossAfter: run.trainLossAfter ?? Number.NaN, stepLosses: run.stepLosses, batches: run.trainBatches, ms: performance.now() - t0 };
  }

  /** fp32 M×K·K×N with our kernels: GPU time per config and a wall-clock figure. */
  async benchMatmul(size = 512, runs = 3): Promise<MatmulBench> {
    const { ctx } = this.#need();
    const perConfig = await benchMatmul(ctx, size, size, size, runs);
    let best = '';
    for (const [name, g] of Object.entries(perConfig)) if (!best || g > perConfig[best]!) best = name;
    const rng = mulberry32(3);
    const a = Float32Array.from({ length: size * size }, () => rng.next() - 0.5);
    const b = Float32Array.from({ length: size * size }, () => rng.next() - 0.5);
    let bestMs = Infinity;
    for (let i = 0; i <= runs; i++) {
      const t = performance.now();
      await ctx.withLock(async () => {
        const ta = ctx.upload(a, [size, size]);
        const tb = ctx.upload(b, [size, size]);
        const c = matmul(ctx, ta, tb);
        await ctx.read(c);
        for (const x of [ta, tb, c]) x.release();
      });
      if (i > 0) bestMs = Math.min(bestMs, performance.now() - t); // run 0 compiles
    }
    const config = MATMUL_CONFIGS.find((c) => c.name === best);
    let residentMs = Infinity;
    await ctx.withLock(async () => {
      const ta = ctx.upload(a, [size, size]);
      const tb = ctx.upload(b, [size, size]);
      const c = ctx.tensor([size, size]);
      try {
        for (let i = 0; i <= runs; i++) {
          await ctx.sync();
          const t = performance.now();
          matmul(ctx, ta, tb, { out: c, ...(config ? { config } : {}) });
          await ctx.sync();
          if (i > 0) residentMs = Math.min(residentMs, performance.now() - t);
        }
      } finally {
        for (const x of [ta, tb, c]) x.release();
      }
    });
    const flops = 2 * size ** 3;
    return { gflops: perConfig[best] ?? 0, best, perConfig, wallGflops: flops / (bestMs / 1000) / 1e9, residentGflops: flops / (residentMs / 1000) / 1e9 };
  }

  /** The input rows benchModel times (for the onnxruntime-web side of the same bench). */
  benchInput(rows: number, seqLen: number): number[][] {
    const { loaded } = this.#need();
    return benchTokens(rows, seqLen + 1, loaded.config.vocabSize).map((r) => r.slice(0, seqLen));
  }

  /** Forward (logits read back) and one LoRA training step on the same rows, best of `runs`. */
  async benchModel(rows: number, seqLen: number, runs = 3, rank = 8): Promise<ModelBench> {
    const { ctx, model, loaded } = this.#need();
    const ids = benchTokens(rows, seqLen + 1, loaded.config.vocabSize);
    const input = ids.map((r) => r.slice(0, seqLen));
    const batch: Batch = {
      inputIds: Int32Array.from(input.flat()),
      targets: Int32Array.from(ids.flatMap((r) => r.slice(1))),
      lossMask: new Float32Array(rows * seqLen).fill(1),
      rows,
      seqLen,
    };
    const best = async (fn: () => Promise<unknown>): Promise<number> => {
      let ms = Infinity;
      for (let i = 0; i <= runs; i++) {
        const t = performance.now();
        await fn();
        if (i > 0) ms = Math.min(ms, performance.now() - t); // run 0 compiles
      }
      return ms;
    };
    model.setAdapter(null);
    const forwardMs = await best(() => model.forward(input));
    const targets: LinearModule[] = ['q_proj', 'v_proj'];
    const adapter = GpuLoraAdapter.create(ctx, loaded.config, { rank, alpha: 2 * rank, targets });
    try {
      const trainer = new LoraTrainer(model, adapter, { lr: 1e-3 });
      const lossOnlyMs = await best(() => model.evalLoss(batch));
      const lossAndGradMs = await best(() => model.lossAndGrad(batch, 1));
      adapter.zeroGrad();
      const trainStepMs = await best(() => trainer.step(batch));
      const tokens = rows * seqLen;
      return {
        tokens,
        forwardMs,
        forwardTokensPerSec: tokens / (forwardMs / 1000),
        trainStepMs,
        trainTokensPerSec: tokens / (trainStepMs / 1000),
        trainStepOverForward: trainStepMs / forwardMs,
        lossOnlyMs,
        lossAndGradMs,
        adapter: `LoRA r=${rank} alpha=${2 * rank} on ${targets.join(',')} (${adapter.parameterCount} parameters), AdamW, batch ${rows}×${seqLen}`,
      };
    } finally {
      model.setAdapter(null);
      adapter.release();
    }
  }

  dispose(): void {
    this.#model?.release();
    this.#model = null;
    this.#ctx?.destroy();
    this.#ctx = null;
  }
}
