/** The held-out (or training-split) loss: the model's masked loss, token-weighted over batches, no gradients. */
import type { LlamaModel } from '../engine';
import type { Batch } from '../model';

/** Token-weighted mean masked loss over batches (0 when no batch has a loss token). */
export async function meanLoss(model: LlamaModel, batches: readonly Batch[]): Promise<number> {
  let sum = 0;
  let count = 0;
  for (const b of batches) {
    let n = 0;
    for (const m of b.lossMask) n += m;
    if (n === 0) continue;
    sum += (await model.evalLoss(b)) * n;
    count += n;
  }
  return count > 0 ? sum / count : 0;
}
