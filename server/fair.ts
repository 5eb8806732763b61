/**
 * The order in which the scheduler offers ready tasks to the nodes: priority with aging, then weighted
 * fair sharing between the tenants of one (aged) priority, then age.
 *
 * Aging: a task's effective priority is its priority plus one per `agingMs` it has been ready, so a task of
 * priority p waits at most about (9 − p) × agingMs behind a stream of higher ones (0 turns aging off).
 *
 * Fair sharing is start-time fair queueing over tenants (tasks without a tenant count as one tenant). Each
 * tenant has a virtual finish tag; the k-th of its ready tasks in a round (k from 1, in its own order) gets
 * the tag max(V, finish) + k / weight, and among tasks of one effective priority the lowest tag goes first.
 * A leased task moves its tenant's finish up to its tag and V (the pool's virtual time) up to the largest
 * tag leased, so a tenant that floods the queue gets its weight's share and no more, and a tenant that was
 * idle comes back at V: it saved up no credit and owes none.
 */
import type { ReadyRow } from './journal';

export interface FairOptions {
  agingMs: number;
  /** A tenant's weight (> 0); 1 when it has none. */
  weight: (tenant: string | null) => number;
}

type Row = Pick<ReadyRow, 'tenant' | 'priority' | 'run_after' | 'seq'>;

/** Key of the tasks without a tenant in the finish map (tenant names never hold a NUL). */
const NO_TENANT = '\u0000';
/** Above this many tenants in the finish map, those at or behind V (the same as absent) are dropped. */
const PRUNE_AT = 1024;

export class FairShare {
  readonly #opts: FairOptions;
  readonly #finish = new Map<string, number>();
  #vtime = 0;

  constructor(opts: FairOptions) {
    this.#opts = opts;
  }

  /** The pool's virtual time (the largest start tag leased so far). */
  get virtualTime(): number {
    return this.#vtime;
  }

  /** A task's effective priority now: its priority plus one per agingMs ready. */
  effective(row: Pick<Row, 'priority' | 'run_after'>, now: number): number {
    const aging = this.#opts.agingMs;
    return aging > 0 && now > row.run_after ? row.priority + Math.floor((now - row.run_after) / aging) : row.priority;
  }

  /**
   * `rows` in the order to offer them, with each one's tag (pass it to leased() when the row is leased).
   * Rows of one tenant keep their own order (effective priority, then age).
   */
  order<R extends Row>(rows: readonly R[], now: number): { rows: R[]; tags: Float64Array } {
    const n = rows.length;
    const eff = new Float64Array(n);
    for (let i = 0; i < n; i++) eff[i] = this.effective(rows[i]!, now);
    const idx = Array.from({ length: n }, (_, i) => i);
    const byAge = (a: number, b: number): number => eff[b]! - eff[a]! || rows[a]!.seq - rows[b]!.seq;
    idx.sort(byAge);
    // Tags in each tenant's own order.
    const tags = new Float64Array(n);
    const next = new Map<string, { at: number; step: number }>();
    for (const i of idx) {
      const key = rows[i]!.tenant ?? NO_TENANT;
      let t = next.get(key);
      if (!t) {
        t = { at: Math.max(this.#vtime, this.#finish.get(key) ?? 0), step: 1 / this.#weightOf(rows[i]!.tenant) };
        next.set(key, t);
      }
      tags[i] = t.at;
      t.at += t.step;
    }
    if (next.size > 1) idx.sort((a, b) => eff[b]! - eff[a]! || tags[a]! - tags[b]! || rows[a]!.seq - rows[b]!.seq);
    const out = new Array<R>(n);
    const outTags = new Float64Array(n);
    for (let k = 0; k < n; k++) {
      out[k] = rows[idx[k]!]!;
      outTags[k] = tags[idx[k]!]!;
    }
    return { rows: out, tags: outTags };
  }

  /** A row ordered with start tag `tag` was leased: its tenant's finish moves to tag + 1/weight, the virtual time up to the tag. */
  leased(tenant: string | null, tag: number): void {
    const key = tenant ?? NO_TENANT;
    const finish = tag + 1 / this.#weightOf(tenant);
    if ((this.#finish.get(key) ?? 0) < finish) this.#finish.set(key, finish);
    if (tag > this.#vtime) this.#vtime = tag;
  }

  #weightOf(tenant: string | null): number {
    const w = this.#opts.weight(tenant);
    return w > 0 && Number.isFinite(w) ? w : 1;
  }

  /** Drops tenants whose finish is at or behind V (they would start at V anyway); bounded by PRUNE_AT. */
  prune(): void {
    if (this.#finish.size <= PRUNE_AT) return;
    for (const [key, f] of this.#finish) if (f <= this.#vtime) this.#finish.delete(key);
  }
}
