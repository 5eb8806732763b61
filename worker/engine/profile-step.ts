/**
 * Where a LoRA training step's GPU time goes, per dispatch (Node, Dawn + SwiftShader):
 *   npx tsx worker/engine/profile-step.ts [rows=4] [seq=64]
 * (scripts/test.ts's environment: VK_ICD_FILENAMES=/usr/lib/chromium/vk_swiftshader_icd.json.)
 * Prints the time per phase (wall clock) and per kernel group (timestamp queries).
 */
import type { Batch } from '../model';
import { LlamaModel } from './llama';
import { GpuLoraAdapter, LoraTrainer } from './lora';
import { createNodeGpuContext } from './node-gpu';
import { randomLlamaWeights, tinyLlamaConfig } from './random-weights';

const rows = Number(process.argv[2] ?? 4);
const T = Number(process.argv[3] ?? 64);
const ctx = await createNodeGpuContext();
const config = tinyLlamaConfig({ vocabSize: 384, hiddenSize: 64, intermediateSize: 128, numLayers: 2, numHeads: 4, numKvHeads: 2, headDim: 16, maxPositions: 256 });
const model = await LlamaModel.load(ctx, config, randomLlamaWeights(config, 1));
const ids = Array.from({ length: rows }, (_, r) => Array.from({ length: T + 1 }, (_, i) => 5 + ((r * 131 + i * 7919) % (config.vocabSize - 5))));
const batch: Batch = {
  rows,
  seqLen: T,
  inputIds: Int32Array.from(ids.flatMap((r) => r.slice(0, T))),
  targets: Int32Array.from(ids.flatMap((r) => r.slice(1))),
  lossMask: new Float32Array(rows * T).fill(1),
};
const input = ids.map((r) => r.slice(0, T));
const best = async (fn: () => Promise<unknown>, runs = 4): Promise<number> => {
  let ms = Infinity;
  for (let i = 0; i <= runs; i++) {
    const t = performance.now();
    await fn();
    if (i > 0) ms = Math.min(ms, performance.now() - t);
  }
  return ms;
};
const fwd = await best(() => model.forward(input));
const adapter = GpuLoraAdapter.create(ctx, config, { rank: 8, alpha: 16, targets: ['q_proj', 'v_proj'] });
const trainer = new LoraTrainer(model, adapter, { lr: 1e-3 });
const evalMs = await best(() => model.evalLoss(batch));
const lg = await best(() => model.lossAndGrad(batch, 1));
const step = await best(() => trainer.step(batch));
console.log(JSON.stringify({ forwardMs: fwd, forwardLossMs: evalMs, lossAndGradMs: lg, stepMs: step, stepOverForward: step / fwd }));
if (process.env.PROFILE !== '0') {
  const prof = await ctx.profile(async () => void (await trainer.step(batch)));
  const groups = new Map<string, { n: number; ms: number }>();
  let total = 0;
  for (const p of prof) {
    const g = groups.get(p.label) ?? { n: 0, ms: 0 };
    g.n++;
    g.ms += p.ms;
    total += p.ms;
    groups.set(p.label, g);
  }
  console.log(`dispatches ${prof.length}, GPU total ${total.toFixed(1)} ms`);
  for (const [k, v] of [...groups].sort((a, b) => b[1].ms - a[1].ms)) console.log(`${v.ms.toFixed(2).padStart(8)} ms ${String(v.n).padStart(4)}x  ${k}`);
}
adapter.release();
model.release();
ctx.destroy();
