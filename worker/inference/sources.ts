/**
 * Model sources for the inference service: the IndexedDB weight store (the page), which downloads
 * from the coordinator, verifies and keeps the files.
 */
import { openWeightDb, type WeightStore } from '../weights';
import type { ModelFiles, ModelSource } from './service';

/** Models come from the weight store: `ensure` downloads what is missing; the model is held (never evicted) while loaded. */
export function weightStoreSource(store: WeightStore, dbName = 'weights'): ModelSource {
  return {
    async list() {
      return (await store.list()).filter((m) => m.complete).map((m) => m.name);
    },
    async cached() {
      return (await store.list()).map((m) => ({ name: m.name, bytes: m.bytes, totalBytes: m.totalBytes, verified: m.verified, complete: m.complete, lastUsed: m.lastUsed }));
    },
    async ensure(model, opts): Promise<ModelFiles> {
      const res = await store.ensure(model, {
        ...(opts.onProgress ? { onProgress: (p) => opts.onProgress!(p.loadedBytes, p.totalBytes) } : {}),
        ...(opts.signal ? { signal: opts.signal } : {}),
      });
      const db = await openWeightDb(dbName);
      const rec = await db.get('models', model);
      const paths = rec?.manifest?.files.map((f) => f.path) ?? [];
      const hold = await store.hold(model);
      return {
        paths,
        totalBytes: res.totalBytes,
        readFile: (path) => store.readFile(model, path),
        release: () => hold.release(),
      };
    },
  };
}
