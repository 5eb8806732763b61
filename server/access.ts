/**
 * Who may call which route: one table from `METHOD /route/:pattern` to the roles that may, and the
 * onRequest hook that applies it before the body is read. Default deny: a route missing from the
 * table is refused to everyone (open mode excepted), and auth.test.ts checks every registered route
 * has an entry. The hook sets `req.principal`; handlers read its tenant to scope tasks.
 */
import type { FastifyHttpOptions, FastifyInstance, FastifyRequest } from 'fastify';
import type { Server } from 'node:http';
import { AppError } from '../shared';
import { ANONYMOUS, Auth, type Principal, type Role } from './auth';

declare module 'fastify' {
  interface FastifyRequest {
    /** Who is calling: from the bearer token; ANONYMOUS on open routes without one; admin in open mode. */
    principal: Principal;
  }
}

export type Access =
  /** Anyone, no token needed (health, the page, content-addressed and public files). */
  | { readonly open: true }
  /** The node socket: the hub checks the join token (hello or authorization header). */
  | { readonly hub: true }
  /**
   * Callers holding one of `roles` (admin holds all). `shared`: the route changes what every tenant
   * shares (agents, nodes), so a tenant-bound token is refused even with the role.
   */
  | { readonly roles: readonly Role[]; readonly shared?: true };

const OPEN: Access = { open: true };
const TASK_READERS: Access = { roles: ['planner', 'validator'] };

/** `METHOD /pattern` → who may call it. HEAD routes follow their GET. */
export const ACCESS: Readonly<Record<string, Access>> = {
  'GET /healthz': OPEN,
  'GET /readyz': OPEN,
  // The API described (server/openapi.ts): routes, schemas and roles, nothing secret; each route still checks its token.
  'GET /openapi.json': OPEN,
  'GET /docs': OPEN,
  'GET /*': OPEN, // the node page (static files)
  'GET /ort/*': OPEN,
  'GET /v1/modules/:sha256': OPEN,
  'GET /v1/models/:name/manifest': OPEN,
  'GET /models/:name/*': OPEN,

  'GET /v1/nodes/ws': { hub: true },

  'POST /v1/tasks': { roles: ['planner'] },
  'GET /v1/tasks': TASK_READERS,
  'GET /v1/tasks/:id': TASK_READERS,
  'GET /v1/tasks/:id/checkpoint': { roles: ['planner', 'node'] },
  'GET /v1/tasks/:id/wait': TASK_READERS,
  'GET /v1/tasks/:id/events': TASK_READERS,
  'POST /v1/tasks/:id/cancel': { roles: ['planner'] },
  'POST /v1/tasks/:id/verdict': { roles: ['validator'] },

  'GET /v1/models': { roles: ['planner'] },
  'GET /v1/models/:name': { roles: ['planner'] },
  'POST /v1/chat/completions': { roles: ['planner'] },
  'POST /v1/completions': { roles: ['planner'] },

  'GET /metrics': { roles: ['refiner'] },
  'GET /v1/kpis': { roles: ['refiner'] },
  'GET /v1/maintenance': { roles: ['refiner'] },
  'PUT /v1/maintenance': { roles: ['admin'], shared: true },
  'GET /v1/nodes': { roles: ['refiner', 'allocator'] },
  'POST /v1/nodes/:id/drain': { roles: ['allocator'], shared: true },
  'PUT /v1/nodes/:id/caps': { roles: ['allocator'], shared: true },
  // The operator page (ops.html): the pool's view, and the caller's own roles (open: it says only what the token sent may do).
  'GET /v1/pool': { roles: ['refiner', 'allocator'] },
  'GET /v1/whoami': OPEN,

  'PUT /v1/agents/:name/versions/:version': { roles: ['evolver'], shared: true },
  'GET /v1/agents': { roles: ['evolver', 'planner', 'validator'] },
  'GET /v1/agents/:name': { roles: ['evolver', 'planner', 'validator'] },

  // Adapters are shared by every tenant (one registry per base), so uploads take a token without a tenant.
  'PUT /v1/adapters/:base/:name': { roles: ['evolver'], shared: true },
  'POST /v1/adapters/:base/:name/merge': { roles: ['evolver'], shared: true },
  'GET /v1/adapters': { roles: ['planner', 'evolver'] },
  'GET /v1/adapters/:base/:name': { roles: ['planner', 'evolver'] },
  'GET /v1/adapters/:base/:name/:file': { roles: ['planner', 'evolver'] },

  // Datasets are tenant data: a tenant-bound token sees its own tenant's uploads only (server/routes/datasets.ts);
  // node tokens may read the content of any (a node fetches the dataset its train task names).
  'POST /v1/datasets': { roles: ['planner'] },
  'GET /v1/datasets': { roles: ['planner'] },
  'GET /v1/datasets/:sha256': { roles: ['planner'] },
  'GET /v1/datasets/:sha256/content': { roles: ['planner', 'node'] },

  // Blobs (large agent inputs by reference) are tenant data like datasets; node tokens may read any blob (server/routes/blobs.ts).
  'POST /v1/blobs': { roles: ['planner', 'evolver'] },
  'GET /v1/blobs': { roles: ['planner', 'evolver'] },
  'GET /v1/blobs/:sha256': { roles: ['planner', 'evolver', 'node'] },

  'PUT /v1/quotas/:tenant': { roles: ['allocator'] },
  'GET /v1/quotas': { roles: ['allocator'] },
};

