/**
 * The weight store's IndexedDB layout: one record per model (its manifest and last use), one per
 * file (chunking and digest state) and one per chunk (bytes and the chunk's own SHA-256, so a chunk
 * damaged on disk is caught when it is read). Chunks are keyed [model, path, index].
 */
import { openDB, type DBSchema, type IDBPDatabase } from 'idb';

export interface ManifestFile {
  path: string;
  size: number;
  /** Lower-case hex SHA-256 of the whole file. */
  sha256: string;
}

/** What `GET /v1/models/:name/manifest` answers. */
export interface WeightManifest {
  name: string;
  files: ManifestFile[];
  totalBytes: number;
}

export interface ModelRecord {
  name: string;
  /** The coordinator's manifest; null for a model known only from `customCache().put`. */
  manifest: WeightManifest | null;
  lastUsed: number;
  createdAt: number;
}

export interface FileRecord {
  model: string;
  path: string;
  size: number;
  /** Expected digest (from the manifest, or computed when `put` stored it without one). */
  sha256: string;
  /** Bytes per chunk (the last one may be shorter); fixed when the file record is created so a resume cuts the same chunks. */
  chunkBytes: number;
  chunkCount: number;
  /** Every chunk stored and the whole file matched `sha256`. */
  verified: boolean;
  /** Where the bytes came from: the coordinator (ensure) or transformers.js (customCache put). */
  origin: 'coordinator' | 'cache';
}

export interface ChunkRecord {
  model: string;
  path: string;
  index: number;
  data: Uint8Array;
  /** SHA-256 of `data` computed when it was stored. */
  sha256: string;
}

export interface WeightDb extends DBSchema {
  models: { key: string; value: ModelRecord };
  files: { key: [string, string]; value: FileRecord; indexes: { byModel: string } };
  chunks: { key: [string, string, number]; value: ChunkRecord };
}

export type WeightDatabase = IDBPDatabase<WeightDb>;

export const DB_VERSION = 1;

export function openWeightDb(name: string): Promise<WeightDatabase> {
  return openDB<WeightDb>(name, DB_VERSION, {
    upgrade(db) {
      db.createObjectStore('models', { keyPath: 'name' });
      const files = db.createObjectStore('files', { keyPath: ['model', 'path'] });
      files.createIndex('byModel', 'model');
      db.createObjectStore('chunks', { keyPath: ['model', 'path', 'index'] });
    },
  });
}

/** Key range over every chunk of one file. */
export function fileChunkRange(model: string, path: string): IDBKeyRange {
  return IDBKeyRange.bound([model, path, 0], [model, path, Number.MAX_SAFE_INTEGER]);
}

/** Key range over every chunk of one model ([model] sorts before [model, anything]). */
export function modelChunkRange(model: string): IDBKeyRange {
  return IDBKeyRange.bound([model], [model, []]);
}

/** Key range over every file of one model. */
export function modelFileRange(model: string): IDBKeyRange {
  return IDBKeyRange.bound([model], [model, []]);
}
