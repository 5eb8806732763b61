/**
 * In-page measurements for `npm run bench -- inference`: each backend in a fresh inference worker of
 * its own (transformers.js loads one onnxruntime build per worker), one stream and `sequences`
 * concurrent streams, load times from a cold and a warm weight store, and the page's own runtime
 * called directly (the "bare" baseline of the pool figure).
 */
import { RemoteInference, type GenerateRunRequest, type InferenceRuntime, type InferenceWorkerConfig } from '../worker/inference';

export type BenchBackend = 'engine' | 'wasm' | 'webgpu';

export interface StreamsResult {
  tokens: number;
  ms: number;
  tokensPerSec: number;
}

export interface VariantResult {
  label: string;
  backend: string;
  device: string;
  loadMs: number;
  one: StreamsResult;
  many: StreamsResult;
  /** many ÷ one tokens/s. */
  speedup: number;
}

export interface InferenceBenchRequest {
  model: string;
  prompt: string;
  maxNewTokens: number;
  /** Concurrent streams of the batched figure. */
  sequences: number;
  /** Rounds of each measurement; the best is kept. */
  rounds?: number;
}

/** Runs `n` concurrent generations on a runtime; tokens generated over the wall time. */
export async function streams(rt: InferenceRuntime, req: InferenceBenchRequest, n: number, tag: string): Promise<StreamsResult> {
  const t0 = performance.now();
  const runs = await Promise.all(
    Array.from({ length: n }, (_, i) => {
      const r: GenerateRunRequest = { taskId: `${tag}-${i}-${Math.random().toString(36).slice(2)}`, model: req.model, prompt: `${req.prompt} ${i}`, maxNewTokens: req.maxNewTokens };
      return rt.generate(r);
    }),
  );
  const ms = performance.now() - t0;
  let tokens = 0;
  for (const r of runs) {
    if (!r.ok) throw new Error(`${r.error.code}: ${r.error.message}`);
    tokens += r.result.usage.completionTokens;
  }
  return { tokens, ms, tokensPerSec: (tokens * 1000) / ms };
}

async function best(rt: InferenceRuntime, req: InferenceBenchRequest, n: number, tag: string): Promise<StreamsResult> {
  let top: StreamsResult | null = null;
  for (let i = 0; i < (req.rounds ?? 2); i++) {
    const r = await streams(rt, req, n, `${tag}-${i}`);
    if (!top || r.tokensPerSec > top.tokensPerSec) top = r;
  }
  return top!;
}

/** A fresh inference worker with these backends (`choose: 'first'`: no race, the one named runs). */
export async function startWorker(base: string, backends: BenchBackend[], opts: Partial<InferenceWorkerConfig> = {}): Promise<{ rt: RemoteInference; worker: Worker }> {
  const cfg: InferenceWorkerConfig = { base, backends, choose: 'first', ...opts };
  const worker = new Worker(new URL('../worker/inference/inference-worker.ts', import.meta.url), { type: 'module', name: JSON.stringify(cfg) });
  try {
    return { rt: await RemoteInference.connect(worker), worker };
  } catch (err) {
    worker.terminate();
    throw err;
  }
}

/** One backend: load time, one stream, `sequences` streams. */
export async function benchVariant(base: string, label: string, backends: BenchBackend[], req: InferenceBenchRequest, opts: Partial<InferenceWorkerConfig> = {}): Promise<VariantResult> {
  const { rt, worker } = await startWorker(base, backends, { maxSequences: req.sequences, ...opts });
  try {
    const t0 = performance.now();
    const loaded = (await rt.load(req.model)) as { backend: string; device: string };
    const loadMs = performance.now() - t0;
    await streams(rt, { ...req, maxNewTokens: 4 }, req.sequences, 'warmup');
    const one = await best(rt, req, 1, 'one');
    const many = await best(rt, req, req.sequences, 'many');
    return { label, backend: loaded.backend, device: loaded.device, loadMs, one, many, speedup: many.tokensPerSec / one.tokensPerSec };
  } finally {
    await rt.close().catch(() => undefined);
    worker.terminate();
  }
}

/** Load time of a model into a fresh worker on the store `dbName` (cold the first time, warm after). */
export async function loadTime(base: string, backends: BenchBackend[], model: string, dbName: string): Promise<{ ms: number; backend: string; filesMs: number | null; runtimeLoadMs: number | null; workerStartMs: number }> {
  const t0 = performance.now();
  const { rt, worker } = await startWorker(base, backends, { dbName, maxSequences: 1, maxPositions: 256 });
  try {
    const started = performance.now();
    let phases: { ms: number; filesMs: number } | null = null;
    const off = rt.on((e) => {
      if (e.type === 'load' && e.model === model) phases = { ms: e.ms, filesMs: e.filesMs };
    });
    const loaded = (await rt.load(model)) as { backend: string };
    off();
    const p = phases as { ms: number; filesMs: number } | null;
    // ms: the model's load in a started worker (files, then the backend); workerStartMs: the worker before it.
    return { ms: performance.now() - started, backend: loaded.backend, filesMs: p?.filesMs ?? null, runtimeLoadMs: p ? p.ms - p.filesMs : null, workerStartMs: started - t0 };
  } finally {
    await rt.close().catch(() => undefined);
    worker.terminate();
  }
}
