/** Calls to the coordinator this page was served from, with the operator's token. */
import type { PoolView, Whoami } from '../../shared';

/** An answer that was not 2xx: the status and the error body's code and message. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
    this.name = 'ApiError';
  }
}

const TIMEOUT_MS = 10_000;

export class OpsApi {
  constructor(readonly token: string | null) {}

  whoami(): Promise<Whoami> {
    return this.#call<Whoami>('GET', '/v1/whoami');
  }

  pool(): Promise<PoolView> {
    return this.#call<PoolView>('GET', '/v1/pool');
  }

  drain(nodeId: string): Promise<unknown> {
    return this.#call('POST', `/v1/nodes/${encodeURIComponent(nodeId)}/drain`, { reason: 'Drain requested on the operator page.' });
  }

  cancel(taskId: string): Promise<unknown> {
    return this.#call('POST', `/v1/tasks/${encodeURIComponent(taskId)}/cancel`, { reason: 'Cancelled on the operator page.' });
  }

  async #call<T>(method: 'GET' | 'POST', path: string, body?: unknown): Promise<T> {
    const headers: Record<string, string> = {};
    if (this.token) headers.authorization = `Bearer ${this.token}`;
    if (body !== undefined) headers['content-type'] = 'application/json';
    // Same origin: the page's own coordinator (its cross-site refusal accepts the page's own Origin).
    const res = await fetch(path, {
      method,
      headers,
      ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
      cache: 'no-store',
      signal: AbortSignal.timeout(TIMEOUT_MS),
    });
    const text = await res.text();
    let json: unknown = null;
    try {
      json = text ? JSON.parse(text) : null;
    } catch {
      json = null;
    }
    if (!res.ok) {
      const err = (json as { error?: { code?: string; message?: string } } | null)?.error;
      throw new ApiError(res.status, err?.code ?? `HTTP_${res.status}`, err?.message ?? `${method} ${path} answered ${res.status}.`);
    }
    return json as T;
  }
}

/** What the roles may do here (server/access.ts): drain is the allocator's and shared (no tenant), cancel the planner's. */
export function permissions(me: Whoami | null): { drain: boolean; cancel: boolean } {
  if (!me) return { drain: false, cancel: false };
  const has = (r: string) => me.roles.includes(r) || me.roles.includes('admin');
  return { drain: has('allocator') && me.tenant === null, cancel: has('planner') };
}
