/**
 * Cross-site request refusal: a browser on another site must not be able to change state here with a
 * "simple" request (a form POST or a no-cors fetch, which skip CORS preflight). A POST, PUT, PATCH or
 * DELETE is refused with CROSS_SITE_REFUSED (403) when the browser says it is cross-site
 * (`Sec-Fetch-Site: cross-site`), or when its `Origin` is not this coordinator's own (its host and port are
 * not the request's `Host` header), unless that origin is allowed.
 * Callers that are not browsers send neither header and are not affected; the JSON content-type gate
 * (server/http.ts) is the second wall, since a simple request cannot send application/json.
 */
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { AppError } from '../shared';

const STATE_CHANGING = new Set(['POST', 'PUT', 'PATCH', 'DELETE']);

export interface CrossSiteOptions {
  /** Origins (`scheme://host[:port]`) whose pages may change state here, beside this coordinator's own host. */
  allowOrigins?: readonly string[];
}

/** Why the request is refused, or null when it may go on. Exported for tests of the rules. */
export function crossSiteRefusal(req: Pick<FastifyRequest, 'method' | 'headers'>, allowed: ReadonlySet<string>): string | null {
  if (!STATE_CHANGING.has(req.method)) return null;
  const origin = typeof req.headers.origin === 'string' ? req.headers.origin : undefined;
  if (origin !== undefined && allowed.has(origin.toLowerCase())) return null;
  const fetchSite = req.headers['sec-fetch-site'];
  if (fetchSite === 'cross-site') return `the browser marked it cross-site (Sec-Fetch-Site: cross-site${origin ? `, Origin ${origin}` : ''})`;
  if (origin === undefined) return null;
  if (origin === 'null') return 'its Origin is "null" (a sandboxed frame, a file or a redirect)';
  let originHost: string;
  try {
    originHost = new URL(origin).host.toLowerCase();
  } catch {
    return `its Origin ${JSON.stringify(origin.slice(0, 100))} is not a URL`;
  }
  if (req.headers.host !== undefined && req.headers.host.toLowerCase() === originHost) return null;
  return `its Origin ${origin} is not this coordinator (${req.headers.host ?? 'no Host header'})`;
}

/** Adds the onRequest hook that refuses cross-site state-changing requests. */
export function installCrossSiteRefusal(app: FastifyInstance, opts: CrossSiteOptions = {}): void {
  const allowed = new Set((opts.allowOrigins ?? []).map((o) => o.toLowerCase().replace(/\/+$/, '')));
  app.addHook('onRequest', async (req) => {
    const why = crossSiteRefusal(req, allowed);
    if (why) {
      throw new AppError('CROSS_SITE_REFUSED', `${req.method} ${req.url.split('?')[0]} is refused: ${why}. Send it from this coordinator's own page, from a client that is not a browser, or start the coordinator with --allow-origin for that page.`, {
        origin: req.headers.origin ?? null,
        secFetchSite: req.headers['sec-fetch-site'] ?? null,
      });
    }
  });
}
