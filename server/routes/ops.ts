/**
 * Nodes, health, metrics and KPIs, and the node socket.
 */
import type { FastifyInstance } from 'fastify';
import { AppError, parseNodeId } from '../../shared';
import type { Context } from '../context';
import { MaintenanceSchema } from '../maintenance';
import { KPI_WINDOW_S } from '../metrics';
import { CapsSchema, NodeListQuerySchema, ReasonSchema, checkCompiled, checkDescribed } from '../validate';

export function opsRoutes(app: FastifyInstance, ctx: Context): void {
  // The join token is checked by the hub (in hello, or this request's authorization header): browsers cannot set headers on a WebSocket.
  app.get('/v1/nodes/ws', { websocket: true }, (socket, req) => {
    ctx.hub.attach(socket, { origin: req.headers.origin, host: req.headers.host, authorization: req.headers.authorization }, ctx.auth);
  });

  app.get('/v1/nodes', async (req) => {
    const all = checkCompiled(NodeListQuerySchema, req.query).all === '1';
    const now = ctx.clock.now();
    const nodes = [...ctx.scheduler.nodes.values()].filter((n) => all || n.connected);
    return { nodes: nodes.map((n) => n.view(now, ctx.heartbeatIntervalMs, ctx.scheduler.options.prefetch)) };
  });

  app.post('/v1/nodes/:id/drain', async (req) => {
    const id = parseNodeId((req.params as { id: string }).id);
    const node = ctx.scheduler.nodes.get(id);
    if (!node || !node.connected) throw new AppError('NODE_NOT_FOUND', `No connected node has id ${id}; GET /v1/nodes lists them.`, { id });
    const body = checkCompiled(ReasonSchema, req.body ?? {});
    ctx.scheduler.drain(node, body.reason?.slice(0, 500) ?? 'Drain requested by an operator.');
    return node.view(ctx.clock.now(), ctx.heartbeatIntervalMs, ctx.scheduler.options.prefetch);
  });

  // The allocator's cap on the leases one node holds at once ({ maxLeases: n }, null: no cap beyond the coordinator's).
  app.put('/v1/nodes/:id/caps', async (req) => {
    const id = parseNodeId((req.params as { id: string }).id);
    const node = ctx.scheduler.nodes.get(id);
    if (!node) throw new AppError('NODE_NOT_FOUND', `No node has id ${id}; GET /v1/nodes?all=1 lists them.`, { id });
    const { maxLeases } = checkDescribed(CapsSchema, req.body ?? {});
    ctx.scheduler.setCaps(node, { maxLeases });
    return node.view(ctx.clock.now(), ctx.heartbeatIntervalMs, ctx.scheduler.options.prefetch);
  });

  app.get('/healthz', async () => ({ status: 'ok', uptimeMs: ctx.clock.now() - ctx.metrics.startedAt }));

  app.get('/readyz', async (_req, reply) => {
    const ready = !ctx.shuttingDown() && ctx.journal.db.open;
    const body = {
      status: ready ? 'ready' : 'shutting-down',
      nodes: ctx.hub.connected().length,
      duplicatesDropped: ctx.journal.duplicatesDropped,
    };
    if (!ready) {
      throw new AppError('SHUTTING_DOWN', 'The coordinator is shutting down; send work elsewhere.', body);
    }
    void reply.code(200);
    return body;
  });

  app.get('/metrics', async (_req, reply) => {
    const { contentType, text } = await ctx.metrics.scrape();
    return reply.type(contentType).send(text);
  });

  app.get('/v1/kpis', async () => {
    const now = ctx.clock.now();
    const kpis = ctx.metrics.kpis(now);
    const values = Object.values(kpis);
    return {
      at: now,
      uptimeMs: now - ctx.metrics.startedAt,
      windowSeconds: KPI_WINDOW_S,
      maintenance: ctx.maintenance.on,
      pass: values.every((k) => k.pass !== false),
      kpis,
    };
  });

  // Maintenance mode: in memory; coordinator_maintenance is 1 while it is on, and the alert rules are silenced.
  app.get('/v1/maintenance', async () => ctx.maintenance.view());

  app.put('/v1/maintenance', async (req) => {
    const body = checkDescribed(MaintenanceSchema, req.body ?? {});
    const state = ctx.maintenance.set(body.on, body.reason ?? null, ctx.clock.now());
    req.log.info({ maintenance: state }, body.on ? 'maintenance mode on' : 'maintenance mode off');
    return state;
  });
}
