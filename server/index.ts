/**
 * The coordinator: HTTP API for Layer 2 and the other layers, WebSocket hub for
 * browser nodes, scheduler, journal. `createCoordinator` builds and starts one.
 */
import fastifyStatic from '@fastify/static';
import fastifyWebsocket from '@fastify/websocket';
import Fastify, { type FastifyInstance } from 'fastify';
import { createRequire } from 'node:module';
import type { AddressInfo } from 'node:net';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { LIMITS, type TrainPayload } from '../shared';
import { installAccess, loggerOptions, type LogOptions } from './access';
import { AdapterRegistry, storeTrainedAdapter } from './adapters';
import { Auth } from './auth';
import type { Context } from './context';
import { MAX_HEADER_BYTES, MAX_PARAM_LENGTH, clientErrorHandler, frameworkErrors, installErrorHandling, installInputGate } from './http';
import { Hub, normalizeOrigin } from './hub';
import { Journal, systemClock, type Clock } from './journal';
import { PgBus } from './bus';
import { journalFolder } from './sql';
import { Maintenance } from './maintenance';
import { Metrics } from './metrics';
import { ModelStore } from './models';
import { Registry } from './registry';
import { adapterRoutes } from './routes/adapters';
import { agentRoutes } from './routes/agents';
import { datasetRoutes } from './routes/datasets';
import { modelRoutes } from './routes/models';
import { ModelCatalog } from './openai/models';
import { blobRoutes } from './routes/blobs';
import { BlobStore } from './blobs';
import { openAiRoutes } from './routes/openai';
import { opsRoutes } from './routes/ops';
import { openApiRoutes } from './routes/openapi';
import { poolRoutes } from './routes/pool';
import { taskRoutes } from './routes/tasks';
import { Scheduler } from './scheduler';
import { JsonBodyParser } from './json';
import { ModulePreparer } from './prepare-worker';
import { Tracing, type TracingOptions } from './tracing';
import { TaskWatch } from './watch';
import { Webhooks, webhookSecretFor, type WebhookOptions } from './webhook';
import { installCrossSiteRefusal } from './csrf';

export { Journal, systemClock, type Clock, type StoredTask, type Ended, type Completion } from './journal';
export { isPostgresUrl, journalFolder } from './sql';
export { Hub } from './hub';
export { Auth, ANONYMOUS, ROLES, ensureLocalTokens, newToken, tokenId, type Principal, type Role, type AuthFileConfig, type AuthTokenEntry, type LocalTokens } from './auth';
export { Scheduler } from './scheduler';
export { Registry, effectiveLimits, type AgentVersion, type Quota } from './registry';
export { Metrics, type Kpi } from './metrics';
export { TaskWatch, type TaskEvent } from './watch';
export { NodeSession, Circuit, INFRA_CODES, type CircuitState } from './node';
export { ModelStore, type ModelManifest, type ModelFile, type ModelFolder, type ModelCollision, type ResolvedModelFile } from './models';
export { parseNodeMessage, parseSubmission, checkSpec } from './validate';

/** onnxruntime-web's dist folder (served at /ort/). */
const ORT_DIST = dirname(createRequire(import.meta.url).resolve('onnxruntime-web'));

