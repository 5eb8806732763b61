/**
 * `npm run bench -- training [--size 512] [--rows 4] [--seq 64] [--runs 3] [--pool-steps 200]`
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
 * - poolTrainTokensPerSec / bareTrainTokensPerSec: one `train` task through the pool (a coordinator on
 *   loopback, a dataset uploaded, a headless node on the engine), the same run measured twice: its train
 *   tokens over the task's wall time from submit to the journaled result (dataset fetch, model load, adapter
 *   upload and registry write included), and over the training loop's own time on the node; the ratio is
 *   what the pool costs around the loop (goal >= 0.9).
 * - multiAdapterBatch8Speedup: on the same pool, eight generate tasks over eight adapters of the base, one
 *   after another ÷ all at once (one continuous batch; goal >= 3), beside oneAdapterBatch8Speedup (the same
 *   over one adapter); adapterSwitchMs: a one-token request's time on the node with an adapter it did not hold yet
 *   (fetched from the registry, loaded on the GPU) minus the same request once it does (goal < 5 ms).
 * - resumeLostSteps: the steps lost when the page training a task (a checkpoint every 10 steps) is closed after
 *   its first checkpoint, the task going on on a second page from it (goal: at most one interval).
 * Every figure is the best of `runs` after a warm-up run. Bounded: well under 3 minutes.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { callPage, openEnginePage } from '../e2e/engine';
import { E2ePool } from '../e2e/pool';
import { untilCheckpoint } from '../e2e/tasks';
import type { GenerateResult, TaskRecord, TrainResult } from '../shared';
import { randomLoraPairs } from '../worker/engine';
import { loadModelFolder, mulberry32, saveAdapter } from '../worker/model';
import { makeTinyModel } from '../tools/tiny-model';

const GOALS = { matmulRatio: 1, forwardRatio: 1, trainStepOverForward: 3.5, poolOverBareTraining: 0.9, multiAdapterBatch8Speedup: 3, adapterSwitchMs: 5 };

interface AdapterFigures {
  /** Eight generate tasks over eight adapters: one after another ÷ all at once (one continuous batch). */
  multiAdapterBatch8Speedup: number;
  /** The same eight requests over one adapter: one after another ÷ all at once, for comparison. */
  oneAdapterBatch8Speedup: number;
  /** Median over the adapters of: a request's node time with an adapter the node did not hold − once it holds it. */
  adapterSwitchMs: number;
  /** The same request's node time once the adapter is on the GPU (median). */
  residentRequestMs: number;
}

/** Ends a task (long-polls, bounded) and answers its record. */
async function ended(url: string, id: string): Promise<TaskRecord> {
  let rec: TaskRecord | null = null;
  for (let i = 0; i < 20 && !(rec && ['succeeded', 'failed', 'dead', 'cancelled'].includes(rec.state)); i++) {
    rec = (await (await fetch(`${url}/v1/tasks/${id}/wait?timeoutMs=30000`)).json()) as TaskRecord;
  }
  if (rec?.state !== 'succeeded') throw new Error(`a bench task ended ${rec?.state}: ${JSON.stringify(rec?.error)}`);
  return rec;
}

async function submit(url: string, specs: unknown[]): Promise<string[]> {
  const res = await fetch(`${url}/v1/tasks`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ tasks: specs }) });
  const body = (await res.json()) as { ids?: string[] };
  if (!body.ids) throw new Error(`submit refused: ${JSON.stringify(body)}`);
  return body.ids;
}

/**
 * Eight adapters of the pool's base in the registry (random rank-8 weights on every projection), then generate
 * tasks over them: the switch to an adapter the node does not hold yet (fetched from the registry through the
 * weight store and loaded on the GPU) against the same request once it does, and eight requests over eight
 * adapters one after another against all at once.
 */
