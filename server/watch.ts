/**
 * In-memory listeners per task, for long-polls and server-sent events. Nothing
 * is kept for tasks nobody watches, so the hot path pays one Map lookup.
 */
import type { TaskId, TaskState } from '../shared';
import type { StoredTask } from './journal';

export type TaskEvent =
  | { type: 'state'; state: TaskState; attempts: number; nodeId: string | null; at: number; error?: string | null }
  | { type: 'progress'; at: number; progress: unknown }
  | { type: 'record'; record: StoredTask }
  /** The coordinator is closing: long-polls answer now and streams end. */
  | { type: 'closing' };

export type TaskListener = (event: TaskEvent) => void;

/**
 * Coordinators sharing a journal relay task events to each other (server/bus.ts): the watch says when a task
 * gets its first listener here, asks whether another coordinator watches a task, and hands over the events
 * that happen here for those.
 */
export interface WatchRelay {
  watching(id: string): void;
  wanted(id: string): boolean;
  happened(id: string, event: TaskEvent): void;
}

/** Progress events kept per running attempt, so a stream that joins late still gets every token. */
const MAX_BACKLOG = 4096;
/** Events kept, over all ended tasks, for streams that join after the end (oldest tasks dropped first). */
const MAX_ENDED_EVENTS = 65_536;
/** Events kept over all running attempts; past it, new progress is still streamed but not kept. */
const MAX_RUNNING_EVENTS = 262_144;

export class TaskWatch {
  readonly #listeners = new Map<string, Set<TaskListener>>();
  /** The current attempt's progress, for tasks that stream it (generate). */
  readonly #backlog = new Map<string, TaskEvent[]>();
  /** The last attempt's progress of tasks that ended, in the order they ended (bounded by MAX_ENDED_EVENTS). */
  readonly #ended = new Map<string, TaskEvent[]>();
  #endedEvents = 0;
  #runningEvents = 0;
  /** Set when other coordinators share the journal. */
  relay: WatchRelay | null = null;
  /** While an event relayed from another coordinator is told here (it is not relayed back). */
  #inbound = false;

  get size(): number {
    return this.#listeners.size;
  }

  /** Listeners over all tasks. */
  listeners(): number {
    let n = 0;
    for (const set of this.#listeners.values()) n += set.size;
    return n;
  }

  /** Whether anyone watches the task: here, or on another coordinator that asked for its events. */
  has(id: string): boolean {
    return this.#listeners.has(id) || (this.relay !== null && this.relay.wanted(id));
  }

  /** Whether a listener here watches the task. */
  watched(id: string): boolean {
    return this.#listeners.has(id);
  }

  /** The tasks watched here. */
  ids(): string[] {
    return [...this.#listeners.keys()];
  }

  /** The running attempt's progress so far (none once it ended). */
  running(id: string): readonly TaskEvent[] {
    return this.#backlog.get(id) ?? [];
  }

  /** An event another coordinator relayed: told to the listeners here (progress is kept, as if it happened here). */
  deliver(id: string, event: TaskEvent): void {
    this.#inbound = true;
    try {
      if (event.type === 'progress') this.progress(id, event);
      else this.emit(id, event);
    } finally {
      this.#inbound = false;
    }
  }

  /** Adds a listener; the answer removes it. */
  on(id: TaskId, fn: TaskListener): () => void {
    let set = this.#listeners.get(id);
    if (!set) {
      set = new Set();
      this.#listeners.set(id, set);
      this.relay?.watching(id);
    }
    set.add(fn);
    return () => {
      const s = this.#listeners.get(id);
      if (!s) return;
      s.delete(fn);
      if (s.size === 0) this.#listeners.delete(id);
    };
  }

  /** Tells every listener the coordinator is closing. */
  closeAll(): void {
    for (const id of [...this.#listeners.keys()]) this.emit(id, { type: 'closing' });
  }

  /** Records a progress event of the task's current attempt and tells the listeners. */
  progress(id: string, event: Extract<TaskEvent, { type: 'progress' }>): void {
    let log = this.#backlog.get(id);
    if (!log) this.#backlog.set(id, (log = []));
    if (log.length < MAX_BACKLOG && this.#runningEvents < MAX_RUNNING_EVENTS) {
      log.push(event);
      this.#runningEvents++;
    }
    this.emit(id, event);
  }

  /** The running attempt's progress so far, or the last attempt's once the task ended (a stream that joins late replays it). */
  backlog(id: string): readonly TaskEvent[] {
    return this.#backlog.get(id) ?? this.#ended.get(id) ?? [];
  }

  /**
   * The attempt ended. Going back to the queue, its progress is dropped (the retry streams anew);
   * when the task ended, it is kept a while for streams that join after the end.
   */
  forget(id: string, terminal = false): void {
    const log = this.#backlog.get(id);
    this.#backlog.delete(id);
    if (log) this.#runningEvents -= log.length;
    if (!terminal || !log || log.length === 0) return;
    this.#ended.set(id, log);
    this.#endedEvents += log.length;
    for (const [old, events] of this.#ended) {
      if (this.#endedEvents <= MAX_ENDED_EVENTS) break;
      this.#ended.delete(old);
      this.#endedEvents -= events.length;
    }
  }

  emit(id: string, event: TaskEvent): void {
    if (this.relay !== null && !this.#inbound && this.relay.wanted(id)) this.relay.happened(id, event);
    const set = this.#listeners.get(id);
    if (!set) return;
    for (const fn of [...set]) fn(event);
  }
}
