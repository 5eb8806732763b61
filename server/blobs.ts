/**
 * Blob bytes on disk, content-addressed: `<dir>/<sha256 hex>`. An upload streams into a temporary file in
 * the same folder while it is hashed and counted (never the whole body in memory), and is renamed to its
 * digest only when it is complete and within the limit; an aborted or over-large upload leaves nothing.
 * Who owns which blob is the journal's (blobs, blob_owners); this file only keeps bytes.
 *
 * Several coordinators on one PostgreSQL journal: each upload is also written to the journal (`blob_chunks`, 4 MiB
 * a row, before the blob's record, so a recorded blob's bytes are all there), and a coordinator asked for a blob
 * another one received fetches it from the journal once, checks its digest and keeps it in its own folder.
 */
import { createHash, randomUUID } from 'node:crypto';
import { createReadStream, createWriteStream, existsSync, mkdirSync, renameSync, rmSync, statSync } from 'node:fs';
import { open as openFile } from 'node:fs/promises';
import type { ReadStream } from 'node:fs';
import { once } from 'node:events';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { AppError, LIMITS } from '../shared';

/** Bytes of one blob chunk in a shared journal. */
export const BLOB_CHUNK_BYTES = 4 << 20;

/** Where a shared journal keeps blob bytes for every coordinator (server/journal.ts). */
export interface BlobShelf {
  putBlobChunk(sha256: string, n: number, bytes: Uint8Array): void;
  blobChunk(sha256: string, n: number): Buffer | null;
}

export class BlobStore {
  readonly dir: string;
  readonly maxBytes: number;
  readonly #shelf: BlobShelf | null;
  /** Fetches from the shelf in flight, by digest. */
  readonly #fetching = new Map<string, Promise<boolean>>();

  constructor(dir: string, maxBytes: number = LIMITS.maxBlobBytes, shelf: BlobShelf | null = null) {
    this.dir = dir;
    this.maxBytes = maxBytes;
    this.#shelf = shelf;
    mkdirSync(dir, { recursive: true });
  }

  #path(hex: string): string {
    return join(this.dir, hex);
  }

  has(hex: string): boolean {
    return existsSync(this.#path(hex));
  }

  size(hex: string): number | null {
    try {
      return statSync(this.#path(hex)).size;
    } catch {
      return null;
    }
  }

  open(hex: string): ReadStream {
    return createReadStream(this.#path(hex));
  }

  tooLarge(): AppError {
    return new AppError('BLOB_TOO_LARGE', `The blob is larger than ${this.maxBytes} bytes; split the input into several blobs.`, { limit: this.maxBytes });
  }

  /**
   * Streams `body` to a temporary file, hashing and counting as it goes; past `maxBytes` it stops reading
   * and throws BLOB_TOO_LARGE (the temporary file removed). Answers the digest and size; the bytes are then
   * kept under the digest (a second upload of the same bytes replaces nothing).
   */
  async put(body: Readable): Promise<{ sha256: string; bytes: number }> {
    const { sha256, bytes } = await this.#spool(body as AsyncIterable<Uint8Array>, this.maxBytes, () => true);
    if (this.#shelf) await this.#publish(sha256);
    return { sha256, bytes };
  }

  /**
   * Streams `chunks` into a temporary file in the folder, hashing and counting; past `limit` bytes it stops and
   * throws BLOB_TOO_LARGE (the file removed). The bytes are then kept under their digest when `keep` says so (a
   * second copy of bytes already here replaces nothing), else removed. Answers the digest, the size and whether kept.
   */
  async #spool(chunks: AsyncIterable<Uint8Array>, limit: number, keep: (sha256: string, bytes: number) => boolean): Promise<{ sha256: string; bytes: number; kept: boolean }> {
    const tmp = this.#path(`.upload-${randomUUID()}`);
    const out = createWriteStream(tmp);
    // Heard for the stream's whole life, not only while a write waits: destroyed below while a write is in
    // flight, the stream waits for that write, which then fails (ERR_STREAM_DESTROYED), and emits the failure
    // as 'error' after destroy(); and a write that fails while none waits (ENOSPC) is emitted with none
    // listening. Unheard, either is an uncaught exception.
    let failed = null as Error | null;
    out.on('error', (err) => (failed ??= err));
    const closed = new Promise<void>((resolve) => out.once('close', resolve));
    const hash = createHash('sha256');
    let bytes = 0;
    try {
      for await (const chunk of chunks) {
        if (failed) throw failed;
        bytes += chunk.length;
        if (bytes > limit) throw this.tooLarge();
        hash.update(chunk);
        if (!out.write(chunk)) await once(out, 'drain');
      }
      await new Promise<void>((resolve, reject) => out.end((err?: Error | null) => (err ? reject(err) : resolve())));
    } catch (err) {
      out.destroy();
      await closed; // after any write in flight and the descriptor's close: nothing more is written to the file
      rmSync(tmp, { force: true });
      throw err;
    }
    const sha256 = hash.digest('hex');
    const kept = keep(sha256, bytes);
    if (!kept || this.has(sha256)) rmSync(tmp, { force: true });
    else renameSync(tmp, this.#path(sha256));
    return { sha256, bytes, kept };
  }

  /** Writes a blob's bytes to the shelf, chunk by chunk (chunks already there are kept). */
  async #publish(hex: string): Promise<void> {
    const fh = await openFile(this.#path(hex), 'r');
    try {
      const buf = Buffer.alloc(BLOB_CHUNK_BYTES);
      for (let n = 0; ; n++) {
        const { bytesRead } = await fh.read(buf, 0, BLOB_CHUNK_BYTES, n * BLOB_CHUNK_BYTES);
        if (bytesRead === 0 && n > 0) break;
        this.#shelf!.putBlobChunk(hex, n, buf.subarray(0, bytesRead));
        if (bytesRead < BLOB_CHUNK_BYTES) break;
      }
    } finally {
      await fh.close();
    }
  }

  /**
   * Whether the bytes of blob `hex` (`size` bytes, as recorded) are here, fetching them from the shelf first
   * when another coordinator received them. Bytes that do not hash to `hex` or miss a chunk are not kept (false).
   */
  ensure(hex: string, size: number): Promise<boolean> {
    if (this.has(hex)) return Promise.resolve(true);
    if (!this.#shelf) return Promise.resolve(false);
    let p = this.#fetching.get(hex);
    if (!p) {
      p = this.#fetch(hex, size).finally(() => this.#fetching.delete(hex));
      this.#fetching.set(hex, p);
    }
    return p;
  }

  async #fetch(hex: string, size: number): Promise<boolean> {
    const shelf = this.#shelf!;
    async function* chunks(): AsyncGenerator<Uint8Array> {
      let got = 0;
      for (let n = 0; n === 0 || got < size; n++) {
        const chunk = shelf.blobChunk(hex, n);
        if (chunk === null || (chunk.length === 0 && got < size)) return;
        got += chunk.length;
        yield chunk;
        // Each chunk is one round trip to the journal: let the event loop run between them.
        await new Promise((r) => setImmediate(r));
      }
    }
    try {
      return (await this.#spool(chunks(), size, (sha256, bytes) => bytes === size && sha256 === hex)).kept;
    } catch (err) {
      if (err instanceof AppError && err.code === 'BLOB_TOO_LARGE') return false; // more bytes than the record says
      throw err;
    }
  }
}