export function routeKey(method: string, url: string): string {
  return `${method === 'HEAD' ? 'GET' : method} ${url}`;
}

const registered = new WeakMap<FastifyInstance, string[]>();

/** Every route registered on `app` after installAccess, as `METHOD /pattern` (HEAD folded into GET). */
export function registeredRoutes(app: FastifyInstance): readonly string[] {
  return [...new Set(registered.get(app) ?? [])];
}

/** The caller's tenant when the token is bound to one, else null (any tenant). */
export function tenantOf(req: FastifyRequest): string | null {
  return req.principal.tenant;
}

/**
 * The tenant whose uploads (blobs, datasets) the caller may read: null (any) for a node token or a token
 * without a tenant. Nodes fetch what the tasks assigned to them name, and a node already sees every input
 * it is given.
 */
export function readerTenant(req: FastifyRequest): string | null {
  return Auth.has(req.principal, 'node') ? null : tenantOf(req);
}

/**
 * Adds the hook (before any route is registered, so routes in plugins are collected too).
 * A missing or unknown token is UNAUTHORIZED (401, `www-authenticate: Bearer`); a token without
 * the role FORBIDDEN (403).
 */
export function installAccess(app: FastifyInstance, auth: Auth): void {
  const routes: string[] = [];
  registered.set(app, routes);
  app.addHook('onRoute', (route) => {
    const methods = Array.isArray(route.method) ? route.method : [route.method];
    for (const m of methods) routes.push(routeKey(m, route.url));
  });
  app.decorateRequest('principal', null as unknown as Principal);
  app.addHook('onRequest', async (req, reply) => {
    const principal = auth.verify(Auth.bearer(req.headers.authorization));
    req.principal = principal ?? ANONYMOUS;
    const url = req.routeOptions.url;
    if (url === undefined || auth.isOpen) return; // no route: the 404 handler answers
    const key = routeKey(req.method, url);
    const access = ACCESS[key];
    if (access === undefined) {
      throw new AppError('FORBIDDEN', `${key} has no entry in the access table (server/access.ts), so no token may call it.`, { route: key });
    }
    if ('open' in access || 'hub' in access) return;
    if (principal === null) {
      void reply.header('www-authenticate', 'Bearer');
      throw new AppError('UNAUTHORIZED', `${key} needs a bearer token with role ${access.roles.join(' or ')}: send authorization: Bearer <token> (npm start prints the admin token).`, {
        roles: access.roles,
      });
    }
    if (!access.roles.some((r) => Auth.has(principal, r))) {
      throw new AppError('FORBIDDEN', `Token ${principal.id} lacks the role ${key} needs (${access.roles.join(' or ')}).`, { roles: access.roles, id: principal.id });
    }
    if (access.shared && principal.tenant !== null) {
      throw new AppError('FORBIDDEN', `${key} changes what every tenant shares; token ${principal.id} is bound to tenant ${principal.tenant}, use a token without a tenant.`, {
        id: principal.id,
        tenant: principal.tenant,
      });
    }
  });
}

export type LogOptions = boolean | { level?: string; stream?: { write(line: string): void } };

/** `token=` query values (the page link carries the join token) → `token=[redacted]`. */
export function redactTokens(url: string): string {
  return url.replace(/([?&]token=)[^&#]*/gi, '$1[redacted]');
}

/** Fastify's logger options with a request serializer that never writes a token (headers are not logged at all). */
export function loggerOptions(opt: LogOptions | undefined): FastifyHttpOptions<Server>['logger'] {
  if (!opt) return false;
  const o = opt === true ? {} : opt;
  return {
    level: o.level ?? 'info',
    ...(o.stream ? { stream: o.stream } : {}),
    serializers: {
      req: (req: FastifyRequest) => ({ method: req.method, url: redactTokens(req.url), host: req.host, remoteAddress: req.ip }),
    },
  };
}
