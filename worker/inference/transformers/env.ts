/**
 * transformers.js's global `env`, set once per worker (or per Node process) for offline loading:
 * from a local folder in Node, from the coordinator through a custom cache in the browser.
 */
import type { env as TransformersEnv } from '@huggingface/transformers';

type TransformersLib = typeof import('@huggingface/transformers');

/** What `env.customCache` needs: the Web Cache API's `match` and `put` (the IndexedDB weight store offers them). */
export interface ModelFileCache {
  match(key: string): Promise<Response | string | undefined>;
  put(key: string, response: Response): Promise<void>;
}

export interface TransformersEnvOptions {
  /** Node: the folder that holds model folders (`<localModelPath>/<modelId>/config.json`). */
  localModelPath?: string;
  /** Browser: the coordinator's URL that serves model folders (`<remoteHost><modelId>/<file>`). */
  remoteHost?: string;
  /** How a file's path is formed under `remoteHost`; default `'{model}/'`. */
  remotePathTemplate?: string;
  /** Browser: where fetched files are kept (the IndexedDB store); nothing is cached when absent. */
  cache?: ModelFileCache;
  /** Node: transformers.js's own file cache folder (it writes nothing there for local models). */
  cacheDir?: string;
  /** Browser: where the coordinator serves onnxruntime-web's `.mjs` and `.wasm` files (the default is a CDN). */
  wasmPaths?: string;
  /** Browser WASM EP threads; fixed once onnxruntime-web starts, so one worker per setting. */
  numThreads?: number;
}

let libPromise: Promise<TransformersLib> | null = null;

/**
 * Imports transformers.js once. `ort`, when given on the first call, is the onnxruntime module it must use
 * (in a WASM worker: `await import('onnxruntime-web/wasm')`, whose WASM EP is about twice as fast as the
 * main bundle's JSEP build); transformers.js picks it up from `globalThis[Symbol.for('onnxruntime')]`.
 */
export function transformersLib(ort?: object): Promise<TransformersLib> {
  if (libPromise === null) {
    const key = Symbol.for('onnxruntime');
    const g = globalThis as Record<symbol, unknown>;
    if (ort !== undefined && g[key] === undefined) g[key] = ort;
    libPromise = import('@huggingface/transformers');
  }
  return libPromise;
}

/** True when transformers.js runs on an onnxruntime module handed in through `transformersLib(ort)`. */
export function usesInjectedOrt(): boolean {
  return (globalThis as Record<symbol, unknown>)[Symbol.for('onnxruntime')] !== undefined;
}

/** Sets transformers.js's `env` for offline loading. Call once per worker before the first load. */
export function configureTransformersEnv(env: typeof TransformersEnv, options: TransformersEnvOptions): void {
  if (options.localModelPath !== undefined) {
    env.allowLocalModels = true;
    env.localModelPath = options.localModelPath.endsWith('/') ? options.localModelPath : options.localModelPath + '/';
  } else {
    env.allowLocalModels = false;
  }
  if (options.remoteHost !== undefined) {
    env.allowRemoteModels = true;
    env.remoteHost = options.remoteHost.endsWith('/') ? options.remoteHost : options.remoteHost + '/';
    env.remotePathTemplate = options.remotePathTemplate ?? '{model}/';
  } else {
    env.allowRemoteModels = false;
  }
  env.useBrowserCache = false;
  if (options.cache !== undefined) {
    env.useCustomCache = true;
    env.customCache = options.cache;
  } else {
    env.useCustomCache = false;
    env.customCache = null;
  }
  if (options.cacheDir !== undefined) env.cacheDir = options.cacheDir;
  const wasm = env.backends.onnx.wasm;
  if (wasm !== undefined) {
    if (options.wasmPaths !== undefined) wasm.wasmPaths = options.wasmPaths;
    if (options.numThreads !== undefined) wasm.numThreads = options.numThreads;
  }
}
