/** Decode speed of a `BatchDecoder` at a few batch sizes (for the inference benchmark). */
import type { BatchDecoder } from '../types';

export interface DecodeThroughput {
  /** Sequences decoded together. */
  sequences: number;
  /** Decode steps timed (after one warm-up step). */
  steps: number;
  /** Generated tokens per second, all sequences together. */
  tokensPerSec: number;
  /** Mean time of one decode step. */
  stepMs: number;
}

function argmax(row: Float32Array): number {
  let best = 0;
  for (let i = 1; i < row.length; i++) if ((row[i] as number) > (row[best] as number)) best = i;
  return best;
}

/**
 * Fills `n` slots with prompts of `promptTokens` tokens (ids taken from `promptIds`, shifted per slot so the
 * rows differ), then times `steps` greedy decode steps of all of them together. Frees the slots afterwards.
 */
export async function measureDecodeThroughput(
  decoder: BatchDecoder,
  options: { sequences: readonly number[]; steps?: number; promptTokens?: number; promptIds?: readonly number[] },
): Promise<DecodeThroughput[]> {
  const steps = options.steps ?? 32;
  const promptTokens = options.promptTokens ?? 16;
  const source = options.promptIds ?? Array.from({ length: promptTokens }, (_, i) => 5 + i);
  const out: DecodeThroughput[] = [];
  for (const n of options.sequences) {
    if (n > decoder.maxSlots) throw new RangeError(`${n} sequences do not fit ${decoder.maxSlots} slots`);
    if (promptTokens + steps + 1 > decoder.maxPositions) throw new RangeError(`${promptTokens} + ${steps} positions do not fit ${decoder.maxPositions}`);
    const slots = Array.from({ length: n }, (_, s) => s);
    const prompts = slots.map((s) => Uint32Array.from({ length: promptTokens }, (_, i) => (source[(i + s) % source.length] as number) % decoder.vocabSize));
    const first = await decoder.prefill(slots.map((slot, i) => ({ slot, tokens: prompts[i] as Uint32Array, adapter: null })));
    let tokens = first.map(argmax);
    const step = async (): Promise<void> => {
      const logits = await decoder.decode(slots.map((slot, i) => ({ slot, token: tokens[i] as number, adapter: null })));
      tokens = logits.map(argmax);
    };
    await step(); // warm-up
    const t0 = performance.now();
    for (let i = 0; i < steps; i++) await step();
    const ms = performance.now() - t0;
    for (const slot of slots) decoder.free(slot);
    out.push({ sequences: n, steps, tokensPerSec: (n * steps * 1000) / ms, stepMs: ms / steps });
  }
  return out;
}
