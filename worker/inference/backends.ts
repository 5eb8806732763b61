/**
 * The two backends a node can run a model on, as `InferenceBackend`s for the service:
 *  - the engine (our WGSL kernels) on WebGPU: the Llama family from safetensors;
 *  - transformers.js on onnxruntime (WebGPU or WASM in the browser, CPU in Node): any decoder it
 *    supports, from `onnx/model.onnx`.
 */
import { AppError } from '../../shared';
import { EngineDecoder, GpuLoraAdapter, LlamaModel, type GpuContext } from '../engine';
import { loadAdapter, loadModelFolder, SUPPORTED_ARCHITECTURES, type LlamaConfig } from '../model';
import type { InferenceBackend, LoadRequest } from './service';
import { trainOnEngine } from './train';
import { loadTransformersDecoder, type TransformersDevice, type TransformersEnvOptions } from './transformers';
import type { AdapterHost, BatchDecoder } from './types';

export interface EngineBackendOptions {
  /**
   * The GPU to load on. Called for every load, so it can hand out a new context after the device
   * was lost (a model of the old one then reloads from the weight store onto the new one).
   */
  gpu: () => Promise<GpuContext>;
}

function architectureOf(config: Record<string, unknown>): string | null {
  const a = config.architectures;
  return Array.isArray(a) && typeof a[0] === 'string' ? a[0] : null;
}

function hasSafetensors(req: LoadRequest): boolean {
  return req.files.paths.includes('model.safetensors') || req.files.paths.includes('model.safetensors.index.json');
}

export function engineBackend(opts: EngineBackendOptions): InferenceBackend {
  return {
    backend: 'engine',
    device: 'webgpu',
    unsupported(req) {
      const arch = architectureOf(req.config);
      if (!arch || !(SUPPORTED_ARCHITECTURES as readonly string[]).includes(arch)) {
        return `the engine runs ${SUPPORTED_ARCHITECTURES.join(', ')}, not ${arch ?? 'a model without architectures'}`;
      }
      if (!hasSafetensors(req)) return 'the engine reads safetensors and the folder has none';
      return null;
    },
    async load(req): Promise<BatchDecoder> {
      const ctx = await opts.gpu();
      const { config, weights, fingerprint } = await loadModelFolder((p) => req.files.readFile(p));
      const model = await LlamaModel.load(ctx, config, weights);
      let decoder: EngineDecoder;
      try {
        decoder = await EngineDecoder.create(model, { maxSlots: req.maxSlots, maxPositions: Math.min(req.maxPositions, config.maxPositions) });
      } catch (err) {
        model.release();
        throw err;
      }
      return withAdapters(decoder, ctx, config, fingerprint);
    },
    async train(files, req, onStep, signal) {
      return trainOnEngine(await opts.gpu(), files, req, onStep, signal);
    },
  };
}

/** The engine decoder plus PEFT adapters loaded onto its GPU, switched per row of a step. */
function withAdapters(d: EngineDecoder, ctx: GpuContext, config: LlamaConfig, fingerprint: string): BatchDecoder {
  const held = new Map<string, GpuLoraAdapter>();
  const adapters: AdapterHost = {
    has: (name) => held.has(name),
    names: () => [...held.keys()],
    async load(name, files) {
      if (held.has(name)) return;
      const a = loadAdapter(files, config, fingerprint);
      const gpu = GpuLoraAdapter.fromPairs(ctx, config, a.settings, a.weights);
      d.addAdapter(name, gpu);
      held.set(name, gpu);
    },
    remove(name) {
      const a = held.get(name);
      if (!a) return;
      d.removeAdapter(name);
      a.release();
      held.delete(name);
    },
  };
  return {
    backend: d.backend,
    device: d.device,
    vocabSize: d.vocabSize,
    maxSlots: d.maxSlots,
    maxPositions: d.maxPositions,
    get memoryBytes() {
      return d.memoryBytes;
    },
    prefill: (entries) => d.prefill(entries),
    decode: (entries) => d.decode(entries),
    free: (slot) => d.free(slot),
    async release() {
      for (const name of [...held.keys()]) adapters.remove(name);
      await d.release();
    },
    adapters,
  };
}

export interface TransformersBackendOptions {
  device: TransformersDevice;
  /** transformers.js's env (set on the first load): a local folder in Node, the coordinator plus the weight store in the page. */
  env: TransformersEnvOptions;
  /** The onnxruntime module to use (onnxruntime-web/wasm in a WASM worker). */
  ort?: object;
  dtype?: string;
}

export function transformersBackend(opts: TransformersBackendOptions): InferenceBackend {
  const dtype = opts.dtype ?? 'fp32';
  const file = dtype === 'fp32' ? 'onnx/model.onnx' : `onnx/model_${dtype}.onnx`;
  return {
    backend: 'transformers',
    // Node's onnxruntime runs on the CPU, as the page's WASM EP does.
    device: opts.device === 'webgpu' ? 'webgpu' : 'wasm',
    unsupported(req) {
      if (!req.files.paths.includes(file)) return `transformers.js needs ${file} and the folder has none`;
      return null;
    },
    async load(req): Promise<BatchDecoder> {
      const onnxBytes = req.files.paths.filter((p) => p.startsWith('onnx/')).length;
      if (onnxBytes === 0) throw new AppError('MODEL_FILE_MISSING', `${req.name} has no onnx/ folder.`);
      return loadTransformersDecoder({
        modelId: req.name,
        device: opts.device,
        maxSlots: req.maxSlots,
        maxPositions: req.maxPositions,
        dtype,
        env: opts.env,
        ...(opts.ort !== undefined ? { ort: opts.ort } : {}),
      });
    },
  };
}
