/**
 * Delivers the final task record to a task's `webhook` URL: POST JSON, a few
 * attempts with exponential backoff, each bounded by a timeout.
 */
import type { Journal, StoredTask } from './journal';

export interface WebhookOptions {
  attempts: number;
  baseDelayMs: number;
  timeoutMs: number;
}

export const DEFAULT_WEBHOOK_OPTIONS: WebhookOptions = { attempts: 4, baseDelayMs: 250, timeoutMs: 5_000 };

export class Webhooks {
  readonly #opts: WebhookOptions;
  readonly #journal: Journal;
  readonly #pending = new Set<Promise<void>>();
  delivered = 0;
  failed = 0;

  constructor(journal: Journal, opts: Partial<WebhookOptions> = {}) {
    this.#journal = journal;
    this.#opts = { ...DEFAULT_WEBHOOK_OPTIONS, ...opts };
  }

  send(url: string, record: StoredTask): void {
    const p = this.#deliver(url, record).finally(() => this.#pending.delete(p));
    this.#pending.add(p);
  }

  async #deliver(url: string, record: StoredTask): Promise<void> {
    const body = JSON.stringify(record);
    let last = '';
    for (let attempt = 1; attempt <= this.#opts.attempts; attempt++) {
      try {
        const res = await fetch(url, {
          method: 'POST',
          headers: { 'content-type': 'application/json', 'x-task-id': record.id },
          body,
          signal: AbortSignal.timeout(this.#opts.timeoutMs),
        });
        await res.arrayBuffer().catch(() => undefined);
        if (res.ok) {
          this.delivered++;
          return;
        }
        last = `HTTP ${res.status}`;
      } catch (err) {
        last = err instanceof Error ? err.message : String(err);
      }
      if (attempt < this.#opts.attempts) {
        await new Promise((r) => setTimeout(r, this.#opts.baseDelayMs * 2 ** (attempt - 1)));
      }
    }
    this.failed++;
    try {
      this.#journal.event('webhook_failed', record.id, null, { url, error: last, attempts: this.#opts.attempts });
    } catch {
      // the journal may be closed during shutdown; the failure is counted anyway
    }
  }

  /** Waits for deliveries in flight (bounded by their own retries and timeouts). */
  async settle(): Promise<void> {
    await Promise.allSettled([...this.#pending]);
  }
}
