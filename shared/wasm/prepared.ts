/**
 * The prepared form of an agent module: fuel-instrumented, its one memory made the host import with the module's
 * own limits and no cap written in. The coordinator computes it once per module and serves it immutable, so the
 * bytes a node compiles are the bytes the HTTP cache holds, and V8's code cache (keyed by URL) can apply; the memory
 * cap goes on the host's Memory object (its maximum), so one prepared module serves every cap. Bump
 * PREPARED_FORMAT when instrumentation or the rewrite changes: it is part of the URL.
 */
import { instrumentFuel } from './fuel';
import { memoryAsImport, type HostMemoryDescriptor } from './memory';

export const PREPARED_FORMAT = 1;

/** null: the module defines no memory or several (a node then prepares the plain bytes per cap itself). */
export function prepareForHost(bytes: Uint8Array): { bytes: Uint8Array; memory: HostMemoryDescriptor } | null {
  return memoryAsImport(instrumentFuel(bytes));
}
