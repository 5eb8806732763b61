/**
 * Who is using a model, across every page and worker of the origin: a shared Web Lock per model
 * held while it is being loaded or read (or while the caller says it is loaded), which eviction
 * asks for exclusively and only if free. Without `navigator.locks` the same rules hold within this
 * context only.
 */
type Release = () => void;

const local = new Map<string, number>();
const localQueues = new Map<string, Promise<unknown>>();

function locks(): LockManager | null {
  return typeof navigator !== 'undefined' && navigator.locks ? navigator.locks : null;
}

/** Takes a shared lock and keeps it until the returned function is called. */
export async function holdShared(name: string): Promise<Release> {
  const lm = locks();
  if (!lm) {
    local.set(name, (local.get(name) ?? 0) + 1);
    let done = false;
    return () => {
      if (done) return;
      done = true;
      const n = (local.get(name) ?? 1) - 1;
      if (n <= 0) local.delete(name);
      else local.set(name, n);
    };
  }
  return new Promise<Release>((acquired, failed) => {
    lm.request(name, { mode: 'shared' }, () => new Promise<void>((release) => acquired(release))).catch(failed);
  });
}

/** Runs fn under an exclusive lock if nobody holds the name (shared or not); false if it was taken. */
export async function ifFree(name: string, fn: () => Promise<void>): Promise<boolean> {
  const lm = locks();
  if (!lm) {
    if (local.has(name)) return false;
    await fn();
    return true;
  }
  return lm.request(name, { mode: 'exclusive', ifAvailable: true }, async (lock) => {
    if (!lock) return false;
    await fn();
    return true;
  });
}

/** Runs fn under an exclusive lock, waiting for it (abortable while waiting). */
export async function exclusive<T>(name: string, fn: () => Promise<T>, signal?: AbortSignal): Promise<T> {
  const lm = locks();
  if (!lm) {
    const prev = localQueues.get(name) ?? Promise.resolve();
    const run = prev.catch(() => undefined).then(fn);
    localQueues.set(name, run);
    return run;
  }
  return lm.request(name, signal ? { mode: 'exclusive', signal } : { mode: 'exclusive' }, fn) as Promise<T>;
}
