/**
 * Re-renders an element at most a few times a second however many events arrive: the first ask
 * renders at once, asks within `intervalMs` after it are folded into one render when it passes.
 * Shared by the page's reactive controllers.
 */
export class RenderThrottle {
  readonly #render: () => void;
  readonly #intervalMs: number;
  #timer: ReturnType<typeof setTimeout> | null = null;
  #dirty = false;

  constructor(render: () => void, intervalMs: number) {
    this.#render = render;
    this.#intervalMs = intervalMs;
  }

  /** Something changed: render now, or once the interval since the last render has passed. */
  request(): void {
    if (this.#timer !== null) {
      this.#dirty = true;
      return;
    }
    this.render();
    this.#timer = setTimeout(() => {
      this.#timer = null;
      if (this.#dirty) this.request();
    }, this.#intervalMs);
  }

  /** Renders now; an ask still waiting for the interval is satisfied by it. */
  render(): void {
    this.#dirty = false;
    this.#render();
  }

  /** Drops a pending render (the host went away). */
  cancel(): void {
    if (this.#timer !== null) clearTimeout(this.#timer);
    this.#timer = null;
  }
}
