/**
 * Prepares agent modules (shared/wasm/prepared.ts: fuel instrumentation, memory as the host's import) on a
 * worker thread (server/thread.ts): on a 64 MiB module that is about a second of CPU, which would otherwise
 * stall the event loop that serves tasks, heartbeats and leases. One thread, started on first use; requests
 * queue on it.
 */
import { createHash } from 'node:crypto';
import { prepareForHost, type HostMemoryDescriptor } from '../shared';
import { OffThread, serveCalls } from './thread';

export interface PreparedModule {
  bytes: Buffer;
  /** Hex SHA-256 of `bytes`. */
  sha256: string;
  memory: HostMemoryDescriptor;
}

type Prepared = { bytes: Uint8Array; sha256: string; memory: HostMemoryDescriptor } | null;

const ROLE = 'module-preparer';

/** Prepares on one worker thread; null when the module has no prepared form (no memory, or several). */
export class ModulePreparer {
  readonly #thread = new OffThread<Uint8Array, Prepared>(import.meta.url, ROLE);

  async prepare(bytes: Uint8Array): Promise<PreparedModule | null> {
    const p = await this.#thread.call(bytes);
    return p && { bytes: Buffer.from(p.bytes.buffer, p.bytes.byteOffset, p.bytes.byteLength), sha256: p.sha256, memory: p.memory };
  }

  close(): Promise<void> {
    return this.#thread.close();
  }
}

serveCalls<Uint8Array, Prepared>(
  ROLE,
  (bytes) => {
    const out = prepareForHost(bytes);
    return out && { bytes: out.bytes, sha256: createHash('sha256').update(out.bytes).digest('hex'), memory: out.memory };
  },
  (p) => (p ? [p.bytes.buffer as ArrayBuffer] : []),
);
