/**
 * Random Llama weights for any config (seeded, normal × std, norms around 1): for tests and
 * benchmarks that need a model without files. Real models come from worker/model's loaders.
 */
import { linearShape, llamaWeightShapes, loraKey, mulberry32, type LinearModule, type LlamaConfig, type LlamaWeights, type LoraPair } from '../model';

export function randomLlamaWeights(config: LlamaConfig, seed = 1, std = 0.08): LlamaWeights {
  const rng = mulberry32(seed);
  const out: LlamaWeights = new Map();
  for (const [name, shape] of llamaWeightShapes(config)) {
    const n = shape.reduce((a, b) => a * b, 1);
    const isNorm = name.endsWith('norm.weight');
    const data = Float32Array.from({ length: n }, () => (isNorm ? 1 + 0.1 * rng.normal() : std * rng.normal()));
    out.set(name, { shape: [...shape], data });
  }
  return out;
}

/**
 * LoRA pairs of rank `r` on `targets` of every layer, each value drawn from `sample` (layer by layer, module by
 * module, A before B), keyed by `loraKey`: for tests and benchmarks that need adapters without training them.
 */
export function randomLoraPairs(config: LlamaConfig, r: number, targets: readonly LinearModule[], sample: () => number): Map<string, LoraPair> {
  const out = new Map<string, LoraPair>();
  for (let l = 0; l < config.numLayers; l++) {
    for (const m of targets) {
      const s = linearShape(config, m);
      out.set(loraKey(l, m), { a: Float32Array.from({ length: r * s.in }, sample), b: Float32Array.from({ length: s.out * r }, sample) });
    }
  }
  return out;
}

/** A small Llama config; override any field. */
export function tinyLlamaConfig(over: Partial<LlamaConfig> = {}): LlamaConfig {
  return {
    architecture: 'LlamaForCausalLM',
    modelType: 'llama',
    vocabSize: 64,
    hiddenSize: 32,
    intermediateSize: 48,
    numLayers: 2,
    numHeads: 4,
    numKvHeads: 2,
    headDim: 8,
    rmsNormEps: 1e-5,
    ropeTheta: 10000,
    maxPositions: 64,
    tieWordEmbeddings: false,
    attentionBias: false,
    bosTokenId: 1,
    eosTokenIds: [2],
    padTokenId: 0,
    ...over,
  };
}
