/**
 * What coordinators sharing one PostgreSQL journal tell each other, over LISTEN/NOTIFY on one channel:
 *
 * - `wake`: tasks were queued; the others dispatch now rather than at their next tick.
 * - `cancel`: a task leased by another coordinator's node was cancelled here; its owner tells the node.
 * - `watch`: a long-poll, event stream or OpenAI request here waits on a task; whoever runs it relays its
 *   events (`backlog`, the tokens so far; then each `ev`) while it runs.
 *
 * The journal is the truth, the bus only makes things quick: a notification lost (a restart, the server
 * unreachable) costs latency, never a task. Dispatch still runs on every tick, and the tasks watched here are
 * checked against the journal every second (a task that ended before its runner heard of the watcher is
 * answered that way).
 *
 * Notifications go out on a connection of their own (async: publishing never blocks the event loop), after the
 * statements they announce have committed on the journal's connection.
 */
import pg from 'pg';
import { TERMINAL_STATES, type TaskId } from '../shared';
import type { Journal } from './journal';
import type { TaskEvent, TaskWatch, WatchRelay } from './watch';

export const BUS_CHANNEL = 'execution_node';

/** PostgreSQL refuses payloads of 8000 bytes or more. */
const MAX_PAYLOAD = 7_900;
/** How long another coordinator's interest in a task is kept without a new `watch`. */
const INTEREST_MS = 10 * 60_000;
/** Interests kept at most (oldest dropped first). */
const MAX_INTERESTS = 100_000;
/** Watched tasks checked against the journal each second (round the list). */
const POLL_PER_SECOND = 256;
const RECONNECT_MS = 500;

export type BusMessage =
  | { t: 'wake' }
  | { t: 'cancel'; taskId: string; leaseId: string; reason: string }
  | { t: 'watch'; id: string }
  | { t: 'backlog'; id: string; events: TaskEvent[] }
  | { t: 'ev'; id: string; ev: TaskEvent };

export interface BusHandlers {
  wake(): void;
  cancel(taskId: string, leaseId: string, reason: string): void;
}

export class PgBus implements WatchRelay {
  readonly #url: string;
  readonly #from: string;
  readonly #journal: Journal;
  readonly #watch: TaskWatch;
  readonly #handlers: BusHandlers;
  /** Tasks other coordinators watch: id → when the interest lapses. */
  readonly #wanted = new Map<string, number>();
  #client: pg.Client | null = null;
  #closed = false;
  #queue: string[] = [];
  #flushing = false;
  #reconnect: NodeJS.Timeout | null = null;
  readonly #poll: NodeJS.Timeout;
  #pollFrom = 0;
  /** Notifications sent and received, and those dropped (too large, or no connection). */
  readonly counts = { sent: 0, received: 0, dropped: 0 };

  constructor(url: string, from: string, journal: Journal, watch: TaskWatch, handlers: BusHandlers) {
    this.#url = url;
    this.#from = from;
    this.#journal = journal;
    this.#watch = watch;
    this.#handlers = handlers;
    this.#poll = setInterval(() => this.#checkWatched(), 1_000);
    this.#poll.unref();
  }

  /** Connects and listens; answers once listening (or throws when the server cannot be reached). */
  async start(): Promise<void> {
    await this.#connect();
  }

