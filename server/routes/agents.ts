/**
 * Agent registry routes (Layer 7 publishes versions), module downloads for the
 * nodes (immutable, by content hash) and Layer 8's tenant quotas.
 */
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { AppError, LIMITS, PREPARED_FORMAT, parseModuleHash, parseName } from '../../shared';
import { tenantOf } from '../access';
import type { Context } from '../context';
import type { PreparedModule } from '../prepare-worker';
import type { RouteConfig } from '../http';
import type { AgentVersion } from '../registry';
import { AgentConfigSchema, QuotaSchema, checkCompiled, type AgentConfig } from '../validate';

function view(v: AgentVersion, verdicts?: Map<string, { pass: number; fail: number }>) {
  return {
    verdicts: verdicts?.get(v.version) ?? { pass: 0, fail: 0 },
    name: v.name,
    version: v.version,
    sha256: v.moduleHash,
    size: v.size,
    config: v.config,
    createdAt: v.createdAt,
    moduleUrl: `/v1/modules/${v.moduleHash}`,
  };
}

/** Prepared modules kept in memory (the most recently used one stays even when larger). */
const PREPARED_CACHE_BYTES = 256 << 20;

function parseConfig(raw: string | undefined): AgentConfig {
  if (raw === undefined || raw === '') return {};
  let value: unknown;
  try {
    value = JSON.parse(raw);
  } catch {
    throw new AppError('BAD_JSON', 'The agent config (query "config" or header x-agent-config) is not valid JSON.');
  }
  return checkCompiled(AgentConfigSchema, value, 'SCHEMA_VIOLATION', '/config');
}

