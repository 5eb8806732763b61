/**
 * Blocking the agent's thread for a poll_oneoff clock, without spinning where the platform
 * allows it.
 *
 * Choice: `Atomics.wait` on a private SharedArrayBuffer cell nobody notifies, which sleeps
 * the thread for the timeout and costs no CPU. Workers (and Node's main thread) may wait;
 * a browser main thread may not, and a page that is not cross-origin isolated has no
 * SharedArrayBuffer: there the layer spins on the clock. Either way the block is bounded:
 * the caller passes the run's wall-clock deadline, and the pool terminates a worker at its
 * deadline anyway (terminate() ends an Atomics.wait as it ends a spin).
 */
let cell: Int32Array | null | undefined;

function waitCell(): Int32Array | null {
  if (cell !== undefined) return cell;
  try {
    const c = new Int32Array(new SharedArrayBuffer(4));
    // Throws where this thread may not block (a browser main thread), before comparing.
    Atomics.wait(c, 0, 1, 0);
    cell = c;
  } catch {
    cell = null;
  }
  return cell;
}

/** How this thread blocks: 'wait' (Atomics.wait) or 'spin'. */
export const blockingMode = (): 'wait' | 'spin' => (waitCell() ? 'wait' : 'spin');

/** Blocks until performance.now() reaches `untilMs`. */
export function blockUntil(untilMs: number): void {
  const c = waitCell();
  for (;;) {
    const left = untilMs - performance.now();
    if (left <= 0) return;
    if (c) Atomics.wait(c, 0, 0, left);
  }
}
