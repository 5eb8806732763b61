/**
 * The operator's view: `GET /v1/pool` (every node, the queue, the history ring and the last errors, for
 * the operator page ops.html) and `GET /v1/whoami` (the caller's roles, so the page shows only the
 * controls its token may use). Starts the history sampler and stops it when the app closes.
 */
import type { FastifyInstance } from 'fastify';
import type { PoolNode, PoolNodeState, PoolView, Whoami } from '../../shared';
import { ANONYMOUS } from '../auth';
import type { Context } from '../context';
import { HISTORY_WINDOW_S, History, type HistoryOptions } from '../history';
import type { NodeSession } from '../node';

export function poolRoutes(app: FastifyInstance, ctx: Context, opts: HistoryOptions = {}): History {
  const history = new History(opts);
  const listener = history.ended.bind(history);
  ctx.scheduler.endedListeners.add(listener);
  const sample = (): void => {
    if (!ctx.journal.db.open) return;
    let queued = 0;
    for (const r of ctx.journal.queuedByPriority()) queued += r.n;
    const now = ctx.clock.now();
    history.sample(now, { queued, leased: ctx.scheduler.leases.size, nodes: ctx.hub.connected().length, ...ctx.metrics.recent(now, HISTORY_WINDOW_S) });
  };
  const timer = setInterval(sample, history.sampleMs);
  timer.unref();
  app.addHook('onReady', async () => sample());
  app.addHook('onClose', async () => {
    clearInterval(timer);
    ctx.scheduler.endedListeners.delete(listener);
  });

  app.get('/v1/pool', async (req): Promise<PoolView> => {
    const now = ctx.clock.now();
    const byState: Record<string, number> = { ...ctx.journal.countsByState() };
    const queuedByPriority = ctx.journal
      .queuedByPriority()
      .map((r) => ({ priority: r.priority, count: r.n }))
      .sort((a, b) => b.priority - a.priority);
    return {
      at: now,
      nodes: [...ctx.scheduler.nodes.values()].filter((n) => n.connected).map((n) => poolNode(n, now, ctx.heartbeatIntervalMs)),
      queue: { byState, queuedByPriority },
      history: [...history.samples()],
      sampleMs: history.sampleMs,
      lastErrors: history.lastErrors(ctx.journal, req.principal.tenant),
      errorsByCode: history.errorsByCode(),
    };
  });

  // Open: it says only what the caller's own token may do (nothing, without a known token).
  app.get('/v1/whoami', async (req): Promise<Whoami> => {
    const p = req.principal;
    return { authenticated: p !== ANONYMOUS, id: p.id, roles: [...p.roles], tenant: p.tenant };
  });
  return history;
}

function poolNode(n: NodeSession, now: number, heartbeatIntervalMs: number): PoolNode {
  const max = Math.max(1, n.capabilities.maxConcurrent);
  const circuit = n.circuit.state(now);
  const rep = n.reputation;
  let state: PoolNodeState = 'healthy';
  if (!n.connected) state = 'disconnected';
  else if (n.draining) state = 'draining';
  else if (circuit !== 'closed') state = 'circuit-open';
  else if (rep.excluded) state = 'excluded';
  else if (!n.healthy(now, heartbeatIntervalMs)) state = 'unhealthy';
  return {
    id: n.id,
    name: n.name,
    state,
    draining: n.draining,
    load: n.leases.size / max,
    held: n.leases.size,
    maxConcurrent: n.capabilities.maxConcurrent,
    circuit: { state: circuit, consecutiveFailures: n.circuit.failures, opens: n.circuit.opens },
    reputation: { score: Math.round(rep.score * 1000) / 1000, excluded: rep.excluded },
    tasksDone: n.done,
    tasksFailed: n.failed,
    lastSeen: n.lastSeen,
  };
}
