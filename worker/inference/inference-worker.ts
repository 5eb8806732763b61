/**
 * The page's inference worker (a module Web Worker): the IndexedDB weight store fed from the
 * coordinator, the engine on this worker's WebGPU device and transformers.js on onnxruntime-web's
 * WASM EP, one continuous batcher per loaded model, served over comlink (./worker-api.ts).
 *
 * Configured through the worker's `name`: JSON of `InferenceWorkerConfig`.
 */
import { AppError } from '../../shared';
import { GpuContext } from '../engine';
import { WeightStore } from '../weights';
import { engineBackend, transformersBackend } from './backends';
import { InferenceService, type InferenceBackend } from './service';
import { weightStoreSource } from './sources';
import { exposeInference, reportInferenceFailure } from './worker-api';

export interface InferenceWorkerConfig {
  /** The coordinator's http(s) origin. */
  base: string;
  /** Which backends to offer: 'engine' (WebGPU), 'wasm' (transformers.js, WASM EP), 'webgpu' (transformers.js, WebGPU EP). */
  backends?: ('engine' | 'wasm' | 'webgpu')[];
  maxSequences?: number;
  maxPositions?: number;
  memoryBudgetBytes?: number;
  storageBudgetBytes?: number;
  choose?: 'fastest' | 'first';
  /** onnxruntime-web WASM threads (needs cross-origin isolation for more than 1). */
  numThreads?: number;
  dbName?: string;
}

declare const self: { name: string };

function config(): InferenceWorkerConfig {
  try {
    const c = JSON.parse(self.name) as InferenceWorkerConfig;
    if (typeof c.base !== 'string') throw new Error('no base');
    return c;
  } catch (err) {
    throw new AppError('INTERNAL', `The inference worker needs its configuration as JSON in its name (${(err as Error).message}).`);
  }
}

async function main(): Promise<void> {
  const cfg = config();
  const store = new WeightStore({ base: cfg.base, ...(cfg.dbName ? { dbName: cfg.dbName } : {}), ...(cfg.storageBudgetBytes ? { budgetBytes: cfg.storageBudgetBytes } : {}) });
  const wanted = cfg.backends ?? ['engine', 'wasm'];
  const env = {
    remoteHost: `${cfg.base}/models/`,
    remotePathTemplate: '{model}/',
    cache: store.customCache(),
    wasmPaths: `${cfg.base}/ort/`,
    numThreads: cfg.numThreads ?? (globalThis.crossOriginIsolated ? 2 : 1),
  };
  const backends: InferenceBackend[] = [];
  if (wanted.includes('engine') && 'gpu' in navigator) {
    let ctx: GpuContext | null = null;
    backends.push(
      engineBackend({
        gpu: async () => {
          if (!ctx) return (ctx = await GpuContext.create());
          try {
            ctx.checkAlive();
          } catch {
            await ctx.reset(); // lost: a new device; the model reloads from the weight store
          }
          return ctx;
        },
      }),
    );
  }
  if (wanted.includes('wasm')) {
    // The WASM-only bundle: its EP is about twice as fast as the main bundle's (DESIGN.md).
    const ort = wanted.includes('webgpu') ? undefined : await import('onnxruntime-web/wasm');
    backends.push(transformersBackend({ device: 'wasm', env, ...(ort ? { ort } : {}) }));
  }
  if (wanted.includes('webgpu')) backends.push(transformersBackend({ device: 'webgpu', env }));
  const service = new InferenceService({
    source: weightStoreSource(store, cfg.dbName ?? 'weights'),
    backends,
    ...(cfg.maxSequences ? { maxSequences: cfg.maxSequences } : {}),
    ...(cfg.maxPositions ? { maxPositions: cfg.maxPositions } : {}),
    ...(cfg.memoryBudgetBytes ? { memoryBudgetBytes: cfg.memoryBudgetBytes } : {}),
    ...(cfg.choose ? { choose: cfg.choose } : {}),
  });
  exposeInference(service);
}

main().catch((err: unknown) => reportInferenceFailure(err));
