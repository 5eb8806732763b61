/** The Chromium engine checks' Node side, shared with bench/training.ts. */
export { openEnginePage, callPage, type EnginePage, type OpenOptions } from './harness';
export { matmulOnnx } from './matmul-onnx';
export type { EnginePageApi } from './page-api';
export type { MatmulBench, ModelBench, ProbeGpu, TrainReport, TrainRequest } from './engine-probe';
