/**
 * The end-of-sequence ids a model's files declare, in transformers' order of authority:
 * generation_config.json (what `generate` stops at), then config.json (what transformers derives
 * a generation config from when the folder has none), then tokenizer_config.json's eos_token.
 */
import { AppError } from '../../shared';

function ids(v: unknown, file: string): number[] {
  if (v === undefined || v === null) return [];
  const list = Array.isArray(v) ? v : [v];
  for (const id of list) {
    if (!Number.isSafeInteger(id) || (id as number) < 0) throw new AppError('MODEL_CORRUPT', `${file}: eos_token_id must be a token id or a list of them (got ${JSON.stringify(v)}).`);
  }
  return list as number[];
}

/** eos_token_id of generation_config.json (text or parsed); [] when it has none. */
export function generationEosIds(json: string | unknown): number[] {
  let raw: unknown = json;
  if (typeof json === 'string') {
    try {
      raw = JSON.parse(json);
    } catch (err) {
      throw new AppError('MODEL_CORRUPT', `generation_config.json is not JSON (${(err as Error).message}).`);
    }
  }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw new AppError('MODEL_CORRUPT', 'generation_config.json is not a JSON object.');
  return ids((raw as { eos_token_id?: unknown }).eos_token_id, 'generation_config.json');
}

/** The three sources merged, first source first, without repeats: the first id is the model's EOS. */
export function mergeEosIds(generation: readonly number[], config: readonly number[], tokenizerEos: number | null): number[] {
  return [...new Set([...generation, ...config, ...(tokenizerEos === null ? [] : [tokenizerEos])])];
}
