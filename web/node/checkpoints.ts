/**
 * The node's own copy of its training checkpoints (issue 7 item 2: to IndexedDB and to the coordinator). Every
 * checkpoint a train lease takes is written here before it is sent; an assignment naming a checkpoint whose
 * SHA-256 this store holds resumes from these bytes instead of downloading them (a page reloaded mid-run, or
 * another page of the same browser profile). The coordinator's copy stays the one that counts: an entry is used
 * only when its digest is the one the assignment names. Bounded: the newest `keep` runs, one checkpoint each.
 */

export interface StoredCheckpoint {
  taskId: string;
  step: number;
  sha256: string;
  bytes: Uint8Array;
  /** Date.now() when it was written (the oldest goes first). */
  savedAt: number;
}

export interface CheckpointStore {
  /** Keeps the run's latest checkpoint (replacing its earlier one), dropping the oldest runs past the bound. */
  put(entry: StoredCheckpoint): Promise<void>;
  get(taskId: string): Promise<StoredCheckpoint | null>;
  delete(taskId: string): Promise<void>;
}

const STORE = 'checkpoints';

function request<T>(r: IDBRequest<T>): Promise<T> {
  return new Promise((resolve, reject) => {
    r.onsuccess = () => resolve(r.result);
    r.onerror = () => reject(r.error ?? new Error('IndexedDB request failed'));
  });
}

function done(tx: IDBTransaction): Promise<void> {
  return new Promise((resolve, reject) => {
    tx.oncomplete = () => resolve();
    tx.onerror = () => reject(tx.error ?? new Error('IndexedDB transaction failed'));
    tx.onabort = () => reject(tx.error ?? new Error('IndexedDB transaction aborted'));
  });
}

/** Checkpoints in IndexedDB database `name`; null where the page has no IndexedDB (then only the coordinator keeps them). */
export function indexedDbCheckpoints(name = 'exec-node-checkpoints', keep = 4): CheckpointStore | null {
  if (typeof indexedDB === 'undefined') return null;
  let opened: Promise<IDBDatabase> | null = null;
  const db = (): Promise<IDBDatabase> =>
    (opened ??= new Promise<IDBDatabase>((resolve, reject) => {
      const r = indexedDB.open(name, 1);
      r.onupgradeneeded = () => r.result.createObjectStore(STORE, { keyPath: 'taskId' });
      r.onsuccess = () => resolve(r.result);
      r.onerror = () => {
        opened = null;
        reject(r.error ?? new Error('IndexedDB open failed'));
      };
    }));
  return {
    async put(entry) {
      const d = await db();
      const tx = d.transaction(STORE, 'readwrite');
      const store = tx.objectStore(STORE);
      store.put({ ...entry, bytes: entry.bytes.slice() });
      const all = (await request(store.getAll())) as StoredCheckpoint[];
      const others = all.filter((e) => e.taskId !== entry.taskId).sort((a, b) => b.savedAt - a.savedAt);
      for (const old of others.slice(Math.max(0, keep - 1))) store.delete(old.taskId);
      await done(tx);
    },
    async get(taskId) {
      const d = await db();
      const e = (await request(d.transaction(STORE, 'readonly').objectStore(STORE).get(taskId))) as StoredCheckpoint | undefined;
      return e ? { ...e, bytes: new Uint8Array(e.bytes) } : null;
    },
    async delete(taskId) {
      const d = await db();
      const tx = d.transaction(STORE, 'readwrite');
      tx.objectStore(STORE).delete(taskId);
      await done(tx);
    },
  };
}
