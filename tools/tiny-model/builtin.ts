/**
 * The models `npm start` serves and the tests and the demo use: every one generated
 * deterministically from its seed, in safetensors and ONNX from the same weights.
 */
import { join } from 'node:path';
import type { ModelManifest } from '../../worker/model';
import type { TinyModelOptions } from './generate';
import { currentManifest, makeTinyModel } from './make';

export interface BuiltinModel {
  /** Folder name, also the model's name on the coordinator. */
  name: string;
  /** What it is for, one line. */
  purpose: string;
  options: TinyModelOptions;
}

/** Hidden 384, 6 heads of 64 (3 kv heads), 8 layers, MLP 1024: about 13.3M parameters, 53 MB of fp32 weights. */
export const LARGE_LLAMA_SIZES = {
  hiddenSize: 384,
  intermediateSize: 1024,
  numLayers: 8,
  numHeads: 6,
  numKvHeads: 3,
  headDim: 64,
  maxPositions: 512,
} as const;

export const BUILTIN_MODELS: readonly BuiltinModel[] = [
  { name: 'tiny-llama', purpose: 'Llama for the engine and transformers.js', options: { seed: 1, arch: 'llama' } },
  { name: 'tiny-qwen2', purpose: 'Qwen2 (q/k/v biases, tied head) for the engine and transformers.js', options: { seed: 2, arch: 'qwen2' } },
  { name: 'tiny-gemma', purpose: 'Gemma, which only transformers.js runs', options: { seed: 3, arch: 'gemma' } },
  { name: 'llama-large', purpose: 'a Llama over 50 MB, to measure caching and batching', options: { seed: 4, arch: 'llama', sizes: LARGE_LLAMA_SIZES } },
];

export interface BuiltinWritten {
  name: string;
  dir: string;
  manifest: ModelManifest;
  /** False when the folder already held exactly this model and was left alone. */
  written: boolean;
}

/** Writes the built-in models into `dir/<name>/` (all, or those in `only`), skipping folders already up to date. */
export async function makeBuiltinModels(dir: string, opts: { only?: readonly string[] } = {}): Promise<BuiltinWritten[]> {
  const unknown = (opts.only ?? []).filter((n) => !BUILTIN_MODELS.some((m) => m.name === n));
  if (unknown.length) throw new Error(`Unknown built-in model ${unknown.join(', ')}; use one of ${BUILTIN_MODELS.map((m) => m.name).join(', ')}`);
  const out: BuiltinWritten[] = [];
  for (const m of BUILTIN_MODELS) {
    if (opts.only && !opts.only.includes(m.name)) continue;
    const folder = join(dir, m.name);
    const kept = await currentManifest(m.options, folder);
    if (kept) out.push({ name: m.name, dir: folder, manifest: kept, written: false });
    else out.push({ name: m.name, dir: folder, manifest: await makeTinyModel({ ...m.options, dir: folder }), written: true });
  }
  return out;
}