  async #connect(): Promise<void> {
    const c = new pg.Client({ connectionString: this.#url, connectionTimeoutMillis: 5_000, application_name: 'execution-node-bus' });
    c.on('error', () => this.#lost(c));
    c.on('end', () => this.#lost(c));
    c.on('notification', (n) => {
      if (n.channel === BUS_CHANNEL && n.payload) this.#receive(n.payload);
    });
    try {
      await c.connect();
      await c.query(`LISTEN ${BUS_CHANNEL}`);
    } catch (err) {
      void c.end().catch(() => undefined);
      throw err;
    }
    if (this.#closed) {
      void c.end().catch(() => undefined);
      return;
    }
    this.#client = c;
    this.#flush();
  }

  #lost(c: pg.Client): void {
    if (this.#client !== c) return;
    this.#client = null;
    this.#schedule();
  }

  #schedule(): void {
    if (this.#closed || this.#reconnect) return;
    this.#reconnect = setTimeout(() => {
      this.#reconnect = null;
      this.#connect().catch(() => this.#schedule());
    }, RECONNECT_MS);
    this.#reconnect.unref();
  }

  publish(msg: BusMessage): void {
    if (this.#closed) return;
    if (msg.t === 'backlog') {
      // Split so that each notification fits; an event that alone is too large is dropped.
      let part: TaskEvent[] = [];
      let size = 0;
      for (const ev of msg.events) {
        const n = JSON.stringify(ev).length + 1;
        if (size + n > MAX_PAYLOAD - 200 && part.length) {
          this.#enqueue({ t: 'backlog', id: msg.id, events: part });
          part = [];
          size = 0;
        }
        part.push(ev);
        size += n;
      }
      if (part.length) this.#enqueue({ t: 'backlog', id: msg.id, events: part });
      return;
    }
    this.#enqueue(msg);
  }

  #enqueue(msg: BusMessage): void {
    const text = JSON.stringify({ ...msg, from: this.#from });
    if (Buffer.byteLength(text) > MAX_PAYLOAD) {
      this.counts.dropped++;
      return;
    }
    // Wakes coalesce: one waiting is enough.
    if (msg.t === 'wake' && this.#queue.length && this.#queue[this.#queue.length - 1]!.startsWith('{"t":"wake"')) return;
    if (this.#queue.length >= 10_000) {
      this.counts.dropped++;
      return;
    }
    this.#queue.push(text);
    if (!this.#flushing) {
      this.#flushing = true;
      setImmediate(() => this.#flush());
    }
  }

  #flush(): void {
    this.#flushing = false;
    const c = this.#client;
    if (!c || this.#queue.length === 0) return;
    const batch = this.#queue;
    this.#queue = [];
    // One statement for the batch; the server delivers them in this order.
    const calls = batch.map((_, i) => `pg_notify($1, $${i + 2})`).join(', ');
    c.query(`SELECT ${calls}`, [BUS_CHANNEL, ...batch]).then(
      () => {
        this.counts.sent += batch.length;
      },
      () => {
        this.counts.dropped += batch.length;
      },
    );
  }

  #receive(payload: string): void {
    let msg: BusMessage & { from?: string };
    try {
      msg = JSON.parse(payload) as BusMessage & { from?: string };
    } catch {
      return;
    }
    if (msg.from === this.#from) return;
    this.counts.received++;
    switch (msg.t) {
      case 'wake':
        this.#handlers.wake();
        return;
      case 'cancel':
        if (typeof msg.taskId === 'string' && typeof msg.leaseId === 'string') this.#handlers.cancel(msg.taskId, msg.leaseId, String(msg.reason ?? ''));
        return;
      case 'watch': {
        if (typeof msg.id !== 'string') return;
        this.#wanted.delete(msg.id);
        this.#wanted.set(msg.id, Date.now() + INTEREST_MS);
        if (this.#wanted.size > MAX_INTERESTS) this.#wanted.delete(this.#wanted.keys().next().value!);
        const backlog = this.#watch.running(msg.id);
        if (backlog.length) this.publish({ t: 'backlog', id: msg.id, events: [...backlog] });
        return;
      }
      case 'backlog':
        if (typeof msg.id !== 'string' || !Array.isArray(msg.events) || !this.#watch.watched(msg.id)) return;
        for (const ev of msg.events) this.#deliver(msg.id, ev);
        return;
      case 'ev':
        if (typeof msg.id !== 'string' || !this.#watch.watched(msg.id)) return;
        this.#deliver(msg.id, msg.ev);
        return;
    }
  }

  /** An event another coordinator relayed, told to the listeners here; an end is answered with the record. */
  #deliver(id: string, ev: TaskEvent): void {
    if (ev.type === 'progress') {
      this.#watch.deliver(id, ev);
    } else if (ev.type === 'state') {
      this.#watch.deliver(id, ev);
      if ((TERMINAL_STATES as readonly string[]).includes(ev.state)) this.#ended(id);
      else if (ev.state === 'queued') this.#watch.forget(id);
    }
  }

  #ended(id: string): void {
    const record = this.#journal.getTask(id as TaskId);
    if (!record || !(TERMINAL_STATES as readonly string[]).includes(record.state)) return;
    this.#watch.forget(id, true);
    this.#watch.deliver(id, { type: 'record', record });
  }

  /** The tasks watched here that ended elsewhere unheard (up to POLL_PER_SECOND a second, round the list). */
  #checkWatched(): void {
    if (this.#closed || !this.#journal.db.open) return;
    const ids = this.#watch.ids();
    if (ids.length === 0) return;
    if (this.#pollFrom >= ids.length) this.#pollFrom = 0;
    const slice = ids.slice(this.#pollFrom, this.#pollFrom + POLL_PER_SECOND);
    this.#pollFrom += slice.length;
    try {
      for (const id of slice) this.#ended(id);
    } catch {
      // the store is out of reach: the next round tries again
    }
    const now = Date.now();
    for (const [id, until] of this.#wanted) {
      if (until > now) break;
      this.#wanted.delete(id);
    }
  }

  // WatchRelay: the watch asks whether others want a task's events, and hands over those that happen here.

  watching(id: string): void {
    this.publish({ t: 'watch', id });
  }

  wanted(id: string): boolean {
    return this.#wanted.has(id);
  }

  happened(id: string, event: TaskEvent): void {
    if (event.type !== 'state' && event.type !== 'progress') return;
    this.publish({ t: 'ev', id, ev: event });
    if (event.type === 'state' && (TERMINAL_STATES as readonly string[]).includes(event.state)) this.#wanted.delete(id);
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    clearInterval(this.#poll);
    if (this.#reconnect) clearTimeout(this.#reconnect);
    const c = this.#client;
    this.#client = null;
    await c?.end().catch(() => undefined);
  }
}
