/** What e2e/weights/weights.html puts on `window.weightsE2E` for the Node side. Types only. */
import type { EnsureResult, StoredModel, WeightProgress, WeightStats, WeightStoreOptions } from '../../worker/weights';

/** Errors cross page.evaluate as their code and message. */
export type Outcome<T> = { ok: true; value: T; ms: number } | { ok: false; code: string; message: string; ms: number };

export interface EnsureCall {
  store?: WeightStoreOptions;
  /** Abort through the signal once this many chunks have landed. */
  abortAfterChunks?: number;
  offline?: boolean;
}

export interface WeightsPageApi {
  ensure(model: string, call?: EnsureCall): Promise<Outcome<EnsureResult & { progress: WeightProgress[] }>>;
  /** Starts an ensure and does not wait for it (the page may be reloaded under it). */
  startEnsure(model: string, call?: EnsureCall): Promise<void>;
  /** Size and SHA-256 of the verified bytes readFile gives. */
  readFile(model: string, path: string, store?: WeightStoreOptions): Promise<Outcome<{ size: number; sha256: string; stats: WeightStats }>>;
  list(): Promise<StoredModel[]>;
  stats(store?: WeightStoreOptions): Promise<WeightStats>;
  delete(model: string): Promise<void>;
  /** Keeps a model in use (hold) until release(). */
  hold(model: string): Promise<void>;
  release(model: string): Promise<void>;
  /** Flips the bytes of one stored chunk in IndexedDB, leaving its recorded digest as it was. */
  corruptChunk(model: string, path: string, index: number): Promise<void>;
  /** worker/model's loadModelFolder reading through the store. */
  loadFolder(model: string): Promise<Outcome<{ hiddenSize: number; layers: number; vocab: number; fingerprint: string }>>;
  /** transformers.js AutoConfig + AutoTokenizer with env.customCache = store.customCache() and the coordinator as remoteHost. */
  transformers(model: string, text: string): Promise<Outcome<{ modelType: string; ids: number[] }>>;
  /** customCache().put then match of bytes transformers.js would hand over. */
  cacheRoundTrip(key: string, text: string): Promise<Outcome<{ matched: string | null; listed: StoredModel | null }>>;
}

declare global {
  interface Window {
    weightsE2E?: WeightsPageApi;
    /** loadedBytes of the ensure startEnsure began (read synchronously by waitForFunction). */
    weightsLoaded?: number;
  }
}
