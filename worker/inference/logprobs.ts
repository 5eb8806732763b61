/**
 * Log-probabilities as OpenAI reports them: the log-softmax of the model's row at temperature 1
 * (before sampling parameters and constraints), for the chosen token and the top-N alternatives.
 */
import type { TokenLogprob } from '../../shared';
import { topIndices } from './sampling';

/** log Σ exp(row), in float64. */
export function logSumExp(row: ArrayLike<number>): number {
  let max = -Infinity;
  for (let i = 0; i < row.length; i++) if ((row[i] as number) > max) max = row[i] as number;
  if (max === -Infinity) return -Infinity;
  let sum = 0;
  for (let i = 0; i < row.length; i++) sum += Math.exp((row[i] as number) - max);
  return max + Math.log(sum);
}

/** The whole log-softmax of a row (for tests and small vocabularies). */
export function logSoftmax(row: ArrayLike<number>): Float64Array {
  const lse = logSumExp(row);
  const out = new Float64Array(row.length);
  for (let i = 0; i < row.length; i++) out[i] = (row[i] as number) - lse;
  return out;
}

/**
 * The chosen token's logprob and, when `top` > 0, the `top` most likely tokens (largest first).
 * `tokenText(id)` gives each token's text.
 */
export function tokenLogprob(row: ArrayLike<number>, chosen: number, top: number, tokenText: (id: number) => string): TokenLogprob {
  const lse = logSumExp(row);
  const out: TokenLogprob = { id: chosen, token: tokenText(chosen), logprob: (row[chosen] as number) - lse };
  if (top > 0) out.top = topIndices(row, top).map((id) => ({ id, token: tokenText(id), logprob: (row[id] as number) - lse }));
  return out;
}