async function adapterFigures(url: string, baseDir: string): Promise<AdapterFigures> {
  const folder = await loadModelFolder((p) => readFile(join(baseDir, ...p.split('/'))).then((b) => new Uint8Array(b)));
  const names = Array.from({ length: 8 }, (_, i) => `bench-${i}`);
  for (const [i, name] of names.entries()) {
    const rng = mulberry32(100 + i);
    const targets = ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'] as const;
    const weights = randomLoraPairs(folder.config, 8, targets, () => (rng.next() - 0.5) * 0.2);
    const files = saveAdapter({ settings: { r: 8, alpha: 16, dropout: 0, targetModules: [...targets] }, baseModel: 'tiny-llama', baseFingerprint: folder.fingerprint, weights }, folder.config);
    const put = await fetch(`${url}/v1/adapters/tiny-llama/${name}`, { method: 'PUT', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ config: files.configJson, weights: Buffer.from(files.safetensors).toString('base64') }) });
    if (put.status !== 201) throw new Error(`adapter upload: ${put.status} ${await put.text()}`);
  }
  const gen = (adapter: string | null, maxNewTokens = 32) => ({ kind: 'generate', payload: { model: 'tiny-llama', prompt: 'once upon a time there was', maxNewTokens, ...(adapter ? { adapter } : {}) } });
  // One new token: the request is the adapter's switch plus one short step, so the decode's noise (±30 ms over 32
  // tokens on a shared machine) does not drown a switch of a few milliseconds.
  const nodeMs = async (adapter: string): Promise<number> => ((await ended(url, (await submit(url, [gen(adapter, 1)]))[0]!)).result as GenerateResult).durationMs;
  await ended(url, (await submit(url, [gen(null)]))[0]!); // the base is loaded
  const switchMs: number[] = [];
  const residentMs: number[] = [];
  for (const name of names) {
    const first = await nodeMs(name); // not held: fetched, loaded on the GPU
    const again = await nodeMs(name);
    switchMs.push(first - again);
    residentMs.push(again);
  }
  process.stderr.write(`adapter switch (ms, per adapter): ${switchMs.map((v) => v.toFixed(1)).join(' ')}; resident: ${residentMs.map((v) => v.toFixed(0)).join(' ')}\n`);
  const timed = async (specs: unknown[][]): Promise<number> => {
    const t0 = performance.now();
    for (const group of specs) await Promise.all((await submit(url, group)).map((id) => ended(url, id)));
    return performance.now() - t0;
  };
  const best = async (fn: () => Promise<number>): Promise<number> => Math.min(await fn(), await fn(), await fn());
  const many = names.map((n) => gen(n));
  const one = names.map(() => gen(names[0]!));
  const manySequential = await best(() => timed(many.map((s) => [s])));
  const manyBatched = await best(() => timed([many]));
  const oneSequential = await best(() => timed(one.map((s) => [s])));
  const oneBatched = await best(() => timed([one]));
  const med = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor((xs.length - 1) / 2)]!;
  return { multiAdapterBatch8Speedup: manySequential / manyBatched, oneAdapterBatch8Speedup: oneSequential / oneBatched, adapterSwitchMs: med(switchMs), residentRequestMs: med(residentMs) };
}

