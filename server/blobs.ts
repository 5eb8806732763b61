/**
 * Blob bytes on disk, content-addressed: `<dir>/<sha256 hex>`. An upload streams into a temporary file in
 * the same folder while it is hashed and counted (never the whole body in memory), and is renamed to its
 * digest only when it is complete and within the limit; an aborted or over-large upload leaves nothing.
 * Who owns which blob is the journal's (blobs, blob_owners); this file only keeps bytes.
 */
import { createHash, randomUUID } from 'node:crypto';
import { createReadStream, createWriteStream, existsSync, mkdirSync, renameSync, rmSync, statSync } from 'node:fs';
import type { ReadStream } from 'node:fs';
import { once } from 'node:events';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { AppError, LIMITS } from '../shared';

export class BlobStore {
  readonly dir: string;
  readonly maxBytes: number;

  constructor(dir: string, maxBytes: number = LIMITS.maxBlobBytes) {
    this.dir = dir;
    this.maxBytes = maxBytes;
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
    const tmp = this.#path(`.upload-${randomUUID()}`);
    const out = createWriteStream(tmp);
    const hash = createHash('sha256');
    let bytes = 0;
    try {
      for await (const chunk of body) {
        const buf = chunk as Buffer;
        bytes += buf.length;
        if (bytes > this.maxBytes) throw this.tooLarge();
        hash.update(buf);
        if (!out.write(buf)) await once(out, 'drain');
      }
      await new Promise<void>((resolve, reject) => out.end((err?: Error | null) => (err ? reject(err) : resolve())));
    } catch (err) {
      out.destroy();
      rmSync(tmp, { force: true });
      throw err;
    }
    const sha256 = hash.digest('hex');
    if (this.has(sha256)) rmSync(tmp, { force: true });
    else renameSync(tmp, this.#path(sha256));
    return { sha256, bytes };
  }
}