export interface CoordinatorOptions {
  /**
   * A merged model's ONNX keeps its weights in external data files when they pass `above` bytes (default 1 GiB:
   * a protobuf is at most 2 GB), in files of at most `chunkBytes` (default 1 GiB).
   */
  mergeExternalData?: { above?: number; chunkBytes?: number };
  /** The journal: a SQLite file (':memory:' for unit tests) or a postgres:// URL. Default ./data/coordinator.db. */
  dbPath?: string;
  /**
   * Where the webhook secret, adapters and blobs live. Default: the SQLite journal's folder; for ':memory:' and
   * for a PostgreSQL journal a temporary folder removed on close (the CLIs pass ./data for PostgreSQL).
   */
  dataDir?: string;
  /**
   * Sync of the commits that record leases and results: 'normal' (default; safe
   * against a process crash, an OS crash may make the last attempts run again) or
   * 'full'. Submits are always 'full': on disk before the 202.
   */
  attemptSync?: 'full' | 'normal';
  /** 0 = any free port. Default 0. */
  port?: number;
  /** Default 127.0.0.1. */
  host?: string;
  /** The built page (dist/), served at / with cross-origin isolation headers. */
  staticDir?: string;
  /** Model folders (Hugging Face layout), served at /models/ with manifests at /v1/models/:name/manifest (listed by GET /v1/models). */
  modelsDir?: string;
  /** More model roots, after modelsDir, in priority order (built-ins first, then the user's); a name in two is served from the first. Never written to. */
  modelsDirs?: readonly string[];
  clock?: Clock;
  leaseMs?: number;
  heartbeatIntervalMs?: number;
  /** How long a disconnected node's leases wait for it to reconnect (0 = fail them at once). Default heartbeatIntervalMs. */
  nodeGraceMs?: number;
  /** Agent tasks a node may hold per worker (maxConcurrent × prefetch), queued on the node. Default 8. */
  prefetch?: number;
  /** Period of the lease/backoff tick. Default 50 ms. */
  tickMs?: number;
  /** Several coordinators on one PostgreSQL journal: how often each beats. Default 1000 ms. */
  beatMs?: number;
  /** …and how long one may be silent before the others requeue its leases. Default 10 s. */
  coordinatorDeadMs?: number;
  /** Retry backoff base. Default LIMITS.retryBaseMs. */
  retryBaseMs?: number;
  /** Consecutive infrastructure failures that open a node's circuit. Default 3. */
  circuitThreshold?: number;
  circuitCooldownMs?: number;
  /**
   * Webhook delivery: retries, `allowHosts` (--webhook-allow-host: hosts that may be plain http and
   * loopback or private) and `secret` (--webhook-secret; default: kept in `webhook-secret` beside the journal, or in a
   * PostgreSQL journal's settings, shared by its coordinators), `graceMs` (--webhook-grace-ms).
   */
  webhook?: Partial<WebhookOptions>;
  /**
   * Origins (`scheme://host[:port]`) of pages served elsewhere that this coordinator trusts beside its own
   * (--allow-origin): their state-changing requests are not refused as cross-site, and their pages may join as nodes.
   */
  allowOrigins?: readonly string[];
  /** How long close() waits for leased tasks to finish. Default 5000 ms. */
  drainTimeoutMs?: number;
  /** Fastify's log (pino): true for info on stdout, or a level and a stream. Tokens in URLs (`?token=`) are redacted. */
  logger?: LogOptions;
  /** Bearer tokens and roles (Auth.fromFile for --auth). Absent: Auth.open(), every caller is admin. */
  auth?: Auth;
  /** Stall rule: a heartbeating node with no result or progress for its longest task budget plus this long loses its leases. Default 60 s. */
  stallGraceMs?: number;
  /** Agent tasks one node may hold queued per worker, whatever queueDepth it advertises. Default 127 (the page's default). */
  maxQueuePerWorker?: number;
  /** Leases of every kind one node may hold at once. Default 4096. */
  maxLeasesPerNode?: number;
  /** Share (0–1) of tasks of deterministic agent versions (config `deterministic`) also run on a second node to spot-check them. Default 0. */
  spotCheck?: number;
  /** Node reputation score (0–1) below which a node gets no new work. Default 0.25. */
  reputationThreshold?: number;
  /** Aging: a ready task's priority rises by one per this many ms it waits (0: off). Default 60000. */
  agingMs?: number;
  /** How often the operator page's history (GET /v1/pool) takes a sample. Default 5000 ms. */
  historySampleMs?: number;
  /** The adapter registry's folder. Default `adapters/` beside the journal (a temporary folder, removed on close, for ':memory:'). */
  adaptersDir?: string;
  /** Blob bytes (POST /v1/blobs). Default `blobs/` beside the journal (a temporary folder, removed on close, for ':memory:'). */
  blobsDir?: string;
  /**
   * Spans with OpenTelemetry (docs/api.md "Tracing"): `otlpEndpoint` (--otlp-endpoint, OTLP/HTTP) or an `exporter`
   * (tests: InMemorySpanExporter). Absent: off, and no tracer exists (tasks still keep their traceparent).
   */
  tracing?: TracingOptions;
}

export interface Coordinator {
  url: string;
  app: FastifyInstance;
  journal: Journal;
  hub: Hub;
  scheduler: Scheduler;
  registry: Registry;
  metrics: Metrics;
  /** Long-poll and event-stream listeners per task. */
  watch: TaskWatch;
  /** Graceful: refuse new tasks (SHUTTING_DOWN), drain nodes, wait for leases, close. */
  close(): Promise<void>;
}

