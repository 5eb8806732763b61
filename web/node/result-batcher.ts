/**
 * Collects task results and sends them as one `task.result` message per short
 * tick, so a burst of finishing agents becomes one socket message (and one
 * journal transaction on the coordinator).
 */
import type { ResultItem } from '../../shared';

export interface ResultBatcherOptions {
  /** Sends one batch; returns false when it could not (socket down): the batch is kept. */
  send: (items: ResultItem[]) => boolean;
  /** Wait this long after the first queued result before sending; 0 = next macrotask. Default 2 ms
   * (measured: 1 ms → 5.5 results per message, 4 ms → 13, at the same throughput). */
  delayMs?: number;
  /** Send at once when this many are queued (the protocol allows 4096). */
  maxBatch?: number;
}

export class ResultBatcher {
  readonly #send: (items: ResultItem[]) => boolean;
  readonly #delayMs: number;
  readonly #maxBatch: number;
  #queue: ResultItem[] = [];
  #timer: ReturnType<typeof setTimeout> | null = null;
  #batches = 0;
  #sent = 0;

  constructor(opts: ResultBatcherOptions) {
    this.#send = opts.send;
    this.#delayMs = opts.delayMs ?? 2;
    this.#maxBatch = Math.min(opts.maxBatch ?? 1024, 4096);
  }

  get pending(): number {
    return this.#queue.length;
  }

  /** Messages sent and results in them, for the page and the benchmark. */
  get counts(): { batches: number; results: number } {
    return { batches: this.#batches, results: this.#sent };
  }

  /** Lease ids of results not sent yet (the heartbeat keeps them alive). */
  pendingLeases(out: string[]): void {
    for (const r of this.#queue) out.push(r.leaseId);
  }

  push(item: ResultItem): void {
    this.#queue.push(item);
    if (this.#queue.length >= this.#maxBatch) this.flush();
    else if (this.#timer === null) this.#timer = setTimeout(() => this.flush(), this.#delayMs);
  }

  /** Sends what is queued now (in chunks of maxBatch); keeps it if the socket is down. */
  flush(): void {
    if (this.#timer !== null) {
      clearTimeout(this.#timer);
      this.#timer = null;
    }
    while (this.#queue.length > 0) {
      const chunk = this.#queue.length <= this.#maxBatch ? this.#queue : this.#queue.slice(0, this.#maxBatch);
      if (!this.#send(chunk)) return;
      this.#batches++;
      this.#sent += chunk.length;
      this.#queue = chunk === this.#queue ? [] : this.#queue.slice(chunk.length);
    }
  }

  /** Drops the timer (results stay queued). */
  close(): void {
    if (this.#timer !== null) clearTimeout(this.#timer);
    this.#timer = null;
  }
}
