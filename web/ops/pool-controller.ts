/**
 * Polls GET /v1/pool for an element while it is connected and the page is visible: every 2 s, one
 * request at a time (each bounded by the API's timeout), paused while the tab is hidden, stopped
 * when the token is refused (401/403: the page asks for another).
 */
import type { ReactiveController, ReactiveControllerHost } from 'lit';
import type { PoolView, Whoami } from '../../shared';
import { ApiError, OpsApi } from './api';

export const POLL_MS = 2_000;

export class PoolController implements ReactiveController {
  readonly #host: ReactiveControllerHost;
  #api: OpsApi = new OpsApi(null);
  #timer: ReturnType<typeof setTimeout> | null = null;
  #inFlight = false;
  /** A refresh asked for while a poll was in flight: poll again as soon as it ends. */
  #again = false;
  #connected = false;
  /** Bumped by each new token: answers to an older one are dropped. */
  #generation = 0;
  view: PoolView | null = null;
  me: Whoami | null = null;
  /** The last failure, shown on the page; null after a good answer. */
  error: ApiError | Error | null = null;
  /** The token was refused: polling stopped until another is given. */
  refused = false;

  constructor(host: ReactiveControllerHost) {
    this.#host = host;
    host.addController(this);
  }

  get api(): OpsApi {
    return this.#api;
  }

  /** A new token: who it is, then the pool, polled from now on. */
  setToken(token: string | null): void {
    this.#api = new OpsApi(token);
    this.#generation++;
    this.view = null;
    this.me = null;
    this.error = null;
    this.refused = false;
    this.#host.requestUpdate();
    void this.#whoami();
    this.refresh();
  }

  hostConnected(): void {
    this.#connected = true;
    document.addEventListener('visibilitychange', this.#onVisibility);
    this.refresh();
  }

  hostDisconnected(): void {
    this.#connected = false;
    document.removeEventListener('visibilitychange', this.#onVisibility);
    this.#clear();
  }

  /** Polls now (after an action, say), then every POLL_MS. */
  refresh(): void {
    this.#clear();
    if (!this.#connected || this.refused || document.hidden) return;
    void this.#poll();
  }

  readonly #onVisibility = (): void => {
    if (document.hidden) this.#clear();
    else this.refresh();
  };

  #clear(): void {
    if (this.#timer !== null) clearTimeout(this.#timer);
    this.#timer = null;
  }

  async #whoami(): Promise<void> {
    const gen = this.#generation;
    try {
      const me = await this.#api.whoami();
      if (gen !== this.#generation) return;
      this.me = me;
    } catch (err) {
      if (gen === this.#generation) this.error = err as Error;
    }
    this.#host.requestUpdate();
  }

  async #poll(): Promise<void> {
    if (this.#inFlight) {
      this.#again = true;
      return;
    }
    this.#inFlight = true;
    const gen = this.#generation;
    try {
      const view = await this.#api.pool();
      if (gen === this.#generation) {
        this.view = view;
        this.error = null;
      }
    } catch (err) {
      if (gen === this.#generation) {
        this.error = err as Error;
        if (err instanceof ApiError && (err.status === 401 || err.status === 403)) this.refused = true;
      }
    } finally {
      this.#inFlight = false;
    }
    this.#host.requestUpdate();
    if (this.#connected && !this.refused && !document.hidden && this.#timer === null) {
      const delay = this.#again ? 0 : POLL_MS;
      this.#again = false;
      this.#timer = setTimeout(() => {
        this.#timer = null;
        void this.#poll();
      }, delay);
    }
  }
}
