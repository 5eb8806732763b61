/**
 * Nodes, health, metrics and KPIs, and the node socket.
 */
import type { FastifyInstance } from 'fastify';
import { AppError, parseNodeId } from '../../shared';
import type { Context } from '../context';
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
    const now = ctx.clock.now();
    const text = ctx.metrics.render(now, ctx.journal.countsByState(), [...ctx.scheduler.nodes.values()], {
      duplicates: ctx.journal.duplicatesDropped,
      webhooksDelivered: ctx.webhooks.delivered,
      webhooksFailed: ctx.webhooks.failed,
      heartbeatIntervalMs: ctx.heartbeatIntervalMs,
      prefetch: ctx.scheduler.options.prefetch,
    });
    return reply.type('text/plain; version=0.0.4; charset=utf-8').send(text);
  });

  app.get('/v1/kpis', async () => {
    const now = ctx.clock.now();
    const kpis = ctx.metrics.kpis(now, ctx.hub.connected());
    const values = Object.values(kpis);
    return {
      at: now,
      uptimeMs: now - ctx.metrics.startedAt,
      pass: values.every((k) => k.pass !== false),
      kpis,
    };
  });
}
