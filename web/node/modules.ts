/**
 * Gets agent modules into the runtime: each hash is fetched from the coordinator
 * at most once at a time, however many tasks ask for it together.
 */
import { AppError, deserializeError, isErrorCode, type ErrorInfo } from '../../shared';
import type { AgentRuntime } from '../../worker';

export type FetchLike = (url: string) => Promise<Response>;

export class ModuleLoader {
  readonly #runtime: Pick<AgentRuntime, 'hasModule' | 'addModule'>;
  readonly #baseUrl: string;
  readonly #fetch: FetchLike;
  readonly #pending = new Map<string, Promise<void>>();
  readonly #loaded = new Set<string>();
  #fetches = 0;

  constructor(runtime: Pick<AgentRuntime, 'hasModule' | 'addModule'>, baseUrl: string, fetchImpl?: FetchLike) {
    this.#runtime = runtime;
    this.#baseUrl = baseUrl.replace(/\/$/, '');
    this.#fetch = fetchImpl ?? ((url) => globalThis.fetch(url));
  }

  /** Hashes the runtime holds now (for the node's capabilities); ones it evicted are forgotten. */
  get hashes(): string[] {
    for (const h of this.#loaded) if (!this.#runtime.hasModule(h)) this.#loaded.delete(h);
    return [...this.#loaded];
  }

  /** How many HTTP fetches were made (each hash once unless one failed). */
  get fetches(): number {
    return this.#fetches;
  }

  has(hash: string): boolean {
    return this.#runtime.hasModule(hash);
  }

  /** Resolves once the runtime has the module; concurrent calls share one fetch. */
  ensure(hash: string): Promise<void> {
    if (this.#runtime.hasModule(hash)) return Promise.resolve();
    let p = this.#pending.get(hash);
    if (!p) {
      p = this.#load(hash).finally(() => this.#pending.delete(hash));
      this.#pending.set(hash, p);
    }
    return p;
  }

  async #load(hash: string): Promise<void> {
    this.#fetches++;
    const url = `${this.#baseUrl}/v1/modules/${hash}`;
    let res: Response;
    try {
      res = await this.#fetch(url);
    } catch (err) {
      throw new AppError('INTERNAL', `Could not fetch module ${hash} from ${url}: ${String(err)}. Check the coordinator.`, undefined, {
        cause: err,
      });
    }
    if (!res.ok) throw await responseError(res, `Fetching module ${hash} answered ${res.status}.`);
    const bytes = new Uint8Array(await res.arrayBuffer());
    await this.#runtime.addModule(hash, bytes);
    this.#loaded.add(hash);
  }
}

async function responseError(res: Response, fallback: string): Promise<AppError> {
  try {
    const body = (await res.json()) as { error?: Partial<ErrorInfo> };
    const e = body.error;
    if (e && isErrorCode(e.code)) {
      return deserializeError({ code: e.code, name: e.name ?? 'AppError', message: e.message ?? fallback, details: e.details });
    }
  } catch {
    // not JSON: fall through
  }
  return new AppError(res.status === 404 ? 'NOT_FOUND' : 'INTERNAL', fallback);
}
