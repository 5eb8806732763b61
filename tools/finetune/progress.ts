/**
 * The training progress line: step/total, a bar, loss, eval loss when one was computed, tokens/s
 * and ETA. On a terminal it redraws one line; otherwise it writes plain lines (at most ~40 of them
 * per run, plus one for every eval), so logs stay readable.
 */

export interface ProgressUpdate {
  step: number;
  total: number;
  /** Mean training loss of this optimizer step. */
  loss: number;
  /** Latest eval loss, when one has been computed. */
  evalLoss?: number;
  /** True when evalLoss was computed at this step. */
  evaluated?: boolean;
  /** Loss tokens per second since the start. */
  tokensPerSec: number;
  /** Seconds since the start. */
  elapsedSec: number;
}

export interface ProgressSink {
  isTTY?: boolean;
  columns?: number;
  write(text: string): unknown;
}

export function formatDuration(sec: number): string {
  if (!Number.isFinite(sec) || sec < 0) return '--:--';
  const s = Math.round(sec);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const r = s % 60;
  const mm = String(m).padStart(2, '0');
  const ss = String(r).padStart(2, '0');
  return h > 0 ? `${h}:${mm}:${ss}` : `${mm}:${ss}`;
}

/** One progress line, without the bar when `barWidth` is 0. */
export function formatProgress(u: ProgressUpdate, barWidth: number): string {
  const frac = u.total > 0 ? Math.min(1, u.step / u.total) : 1;
  const eta = u.step > 0 ? (u.elapsedSec / u.step) * (u.total - u.step) : Number.NaN;
  const width = String(u.total).length;
  const parts = [`step ${String(u.step).padStart(width)}/${u.total}`];
  if (barWidth > 0) {
    const full = Math.round(frac * barWidth);
    parts.push(`[${'#'.repeat(full)}${'.'.repeat(barWidth - full)}]`);
  }
  parts.push(`loss ${u.loss.toFixed(4)}`);
  if (u.evalLoss !== undefined) parts.push(`eval ${u.evalLoss.toFixed(4)}`);
  parts.push(`${u.tokensPerSec.toFixed(0)} tok/s`);
  parts.push(`ETA ${formatDuration(eta)}`);
  return parts.join('  ');
}

export class ProgressBar {
  readonly #sink: ProgressSink;
  #lastPlainStep = -1;
  #drawn = false;

  constructor(sink: ProgressSink) {
    this.#sink = sink;
  }

  update(u: ProgressUpdate): void {
    if (this.#sink.isTTY) {
      const cols = this.#sink.columns && this.#sink.columns > 20 ? this.#sink.columns : 100;
      const line = formatProgress(u, Math.max(0, Math.min(30, cols - 80)));
      this.#sink.write(`\r\x1b[2K${line.slice(0, cols - 1)}`);
      this.#drawn = true;
      return;
    }
    const every = Math.max(1, Math.ceil(u.total / 40));
    if (u.evaluated || u.step === u.total || u.step === 1 || u.step - this.#lastPlainStep >= every) {
      this.#sink.write(`${formatProgress(u, 0)}\n`);
      this.#lastPlainStep = u.step;
    }
  }

  /** A line of its own (above the bar on a terminal). */
  note(text: string): void {
    this.#sink.write(`${this.#sink.isTTY && this.#drawn ? '\r\x1b[2K' : ''}${text}\n`);
    this.#drawn = false;
  }

  /** Ends the bar's line on a terminal. */
  done(): void {
    if (this.#sink.isTTY && this.#drawn) this.#sink.write('\n');
    this.#drawn = false;
  }
}
