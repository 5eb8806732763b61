/**
 * `npm run bench -- training [--size 512] [--rows 4] [--seq 64] [--runs 3]`
 *
 * Training-side speed in headless Chromium (SwiftShader WebGPU here), engine and onnxruntime-web in
 * the same page and run (e2e/engine/engine.html):
 * - matmulGflops: our best matmul config (chosen by the engine's benchMatmul), fp32 size³, A and B
 *   in GPU buffers, wall clock from recording to the queue being done;
 * - ortMatmulGflops: onnxruntime-web WebGPU EP on a one-node MatMul ONNX, inputs and output in GPU
 *   buffers, timed the same way; matmulRatio = matmulGflops / ortMatmulGflops. The *Wall* figures add
 *   the upload of A, B and the read-back of C on both sides. matmulTimestampGflops is benchMatmul's
 *   timestamp-query figure (A·Bᵀ). It used to read 3-4x above wall clock because the wall-clock probe
 *   multiplies A·B, which had only a scalar kernel; A·B now has a vec4 kernel and the figures agree
 *   within noise. The ratio uses wall clock;
 * - forwardTokensPerSec / ortForwardTokensPerSec: the tiny Llama, rows×seq tokens, logits read back;
 * - trainTokensPerSec, trainStepOverForward: one LoRA step (forward, loss, backward, AdamW) vs the forward.
 * Every figure is the best of `runs` after a warm-up run. Bounded: well under 3 minutes.
 */
import { parseArgs } from 'node:util';
import { callPage, openEnginePage } from '../e2e/engine';

const GOALS = { matmulRatio: 1, forwardRatio: 1, trainStepOverForward: 3.5 };

function positive(name: string, v: string | undefined, d: number): number {
  if (v === undefined) return d;
  const n = Number(v);
  if (!Number.isSafeInteger(n) || n <= 0) throw new Error(`--${name} must be a positive integer (got ${v})`);
  return n;
}

export async function run(args: string[]): Promise<Record<string, unknown>> {
  const { values } = parseArgs({ args, options: { size: { type: 'string' }, rows: { type: 'string' }, seq: { type: 'string' }, runs: { type: 'string' } } });
  const size = positive('size', values.size, 512);
  const rows = positive('rows', values.rows, 4);
  const seqLen = positive('seq', values.seq, 64);
  const runs = positive('runs', values.runs, 3);
  const t0 = performance.now();
  const log = (l: string): void => void process.stderr.write(`${l}\n`);
  const ep = await openEnginePage({ seed: 1, matmulSize: size, log });
  try {
    const gpu = await callPage(ep.page, 'load', ep.modelUrl);
    const ort = await callPage(ep.page, 'loadOrt', ep.modelUrl, 'webgpu');
    log(`engine on ${gpu.description} (fallback adapter: ${gpu.isFallbackAdapter}); onnxruntime-web decoder on ${ort.ep}`);
    const r = await callPage(ep.page, 'bench', { matmulUrl: ep.matmulUrl, size, rows, seqLen, runs });
    const round = (x: number, d = 3): number => Number(x.toPrecision(d + 1));
    const resident = r.ortMatmul.residentGflops !== undefined;
    const matmulRatio = resident ? r.engineMatmul.residentGflops / r.ortMatmul.residentGflops! : r.engineMatmul.wallGflops / r.ortMatmul.gflops;
    const out: Record<string, unknown> = {
      bench: 'training',
      device: `${gpu.description}${gpu.isFallbackAdapter ? ' (fallback adapter)' : ''}`,
      matmulShape: `${size}x${size}x${size} fp32`,
      matmulGflops: round(r.engineMatmul.residentGflops),
      matmulConfig: r.engineMatmul.best,
      matmulTimestampGflops: round(r.engineMatmul.gflops),
      matmulTimestampPerConfigGflops: Object.fromEntries(Object.entries(r.engineMatmul.perConfig).map(([k, v]) => [k, round(v)])),
      matmulWallGflops: round(r.engineMatmul.wallGflops),
      ortMatmulGflops: round(r.ortMatmul.residentGflops ?? r.ortMatmul.gflops),
      ...(r.ortMatmul.kernelGflops !== undefined ? { ortMatmulProfilerGflops: round(r.ortMatmul.kernelGflops) } : {}),
      ortMatmulWallGflops: round(r.ortMatmul.gflops),
      ortMatmulEp: r.ortMatmul.ep,
      ...(r.ortMatmul.error ? { ortMatmulWebgpuError: r.ortMatmul.error } : {}),
      ...(r.ortMatmul.residentError ? { ortMatmulResidentError: r.ortMatmul.residentError } : {}),
      matmulRatio: round(matmulRatio),
      matmulMethod: resident
        ? 'matmulGflops / ortMatmulGflops: A, B already in GPU buffers, C left on the GPU, wall clock from recording to the queue being done, best of the runs, both sides. *Wall*: plus upload of A, B and read-back of C. matmulTimestampGflops: the engine benchMatmul (timestamp queries); ortMatmulProfilerGflops: ORT WebGPU profiler.'
        : 'wall clock with upload and read-back on both sides (the GPU-resident onnxruntime-web run failed, see ortMatmulResidentError)',
      matmulWallRatio: round(r.engineMatmul.wallGflops / r.ortMatmul.gflops),
      forwardShape: `${rows}x${seqLen} tokens, tiny Llama (2 layers, hidden 64, vocab 384)`,
      forwardTokensPerSec: round(r.engineModel.forwardTokensPerSec),
      ortForwardTokensPerSec: round(r.ortForward.tokensPerSec),
      ortForwardEp: r.ortForward.ep,
      ...(ort.fallbackReason ? { ortForwardWebgpuError: ort.fallbackReason } : {}),
      forwardRatio: round(r.engineModel.forwardTokensPerSec / r.ortForward.tokensPerSec),
      trainTokensPerSec: round(r.engineModel.trainTokensPerSec),
      trainStepMs: round(r.engineModel.trainStepMs),
      forwardMs: round(r.engineModel.forwardMs),
      trainBreakdownMs: { forwardAndLoss: round(r.engineModel.lossOnlyMs), forwardLossBackward: round(r.engineModel.lossAndGradMs), fullStep: round(r.engineModel.trainStepMs) },
      trainStepOverForward: round(r.engineModel.trainStepOverForward),
      adapter: r.engineModel.adapter,
      goals: GOALS,
      meets: {
        matmulRatio: matmulRatio >= GOALS.matmulRatio,
        forwardRatio: r.engineModel.forwardTokensPerSec / r.ortForward.tokensPerSec >= GOALS.forwardRatio,
        trainStepOverForward: r.engineModel.trainStepOverForward <= GOALS.trainStepOverForward,
      },
      seconds: round((performance.now() - t0) / 1000),
    };
    return out;
  } finally {
    await ep.close();
  }
}
