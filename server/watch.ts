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

export class TaskWatch {
  readonly #listeners = new Map<string, Set<TaskListener>>();

  get size(): number {
    return this.#listeners.size;
  }

  /** Listeners over all tasks. */
  listeners(): number {
    let n = 0;
    for (const set of this.#listeners.values()) n += set.size;
    return n;
  }

  has(id: string): boolean {
    return this.#listeners.has(id);
  }

  /** Adds a listener; the answer removes it. */
  on(id: TaskId, fn: TaskListener): () => void {
    let set = this.#listeners.get(id);
    if (!set) {
      set = new Set();
      this.#listeners.set(id, set);
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

  emit(id: string, event: TaskEvent): void {
    const set = this.#listeners.get(id);
    if (!set) return;
    for (const fn of [...set]) fn(event);
  }
}