/** One train task through a pool on loopback: its tokens per second end to end and inside the loop; then the adapter figures on the same pool. */
async function poolTraining(opts: { steps: number; rows: number; seqLen: number; log: (l: string) => void }): Promise<{ pool: number; bare: number; wallMs: number; loopMs: number; trainTokens: number; steps: number; adapters: AdapterFigures }> {
  const pool = await E2ePool.start('bench-pool-train-', {}, async (dir) => {
    await makeTinyModel({ seed: 1, dir: join(dir, 'models', 'tiny-llama') });
    return { modelsDir: join(dir, 'models') };
  });
  const url = pool.url;
  try {
    await pool.join({ count: 1, query: { backends: 'engine', workers: '1' }, log: opts.log });
    const lines = Array.from({ length: 4 * opts.rows }, (_, i) => JSON.stringify({ messages: [{ role: 'user', content: `Question ${i}: what comes after ${i}?` }, { role: 'assistant', content: `After ${i} comes ${i + 1}, and then ${i + 2}.` }] }));
    const up = await fetch(`${url}/v1/datasets`, { method: 'POST', headers: { 'content-type': 'application/x-ndjson' }, body: lines.join('\n') });
    const { sha256 } = (await up.json()) as { sha256: string };
    const payload = { model: 'tiny-llama', adapterName: 'bench', dataset: `sha256:${sha256}`, lora: { rank: 8, alpha: 16, targetModules: ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'] }, steps: opts.steps, batchSize: opts.rows, seqLen: opts.seqLen, learningRate: 1e-3, seed: 1 };
    const t0 = performance.now();
    const [id] = await submit(url, [{ kind: 'train', payload }]);
    const rec = await ended(url, id!);
    const wallMs = performance.now() - t0;
    const r = rec.result as TrainResult;
    opts.log('Eight adapters: switch and batch…');
    const adapters = await adapterFigures(url, join(pool.dir, 'models', 'tiny-llama'));
    return { pool: (r.trainTokens * 1000) / wallMs, bare: r.tokensPerSec, wallMs, loopMs: (r.trainTokens * 1000) / r.tokensPerSec, trainTokens: r.trainTokens, steps: r.steps, adapters };
  } finally {
    await pool.close();
  }
}

/**
 * resumeLostSteps: a train task (checkpoint every `every` steps) on a pool of two node pages; the page holding it is
 * closed once its first checkpoint reached the coordinator, and the task goes on from that checkpoint on the other
 * page: the steps lost are those the first page had reported beyond the checkpoint the second went on from.
 */
async function resumeFigures(opts: { steps: number; every: number; rows: number; seqLen: number; log: (l: string) => void }): Promise<{ resumeLostSteps: number; resumedFrom: number; checkpointEvery: number }> {
  const pool = await E2ePool.start('bench-resume-', { nodeGraceMs: 300, retryBaseMs: 1 }, async (dir) => {
    await makeTinyModel({ seed: 1, dir: join(dir, 'models', 'tiny-llama') });
    return { modelsDir: join(dir, 'models') };
  });
  try {
    const nodes = await pool.join({ count: 2, query: { backends: 'engine', workers: '1' }, log: opts.log });
    const lines = Array.from({ length: 4 * opts.rows }, (_, i) => JSON.stringify({ messages: [{ role: 'user', content: `What follows ${i}?` }, { role: 'assistant', content: `${i + 1} follows ${i}.` }] }));
    const payload = { model: 'tiny-llama', adapterName: 'resume', dataset: lines.join('\n'), lora: { rank: 8, alpha: 16, targetModules: ['q_proj', 'v_proj'] }, steps: opts.steps, checkpointEvery: opts.every, batchSize: opts.rows, seqLen: opts.seqLen, learningRate: 1e-3, seed: 1 };
    const [id] = await submit(pool.url, [{ kind: 'train', maxAttempts: 3, payload }]);
    const seen = await untilCheckpoint(pool.url, id!);
    const holder = ((await (await fetch(`${pool.url}/v1/tasks/${id}`)).json()) as TaskRecord).nodeId!;
    await nodes.pages[nodes.nodeIds.indexOf(holder)]!.close();
    const rec = await ended(pool.url, id!);
    const r = rec.result as TrainResult;
    if (rec.state !== 'succeeded' || r.resumedFrom === undefined) throw new Error(`the resumed task ended ${rec.state}, resumedFrom ${r?.resumedFrom}`);
    return { resumeLostSteps: Math.max(seen.lastStep, seen.checkpointStep) - r.resumedFrom, resumedFrom: r.resumedFrom, checkpointEvery: opts.every };
  } finally {
    await pool.close();
  }
}

function positive(name: string, v: string | undefined, d: number): number {
  if (v === undefined) return d;
  const n = Number(v);
  if (!Number.isSafeInteger(n) || n <= 0) throw new Error(`--${name} must be a positive integer (got ${v})`);
  return n;
}

export async function run(args: string[]): Promise<Record<string, unknown>> {
  const { values } = parseArgs({ args, options: { size: { type: 'string' }, rows: { type: 'string' }, seq: { type: 'string' }, runs: { type: 'string' }, 'pool-steps': { type: 'string' } } });
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
    log('One train task through a pool on loopback…');
    const pool = await poolTraining({ steps: positive('pool-steps', values['pool-steps'], 200), rows, seqLen, log });
    log('A train task whose node is closed after a checkpoint, resumed on another…');
    const resume = await resumeFigures({ steps: 100, every: 10, rows, seqLen, log });
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
      poolTrainTokensPerSec: round(pool.pool),
      bareTrainTokensPerSec: round(pool.bare),
      poolOverBareTraining: round(pool.pool / pool.bare),
      multiAdapterBatch8Speedup: round(pool.adapters.multiAdapterBatch8Speedup),
      oneAdapterBatch8Speedup: round(pool.adapters.oneAdapterBatch8Speedup),
      adapterSwitchMs: round(pool.adapters.adapterSwitchMs),
      adapterResidentRequestMs: round(pool.adapters.residentRequestMs),
      resumeLostSteps: resume.resumeLostSteps,
      resumedFrom: resume.resumedFrom,
      resumeCheckpointEvery: resume.checkpointEvery,
      poolTraining: { steps: pool.steps, trainTokens: pool.trainTokens, taskWallMs: Math.round(pool.wallMs), loopMs: Math.round(pool.loopMs), shape: `${rows}x${seqLen} tokens a step` },
      goals: GOALS,
      meets: {
        matmulRatio: matmulRatio >= GOALS.matmulRatio,
        forwardRatio: r.engineModel.forwardTokensPerSec / r.ortForward.tokensPerSec >= GOALS.forwardRatio,
        trainStepOverForward: r.engineModel.trainStepOverForward <= GOALS.trainStepOverForward,
        poolOverBareTraining: pool.pool / pool.bare >= GOALS.poolOverBareTraining,
        multiAdapterBatch8Speedup: pool.adapters.multiAdapterBatch8Speedup >= GOALS.multiAdapterBatch8Speedup,
        adapterSwitchMs: pool.adapters.adapterSwitchMs < GOALS.adapterSwitchMs,
        resumeLostSteps: resume.resumeLostSteps <= resume.checkpointEvery,
      },
      seconds: round((performance.now() - t0) / 1000),
    };
    return out;
  } finally {
    await ep.close();
  }
}
