/** The order micro-batches are drawn in: every batch once per pass, the order reshuffled (seeded) each pass. */
import { seededShuffle } from '../model';

/** Returns a function that yields the next batch, cycling through `batches` forever. */
export function batchCycle<T>(batches: readonly T[], seed: number): () => T {
  if (batches.length === 0) throw new RangeError('batchCycle needs at least one batch');
  let order: T[] = [];
  let pass = 0;
  return () => {
    if (!order.length) order = seededShuffle(batches, seed + pass++);
    return order.pop() as T;
  };
}
