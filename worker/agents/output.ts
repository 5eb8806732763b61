/** stdout and stderr for an agent: byte-counting sinks that end the run past their cap. */
import { ConsoleStdout } from '@bjorn3/browser_wasi_shim';
import { AppError } from '../../shared';

export class CappedOutput extends ConsoleStdout {
  readonly #chunks: Uint8Array[] = [];
  #bytes = 0;
  /** The agent wrote past the cap (what fit was kept). */
  overflowed = false;

  constructor(
    readonly stream: 'stdout' | 'stderr',
    readonly cap: number,
  ) {
    super(() => undefined);
  }

  get bytes(): number {
    return this.#bytes;
  }

  /** Keeps what fits under the cap, then throws: the throw unwinds the agent and ends the run. */
  override fd_write(data: Uint8Array): { ret: number; nwritten: number } {
    const room = this.cap - this.#bytes;
    if (data.byteLength > room) {
      if (room > 0) this.#push(data.subarray(0, room));
      this.overflowed = true;
      throw new AppError(
        'AGENT_OUTPUT_LIMIT',
        `The agent wrote more than ${this.cap} bytes to ${this.stream}; raise limits.max${this.stream === 'stdout' ? 'Stdout' : 'Stderr'}Bytes or make the agent write less.`,
        { stream: this.stream, cap: this.cap },
      );
    }
    this.#push(data);
    return { ret: 0, nwritten: data.byteLength };
  }

  #push(data: Uint8Array): void {
    this.#chunks.push(data);
    this.#bytes += data.byteLength;
  }

  /** Everything written, as one byte array. */
  contents(): Uint8Array {
    if (this.#chunks.length === 1) return this.#chunks[0];
    const out = new Uint8Array(this.#bytes);
    let off = 0;
    for (const c of this.#chunks) {
      out.set(c, off);
      off += c.byteLength;
    }
    return out;
  }

  text(): string {
    return new TextDecoder('utf-8', { fatal: false }).decode(this.contents());
  }
}
