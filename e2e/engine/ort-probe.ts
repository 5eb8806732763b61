/**
 * The reference side in the page: onnxruntime-web on the tiny model's ONNX (WebGPU EP when it
 * works here, else WASM) and on a one-node MatMul model, with timings measured the same way as
 * the engine's (inputs from the CPU, output read back, best of the runs).
 */
import * as ort from 'onnxruntime-web';

export type OrtEp = 'webgpu' | 'wasm';

export interface OrtModelInfo {
  numLayers: number;
  numKvHeads: number;
  headDim: number;
}

/** Where Vite serves the package's wasm files (no CDN). */
export function configureOrt(wasmPaths: string): void {
  ort.env.wasm.wasmPaths = wasmPaths;
  ort.env.wasm.numThreads = 1;
  ort.env.logLevel = 'error';
}

async function fetchBytes(url: string): Promise<Uint8Array> {
  const res = await fetch(url);
  if (!res.ok) throw new Error(`GET ${url} answered ${res.status}`);
  return new Uint8Array(await res.arrayBuffer());
}

function decoderFeeds(ids: number[][], info: OrtModelInfo): Record<string, ort.Tensor> {
  const B = ids.length;
  const T = ids[0]!.length;
  const i64 = (rows: number[][]): ort.Tensor => new ort.Tensor('int64', BigInt64Array.from(rows.flat().map(BigInt)), [B, T]);
  const feeds: Record<string, ort.Tensor> = {
    input_ids: i64(ids),
    attention_mask: i64(ids.map((r) => r.map(() => 1))),
    position_ids: i64(ids.map((r) => r.map((_, t) => t))),
  };
  for (let l = 0; l < info.numLayers; l++) {
    for (const kind of ['key', 'value']) {
      feeds[`past_key_values.${l}.${kind}`] = new ort.Tensor('float32', new Float32Array(0), [B, info.numKvHeads, 0, info.headDim]);
    }
  }
  return feeds;
}

async function bestMs(runs: number, fn: () => Promise<unknown>): Promise<number> {
  let ms = Infinity;
  for (let i = 0; i <= runs; i++) {
    const t = performance.now();
    await fn();
    if (i > 0) ms = Math.min(ms, performance.now() - t); // run 0 warms up
  }
  return ms;
}

export class OrtProbe {
  #decoder: ort.InferenceSession | null = null;
  #info: OrtModelInfo | null = null;
  ep: OrtEp = 'wasm';
  /** Why WebGPU EP was not used, when it was asked for and failed. */
  fallbackReason: string | null = null;

  /** Loads the decoder; with `ep: 'webgpu'` falls back to WASM (recording why) if the session or a run fails. */
  async load(onnxUrl: string, info: OrtModelInfo, ep: OrtEp): Promise<OrtEp> {
    const bytes = await fetchBytes(onnxUrl);
    await this.#decoder?.release();
    this.#decoder = null;
    this.fallbackReason = null;
    this.#info = info;
    if (ep === 'webgpu') {
      try {
        const s = await ort.InferenceSession.create(bytes, { executionProviders: ['webgpu'], logSeverityLevel: 3 });
        await s.run(decoderFeeds([[1, 2, 3]], info));
        this.#decoder = s;
        this.ep = 'webgpu';
        return this.ep;
      } catch (err) {
        this.fallbackReason = err instanceof Error ? err.message : String(err);
      }
    }
    this.#decoder = await ort.InferenceSession.create(bytes, { executionProviders: ['wasm'], logSeverityLevel: 3 });
    this.ep = 'wasm';
    return this.ep;
  }

  async logits(ids: number[][]): Promise<Float32Array> {
    if (!this.#decoder || !this.#info) throw new Error('load() first');
    const out = await this.#decoder.run(decoderFeeds(ids, this.#info));
    return out.logits!.data as Float32Array;
  }

  async benchForward(ids: number[][], runs = 3): Promise<{ ms: number; tokensPerSec: number }> {
    const ms = await bestMs(runs, () => this.logits(ids));
    return { ms, tokensPerSec: (ids.length * ids[0]!.length) / (ms / 1000) };
  }

  /** A one-node MatMul model on the WebGPU EP: A, B from the CPU, C read back. */
  async benchMatmul(onnxUrl: string, size: number, runs = 3): Promise<{ gflops: number; ms: number; ep: OrtEp; error?: string }> {
    const bytes = await fetchBytes(onnxUrl);
    const a = new ort.Tensor('float32', Float32Array.from({ length: size * size }, (_, i) => ((i * 7) % 13) / 13 - 0.5), [size, size]);
    const b = new ort.Tensor('float32', Float32Array.from({ length: size * size }, (_, i) => ((i * 5) % 11) / 11 - 0.5), [size, size]);
    let session: ort.InferenceSession;
    let ep: OrtEp = 'webgpu';
    let error: string | undefined;
    try {
      session = await ort.InferenceSession.create(bytes, { executionProviders: ['webgpu'], logSeverityLevel: 3 });
      await session.run({ A: a, B: b });
    } catch (err) {
      error = err instanceof Error ? err.message : String(err);
      ep = 'wasm';
      session = await ort.InferenceSession.create(bytes, { executionProviders: ['wasm'], logSeverityLevel: 3 });
    }
    const ms = await bestMs(runs, () => session.run({ A: a, B: b }));
    await session.release();
    return { gflops: (2 * size ** 3) / (ms / 1000) / 1e9, ms, ep, ...(error ? { error } : {}) };
  }
}
