/**
 * Reads a Hugging Face model folder (config.json, model.safetensors or its shards,
 * tokenizer files) through a caller-supplied file reader, so the same code works
 * with IndexedDB in the browser and the file system in Node.
 */
import { AppError } from '../../shared';
import { loadLlamaWeights, parseLlamaConfig, type LlamaConfig, type LlamaWeights } from './config';
import { generationEosIds, mergeEosIds } from './generation';
import { baseModelFingerprint } from './peft';
import { parseSafetensors, type SafetensorsFile } from './safetensors';
import { loadTokenizer, type ModelTokenizer } from './tokenizer';

export type ReadFile = (name: string) => Promise<Uint8Array>;

export interface LoadedModel {
  config: LlamaConfig;
  weights: LlamaWeights;
  tokenizer: ModelTokenizer;
  /** Identifies this base for adapters (`baseModelFingerprint`). */
  fingerprint: string;
  /**
   * End-of-sequence ids: generation_config.json's, then config.json's, then the tokenizer's EOS
   * (`mergeEosIds`). Training appends the first to assistant turns whose template ends with none.
   */
  eosTokenIds: number[];
}

/** Reads a file, turning the reader's own failure into MODEL_FILE_MISSING. */
export async function readModelFile(readFile: ReadFile, name: string): Promise<Uint8Array> {
  try {
    return await readFile(name);
  } catch (err) {
    if (err instanceof AppError) throw err;
    throw new AppError('MODEL_FILE_MISSING', `The model folder has no readable ${name}; download the model again.`, { file: name }, { cause: err });
  }
}

async function readText(readFile: ReadFile, name: string): Promise<string> {
  return new TextDecoder().decode(await readModelFile(readFile, name));
}

/** The safetensors files of the folder: `model.safetensors`, or the shards its index lists. */
export async function readSafetensorsFiles(readFile: ReadFile): Promise<SafetensorsFile[]> {
  let indexText: string | null = null;
  try {
    indexText = new TextDecoder().decode(await readFile('model.safetensors.index.json'));
  } catch {
    indexText = null;
  }
  if (indexText === null) return [parseSafetensors(await readModelFile(readFile, 'model.safetensors'))];
  let index: unknown;
  try {
    index = JSON.parse(indexText);
  } catch (err) {
    throw new AppError('MODEL_CORRUPT', `model.safetensors.index.json is not JSON (${(err as Error).message}).`);
  }
  const map = (index as { weight_map?: unknown }).weight_map;
  if (typeof map !== 'object' || map === null) throw new AppError('MODEL_CORRUPT', 'model.safetensors.index.json has no weight_map.');
  const shards = [...new Set(Object.values(map as Record<string, unknown>).map(String))].sort();
  return Promise.all(shards.map(async (s) => parseSafetensors(await readModelFile(readFile, s))));
}

export async function loadModelFolder(readFile: ReadFile): Promise<LoadedModel> {
  const config = parseLlamaConfig(await readText(readFile, 'config.json'));
  const files = await readSafetensorsFiles(readFile);
  const weights = loadLlamaWeights(files, config);
  const tokenizer = await loadTokenizer((name) => readModelFile(readFile, name));
  let generation: number[] = [];
  let generationText: string | null = null;
  try {
    generationText = new TextDecoder().decode(await readFile('generation_config.json'));
  } catch {
    generationText = null; // optional: transformers then derives it from config.json
  }
  if (generationText !== null) generation = generationEosIds(generationText);
  const eosTokenIds = mergeEosIds(generation, config.eosTokenIds, tokenizer.eosId);
  return { config, weights, tokenizer, fingerprint: baseModelFingerprint(config, files), eosTokenIds };
}
