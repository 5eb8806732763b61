/**
 * The IndexedDB weight store (idb): model folders from the coordinator, chunked, verified,
 * resumable, within a budget with least-recently-used eviction; it feeds the engine
 * (`reader(model)` is a worker/model `ReadFile`) and transformers.js (`customCache()`).
 */
export {
  WeightStore,
  DEFAULT_CHUNK_BYTES,
  type WeightStoreOptions,
  type EnsureOptions,
  type EnsureResult,
  type WeightProgress,
  type StoredModel,
  type WeightStats,
  type WeightCache,
  type ModelHold,
} from './store';
export { fetchManifest, checkManifest, manifestUrl, fileUrl } from './remote';
export { openWeightDb, DB_VERSION, type WeightManifest, type ManifestFile, type ModelRecord, type FileRecord, type ChunkRecord, type WeightDb } from './schema';
