/**
 * The reference side in the page: onnxruntime-web on the tiny model's ONNX (WebGPU EP when it
 * works here, else WASM) and on a one-node MatMul model, with timings measured the same way as
 * the engine's (inputs from the CPU, output read back, best of the runs).
 */
import * as ort from 'onnxruntime-web';

export type OrtEp = 'webgpu' | 'wasm';

export interface OrtMatmulBench {
  gflops: number;
  ms: number;
  ep: OrtEp;
  /** Why the WebGPU EP was not used. */
  error?: string;
  residentMs?: number;
  residentGflops?: number;
  residentError?: string;
  /** GPU time of the MatMul kernel from ORT's WebGPU profiler (timestamp queries), when it reports one. */
  kernelMs?: number;
  kernelGflops?: number;
}

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

  /**
   * A one-node MatMul model on the WebGPU EP, timed two ways: `ms` with A, B from the CPU and C read
   * back (wall clock); `residentMs` with A, B already in GPU buffers and C left on the GPU, until the
   * queue is done (the kernel plus ORT's dispatch overhead). WASM EP when WebGPU fails.
   */
  async benchMatmul(onnxUrl: string, size: number, runs = 3): Promise<OrtMatmulBench> {
    const bytes = await fetchBytes(onnxUrl);
    const dataA = Float32Array.from({ length: size * size }, (_, i) => ((i * 7) % 13) / 13 - 0.5);
    const dataB = Float32Array.from({ length: size * size }, (_, i) => ((i * 5) % 11) / 11 - 0.5);
    const a = new ort.Tensor('float32', dataA, [size, size]);
    const b = new ort.Tensor('float32', dataB, [size, size]);
    const flops = 2 * size ** 3;
    let session: ort.InferenceSession;
    try {
      session = await ort.InferenceSession.create(bytes, { executionProviders: ['webgpu'], logSeverityLevel: 3 });
      await session.run({ A: a, B: b });
    } catch (err) {
      const error = err instanceof Error ? err.message : String(err);
      session = await ort.InferenceSession.create(bytes, { executionProviders: ['wasm'], logSeverityLevel: 3 });
      const ms = await bestMs(runs, () => session.run({ A: a, B: b }));
      await session.release();
      return { gflops: flops / (ms / 1000) / 1e9, ms, ep: 'wasm', error };
    }
    const ms = await bestMs(runs, () => session.run({ A: a, B: b }));
    await session.release();
    const result: OrtMatmulBench = { gflops: flops / (ms / 1000) / 1e9, ms, ep: 'webgpu' };
    try {
      const resident = await ort.InferenceSession.create(bytes, { executionProviders: ['webgpu'], logSeverityLevel: 3, preferredOutputLocation: 'gpu-buffer' });
      const device = await ort.env.webgpu.device;
      const gpuTensor = (data: Float32Array<ArrayBuffer>): { t: ort.Tensor; buf: GPUBuffer } => {
        const buf = device.createBuffer({ size: data.byteLength, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST });
        device.queue.writeBuffer(buf, 0, data);
        return { t: ort.Tensor.fromGpuBuffer(buf, { dataType: 'float32', dims: [size, size] }), buf };
      };
      const ga = gpuTensor(dataA);
      const gb = gpuTensor(dataB);
      // Kernel time from ORT's own WebGPU profiler (timestamp queries), comparable with ours.
      const kernelNs: number[] = [];
      ort.env.webgpu.profiling = { mode: 'default', ondata: (d) => kernelNs.push(Number(d.endTime) - Number(d.startTime)) };
      let residentMs: number;
      try {
        residentMs = await bestMs(runs, async () => {
          const out = await resident.run({ A: ga.t, B: gb.t });
          await device.queue.onSubmittedWorkDone();
          out.C?.dispose();
        });
        // The profiler reads its queries back asynchronously: wait (bounded) for one entry per run.
        for (let i = 0; i < 100 && kernelNs.length < runs + 1; i++) await new Promise((r) => setTimeout(r, 20));
      } finally {
        ort.env.webgpu.profiling = { mode: 'off' };
      }
      ga.buf.destroy();
      gb.buf.destroy();
      await resident.release();
      result.residentMs = residentMs;
      result.residentGflops = flops / (residentMs / 1000) / 1e9;
      const valid = kernelNs.filter((ns) => ns > 0);
      if (valid.length) {
        result.kernelMs = Math.min(...valid) / 1e6;
        result.kernelGflops = flops / (result.kernelMs / 1000) / 1e9;
      }
    } catch (err) {
      result.residentError = err instanceof Error ? err.message : String(err);
    }
    return result;
  }
}