export function agentRoutes(app: FastifyInstance, ctx: Context): void {
  // The module bytes: only this route's scope reads application/wasm and octet-stream (every other route
  // refuses them with 415 before reading the body; server/http.ts installInputGate).
  void app.register(async (scope) => {
    scope.addContentTypeParser(
      ['application/wasm', 'application/octet-stream'],
      { parseAs: 'buffer', bodyLimit: LIMITS.maxWasmBytes },
      (_req, body, done) => done(null, body),
    );
    const config: RouteConfig = {
      tooLarge: () =>
        new AppError('WASM_TOO_LARGE', `The module is larger than ${LIMITS.maxWasmBytes} bytes; strip debug sections (wasm-opt --strip-debug) or split the agent.`, {
          limit: LIMITS.maxWasmBytes,
        }),
    };
    scope.put('/v1/agents/:name/versions/:version', { bodyLimit: LIMITS.maxWasmBytes, config }, publish);
  });

  async function publish(req: FastifyRequest, reply: FastifyReply) {
    const params = req.params as { name: string; version: string };
    const name = parseName(params.name);
    const version = parseName(params.version);
    if (!Buffer.isBuffer(req.body)) {
      throw new AppError('UNSUPPORTED_MEDIA_TYPE', 'Upload the module bytes with content-type application/wasm (or application/octet-stream).');
    }
    const q = req.query as { config?: string };
    const header = req.headers['x-agent-config'];
    const config = parseConfig(q.config ?? (Array.isArray(header) ? header[0] : header));
    const bytes = new Uint8Array(req.body.buffer, req.body.byteOffset, req.body.byteLength);
    const { created, agent } = ctx.registry.publish(name, version, bytes, config);
    void reply.code(created ? 201 : 200);
    return view(agent, ctx.journal.agentVerdicts(name));
  }

  app.get('/v1/agents', async () => ({
    agents: ctx.registry.agents().map((a) => {
      const verdicts = ctx.journal.agentVerdicts(a.name);
      return { name: a.name, latest: a.latest, versions: a.versions.map((v) => view(v, verdicts)) };
    }),
  }));

  app.get('/v1/agents/:name', async (req) => {
    const name = parseName((req.params as { name: string }).name);
    const a = ctx.registry.agent(name);
    if (!a) throw new AppError('AGENT_NOT_FOUND', `No agent is named ${name}; GET /v1/agents lists them.`, { agent: name });
    const verdicts = ctx.journal.agentVerdicts(name);
    return { name: a.name, latest: a.latest, versions: a.versions.map((v) => view(v, verdicts)) };
  });

  app.get('/v1/modules/:sha256', async (req, reply) => {
    const hash = parseModuleHash((req.params as { sha256: string }).sha256);
    const preparedQuery = (req.query as { prepared?: string } | undefined)?.prepared;
    if (preparedQuery !== undefined) return sendPrepared(hash, preparedQuery, reply);
    const etag = `"${hash}"`;
    void reply.header('cache-control', 'public, max-age=31536000, immutable').header('etag', etag);
    if (req.headers['if-none-match'] === etag) return reply.code(304).send();
    const bytes = ctx.journal.getModule(hash);
    if (!bytes) throw new AppError('NOT_FOUND', `No module has SHA-256 ${hash}; publish it with PUT /v1/agents/:name/versions/:version.`, { sha256: hash });
    return reply.type('application/wasm').send(bytes);
  });

  /**
   * ?prepared=<PREPARED_FORMAT>: the module's prepared form (shared/wasm/prepared.ts), computed on first ask and
   * memoized (bounded), immutable like the plain bytes, with its digest and memory limits in headers.
   */
  const prepared = new Map<string, PreparedModule>();
  /** Preparations under way, shared by concurrent requests for one module. */
  const preparing = new Map<string, Promise<PreparedModule | null>>();
  let preparedBytes = 0;
  const sendPrepared = async (hash: string, format: string, reply: FastifyReply) => {
    if (format !== String(PREPARED_FORMAT)) {
      throw new AppError('NOT_FOUND', `Prepared format ${format.slice(0, 20)} is not served; this coordinator serves ?prepared=${PREPARED_FORMAT}.`, { format: PREPARED_FORMAT, prepared: false });
    }
    let entry = prepared.get(hash);
    if (!entry) {
      const bytes = ctx.journal.getModule(hash);
      if (!bytes) throw new AppError('NOT_FOUND', `No module has SHA-256 ${hash}; publish it with PUT /v1/agents/:name/versions/:version.`, { sha256: hash });
      let pending = preparing.get(hash);
      if (!pending) {
        // Off the event loop: about a second of CPU on a 64 MiB module.
        pending = ctx.preparer.prepare(bytes).finally(() => preparing.delete(hash));
        preparing.set(hash, pending);
      }
      const out = await pending;
      if (!out) throw new AppError('NOT_FOUND', `Module ${hash} has no prepared form (it defines no memory, or several); fetch the plain module.`, { sha256: hash, prepared: false });
      entry = prepared.get(hash) ?? out;
      if (!prepared.has(hash)) {
        prepared.set(hash, entry);
        preparedBytes += entry.bytes.byteLength;
        for (const [k, v] of prepared) {
          if (prepared.size <= 1 || preparedBytes <= PREPARED_CACHE_BYTES) break;
          prepared.delete(k);
          preparedBytes -= v.bytes.byteLength;
        }
      }
    } else {
      prepared.delete(hash);
      prepared.set(hash, entry);
    }
    const m = entry.memory;
    return reply
      .header('cache-control', 'public, max-age=31536000, immutable')
      .header('etag', `"${hash}-p${PREPARED_FORMAT}"`)
      .header('x-prepared-sha256', entry.sha256)
      .header('x-memory', `${m.initialPages},${m.maximumPages ?? ''},${m.shared ? 1 : 0}`)
      .header('access-control-expose-headers', 'x-prepared-sha256, x-memory')
      .type('application/wasm')
      .send(entry.bytes);
  };

  app.put('/v1/quotas/:tenant', async (req) => {
    const tenant = parseName((req.params as { tenant: string }).tenant);
    const own = tenantOf(req);
    if (own !== null && tenant !== own) {
      throw new AppError('FORBIDDEN', `This token is bound to tenant ${own}; it may set only that tenant's quota.`, { tenant: own });
    }
    const body = checkCompiled(QuotaSchema, req.body ?? {});
    const quota = { maxQueued: body.maxQueued ?? null, agentLimits: body.agentLimits ?? null, weight: body.weight ?? null, maxLeased: body.maxLeased ?? null };
    ctx.registry.setQuota(tenant, quota);
    ctx.journal.event('quota_set', null, null, { tenant, ...quota });
    return { tenant, ...quota };
  });

  app.get('/v1/quotas', async (req) => {
    const own = tenantOf(req);
    const all = ctx.registry.quotas();
    return { quotas: own === null ? all : Object.fromEntries(Object.entries(all).filter(([tenant]) => tenant === own)) };
  });
}
