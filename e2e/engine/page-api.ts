/** What e2e/engine/engine.html puts on `window.engineE2E` for the Node side (tests, bench). Types only. */
import type { MatmulBench, ModelBench, ProbeGpu, TrainReport, TrainRequest } from './engine-probe';
import type { OrtEp, OrtMatmulBench } from './ort-probe';

export interface EnginePageApi {
  /** Loads the model folder at `modelUrl` (ending in '/') in the engine worker. */
  load(modelUrl: string): Promise<ProbeGpu>;
  /** Loads the folder's onnx/model.onnx in onnxruntime-web; 'webgpu' falls back to WASM (saying why) if it fails. */
  loadOrt(modelUrl: string, ep: OrtEp): Promise<{ ep: OrtEp; fallbackReason: string | null }>;
  /** Engine (worker) and onnxruntime-web (page) logits for the same rows, and their max |Δ|. */
  compareLogits(ids: number[][]): Promise<{ maxAbsDiff: number; size: number; engineFinite: boolean }>;
  prompt(question: string): Promise<number[]>;
  train(req: TrainRequest): Promise<TrainReport>;
  bench(opts: { matmulUrl: string; size: number; rows: number; seqLen: number; runs: number }): Promise<{
    engineMatmul: MatmulBench;
    ortMatmul: OrtMatmulBench;
    engineModel: ModelBench;
    ortForward: { ms: number; tokensPerSec: number; ep: OrtEp };
  }>;
}

declare global {
  interface Window {
    engineE2E?: EnginePageApi;
  }
}