export async function createCoordinator(opts: CoordinatorOptions = {}): Promise<Coordinator> {
  const clock = opts.clock ?? systemClock;
  const heartbeatIntervalMs = opts.heartbeatIntervalMs ?? LIMITS.heartbeatIntervalMs;
  const leaseMs = opts.leaseMs ?? LIMITS.leaseMs;
  const dbPath = opts.dbPath ?? './data/coordinator.db';
  const folder = journalFolder(dbPath);
  const tempData = opts.dataDir === undefined && folder === null ? mkdtempSync(join(tmpdir(), 'exec-node-data-')) : null;
  const dataDir = opts.dataDir ?? tempData ?? folder!;
  const journal = new Journal(dbPath, clock, { attemptSync: opts.attemptSync ?? 'normal' });
  if (opts.retryBaseMs !== undefined) journal.retryBaseMs = opts.retryBaseMs;
  const registry = new Registry(journal);
  const metrics = new Metrics(clock.now());
  const modelRoots = [...(opts.modelsDir ? [opts.modelsDir] : []), ...(opts.modelsDirs ?? [])];
  // Adapters merged into their base (POST /v1/adapters/:base/:name/merge) are model folders of the coordinator's own, served after the others.
  const mergedDir = join(dataDir, 'merged');
  const modelStore = modelRoots.length ? new ModelStore([...modelRoots, mergedDir]) : null;
  const watch = new TaskWatch();
  const tracing = Tracing.create(opts.tracing);
  // A shared journal keeps the webhook secret itself, so that every coordinator signs alike (seeded from the first one's file).
  const secret = opts.webhook?.secret ?? (journal.shared ? journal.setting('webhook_secret', () => webhookSecretFor(tempData ? null : dataDir)) : webhookSecretFor(tempData ? null : dataDir));
  const webhooks = new Webhooks(journal, { ...opts.webhook, secret }, tracing);
  const scheduler = new Scheduler(journal, metrics, watch, webhooks, {
    clock,
    leaseMs,
    heartbeatIntervalMs,
    nodeGraceMs: opts.nodeGraceMs ?? heartbeatIntervalMs,
    prefetch: opts.prefetch ?? 8,
    tickMs: opts.tickMs ?? 50,
    ...(opts.beatMs !== undefined ? { beatMs: opts.beatMs } : {}),
    ...(opts.coordinatorDeadMs !== undefined ? { coordinatorDeadMs: opts.coordinatorDeadMs } : {}),
    stallGraceMs: opts.stallGraceMs ?? 60_000,
    spotCheck: opts.spotCheck ?? 0,
    reputationThreshold: opts.reputationThreshold ?? 0.25,
    tracing,
    agingMs: opts.agingMs ?? 60_000,
    quotaOf: (tenant) => registry.quota(tenant),
    modelBytes: (name) => modelStore?.knownWeightBytes(name) ?? null,
    storeTrained: (taskId, result, parts) => {
      const task = journal.getTask(taskId);
      const payload = task?.kind === 'train' ? (task.payload as TrainPayload) : null;
      return storeTrainedAdapter(adapters, payload, result, parts);
    },
  });
  const hub = new Hub(scheduler, journal, {
    clock,
    heartbeatIntervalMs,
    leaseMs,
    circuit: { threshold: opts.circuitThreshold ?? 3, cooldownMs: opts.circuitCooldownMs ?? 10_000 },
    maxProtocolErrors: 20,
    limits: { maxQueuePerWorker: opts.maxQueuePerWorker ?? 127, maxLeasesPerNode: opts.maxLeasesPerNode ?? 4096 },
    allowOrigins: (opts.allowOrigins ?? []).map(normalizeOrigin),
  });
  const maintenance = new Maintenance(clock.now());
  const preparer = new ModulePreparer();
  const json = new JsonBodyParser();
  metrics.attach({ clock, journal, nodes: () => scheduler.nodes.values(), webhooks, maintenance, tracing, heartbeatIntervalMs, prefetch: scheduler.options.prefetch });
  let shuttingDown = false;
  const ctx: Context = {
    auth: opts.auth ?? Auth.open(),
    journal,
    registry,
    scheduler,
    hub,
    metrics,
    watch,
    webhooks,
    preparer,
    clock,
    heartbeatIntervalMs,
    tracing,
    maintenance,
    shuttingDown: () => shuttingDown,
  };

  const app = Fastify({
    logger: loggerOptions(opts.logger),
    bodyLimit: LIMITS.maxBodyBytes,
    // Hostile input (server/http.ts): a Name (128 characters) fits every route; router and HTTP parser errors in our shape.
    routerOptions: { maxParamLength: MAX_PARAM_LENGTH },
    frameworkErrors,
    clientErrorHandler: clientErrorHandler(metrics),
    http: { maxHeaderSize: MAX_HEADER_BYTES },
    requestTimeout: 60_000,
  });
  installErrorHandling(app, metrics);
  installAccess(app, ctx.auth); // before any route, so every one is collected and checked
  installCrossSiteRefusal(app, { allowOrigins: opts.allowOrigins ?? [] });
  installInputGate(app, metrics, json); // content type before the body, the bounded JSON parser (before any route)
  await app.register(fastifyWebsocket, { options: { maxPayload: LIMITS.maxSocketMessageBytes } });
  const adapters = new AdapterRegistry(opts.adaptersDir ?? join(dataDir, 'adapters'), modelStore, journal.shared ? journal : null);
  if (modelStore && journal.shared) {
    // Adapters merged on another coordinator of the journal: listed here too, and merged here on first use.
    const making = new Map<string, Promise<boolean>>();
    // Read from the journal at most once a second (every /v1/models and generate submit asks).
    let known: { at: number; names: string[] } = { at: -Infinity, names: [] };
    modelStore.onDemand = {
      names: () => {
        const now = Date.now();
        if (now - known.at >= 1000) known = { at: now, names: [...adapters.mergedElsewhere().keys()] };
        return known.names;
      },
      make: (name) => {
        let m = making.get(name);
        if (!m) {
          const rec = adapters.mergedElsewhere().get(name);
          m = rec ? adapters.merge(rec.base, rec.ref, mergedDir, opts.mergeExternalData ?? {}).then(() => true, () => false) : Promise.resolve(false);
          making.set(name, m);
          void m.finally(() => making.delete(name));
        }
        return m;
      },
    };
  }
  taskRoutes(app, ctx, new ModelCatalog(ctx, modelStore, adapters));
  datasetRoutes(app, ctx);
  blobRoutes(app, ctx, new BlobStore(opts.blobsDir ?? join(dataDir, 'blobs'), LIMITS.maxBlobBytes, journal.shared ? journal : null));
  agentRoutes(app, ctx);
  adapterRoutes(app, adapters, mergedDir, opts.mergeExternalData ?? {});
  opsRoutes(app, ctx);
  openApiRoutes(app); // GET /openapi.json and GET /docs (server/openapi.ts)
  poolRoutes(app, ctx, { sampleMs: opts.historySampleMs }); // GET /v1/pool, /v1/whoami: the operator page (ops.html)
  if (modelStore) await app.register(modelRoutes(modelStore, staticHeaders, adapters));
  // OpenAI-compatible: GET /v1/models, GET /v1/models/:name, POST /v1/chat/completions, POST /v1/completions.
  await app.register(openAiRoutes(ctx, modelStore, adapters));
  // onnxruntime-web's .mjs and .wasm files, for the nodes' transformers.js backend (its default is a CDN they cannot reach).
  await app.register(fastifyStatic, { root: ORT_DIST, prefix: '/ort/', decorateReply: false, setHeaders: staticHeaders });
  if (opts.staticDir) {
    await app.register(fastifyStatic, { root: opts.staticDir, prefix: '/', decorateReply: false, setHeaders: staticHeaders });
  }

  // Several coordinators on one PostgreSQL journal hear each other's wakeups, cancels and task events.
  let bus: PgBus | null = null;
  if (journal.shared) {
    bus = new PgBus(dbPath, journal.coordinatorId, journal, watch, {
      wake: () => scheduler.requestDispatch(),
      cancel: (taskId, leaseId, reason) => scheduler.cancelledElsewhere(taskId, leaseId, reason),
    });
    try {
      await bus.start();
    } catch (err) {
      await bus.close();
      journal.close();
      throw err;
    }
    scheduler.bus = bus;
    watch.relay = bus;
  }

  await app.listen({ port: opts.port ?? 0, host: opts.host ?? '127.0.0.1' });
  const addr = app.server.address() as AddressInfo;
  const host = addr.family === 'IPv6' ? `[${addr.address}]` : addr.address;
  const url = `http://${host}:${addr.port}`;
  scheduler.start();
  if (journal.requeuedOnOpen) journal.event('coordinator_started', null, null, { requeued: journal.requeuedOnOpen });

  let closing: Promise<void> | null = null;
  const close = (): Promise<void> => {
    closing ??= (async () => {
      shuttingDown = true;
      hub.drainAll('The coordinator is shutting down; finish running tasks and take no new ones.');
      if (scheduler.leases.size > 0) {
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, opts.drainTimeoutMs ?? 5_000);
          scheduler.onIdle = () => {
            clearTimeout(timer);
            resolve();
          };
        });
      }
      scheduler.stop();
      await scheduler.settle();
      watch.relay = null;
      await bus?.close();
      watch.closeAll();
      hub.closeAll();
      await app.close();
      await webhooks.settle();
      await preparer.close().catch(() => undefined);
      await json.close().catch(() => undefined);
      await tracing?.shutdown().catch(() => undefined); // exports the spans still pending (bounded by the export timeout)
      journal.close();
      if (tempData) rmSync(tempData, { recursive: true, force: true });
    })();
    return closing;
  };

  return { url, app, journal, hub, scheduler, registry, metrics, watch, close };
}

/** The page needs cross-origin isolation (MIME types are fixed in the onSend hook of http.ts). */
function staticHeaders(res: { setHeader(name: string, value: string): unknown }): void {
  res.setHeader('cross-origin-opener-policy', 'same-origin');
  res.setHeader('cross-origin-embedder-policy', 'require-corp');
  res.setHeader('cross-origin-resource-policy', 'cross-origin');
}
