/**
 * Stop strings over streamed text: the text is cut before the first occurrence of any stop string,
 * and while streaming, a tail that could be the start of a stop string is held back until it is
 * known not to be one.
 */
export class StopMatcher {
  readonly #stops: readonly string[];
  /** Text not yet released: it ends with a possible start of a stop string. */
  #held = '';
  #stopped = false;

  constructor(stops: readonly string[] = []) {
    this.#stops = stops.filter((s) => s.length > 0);
  }

  get stopped(): boolean {
    return this.#stopped;
  }

  /**
   * Adds text; returns what may be released now and whether a stop string ended the text (then the
   * returned text is everything before it, and later pushes return '').
   */
  push(delta: string): { text: string; stopped: boolean } {
    if (this.#stopped) return { text: '', stopped: true };
    // Every possible match starts inside the held tail or later (the tail is the longest suffix that
    // could begin one), so searching held + delta finds the first occurrence in the whole text.
    const pending = this.#held + delta;
    let cut = -1;
    for (const s of this.#stops) {
      const at = pending.indexOf(s);
      if (at >= 0 && (cut < 0 || at < cut)) cut = at;
    }
    if (cut >= 0) {
      this.#stopped = true;
      this.#held = '';
      return { text: pending.slice(0, cut), stopped: true };
    }
    const hold = this.#holdLength(pending);
    this.#held = pending.slice(pending.length - hold);
    return { text: pending.slice(0, pending.length - hold), stopped: false };
  }

  /** The text ended without a stop string: release the held tail. */
  flush(): string {
    const out = this.#stopped ? '' : this.#held;
    this.#held = '';
    return out;
  }

  /** Length of the longest suffix of `text` that is a proper prefix of a stop string. */
  #holdLength(text: string): number {
    let best = 0;
    for (const s of this.#stops) {
      for (let n = Math.min(s.length - 1, text.length); n > best; n--) {
        if (text.endsWith(s.slice(0, n))) {
          best = n;
          break;
        }
      }
    }
    return best;
  }
}
