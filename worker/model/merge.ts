/**
 * A LoRA adapter merged into its base: each adapted projection's weight becomes W + (alpha / r) · B · A (as PEFT's
 * merge_and_unload does), in float32. The base's other tensors are shared, not copied.
 */
import type { LlamaConfig, LlamaWeights } from './config';
import { linearWeightName } from './config';
import { loraKey, type LoraAdapter } from './peft';

export function mergeLora(config: LlamaConfig, weights: LlamaWeights, adapter: Pick<LoraAdapter, 'settings' | 'weights'>): LlamaWeights {
  const out: LlamaWeights = new Map(weights);
  const { r, alpha, targetModules } = adapter.settings;
  const scale = alpha / r;
  for (let layer = 0; layer < config.numLayers; layer++) {
    for (const module of targetModules) {
      const pair = adapter.weights.get(loraKey(layer, module));
      if (!pair) continue;
      const name = linearWeightName(layer, module);
      const w = weights.get(name)!;
      const [rows, cols] = w.shape as [number, number];
      const merged = Float32Array.from(w.data);
      // W[o][i] += scale · Σ_k B[o][k] · A[k][i]
      for (let o = 0; o < rows; o++) {
        const row = o * cols;
        for (let k = 0; k < r; k++) {
          const bk = scale * pair.b[o * r + k]!;
          if (bk === 0) continue;
          const ak = k * cols;
          for (let i = 0; i < cols; i++) merged[row + i]! += bk * pair.a[ak + i]!;
        }
      }
      out.set(name, { shape: w.shape, data: merged });
    }
  }
  return out;
}
