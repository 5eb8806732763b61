import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { NodeId, TaskId } from '../shared';
import { HISTORY_WINDOW_S, History } from './history';
import { Journal, type Ended } from './journal';
import { Metrics } from './metrics';

const end = (i: number, state: Ended['state'], createdAt: number, errorCode: string | null = null): Ended => ({
  taskId: `00000000-0000-4000-8000-${String(i).padStart(12, '0')}` as TaskId,
  state,
  kind: 'agent',
  attempts: 1,
  createdAt,
  nodeId: 'n1' as NodeId,
  webhook: null,
  errorCode,
});

test('samples: ends in the last minute per minute, nearest-rank p50/p95 of their latencies, the gauges; the ring is bounded', () => {
  // Throughput and latency come from the metrics' window, as the coordinator's sampler passes them.
  const t = 1_000_000;
  const metrics = new Metrics(t);
  const h = new History({ sampleMs: 1000, points: 3 });
  const sample = (now: number, gauges: { queued: number; leased: number; nodes: number }) => h.sample(now, { ...gauges, ...metrics.recent(now, HISTORY_WINDOW_S) });
  assert.equal(sample(t, { queued: 0, leased: 0, nodes: 0 }).latencyP50Ms, null);
  // 20 tasks ended at t+1 s with latencies 10, 20, … 200 ms; one retried attempt (queued again) is no end.
  for (let i = 1; i <= 20; i++) metrics.ended(end(i, 'succeeded', t + 1000 - i * 10), t + 1000);
  metrics.ended(end(99, 'queued', t, 'NODE_LOST'), t + 1000);
  const p = sample(t + 2000, { queued: 3, leased: 1, nodes: 2 });
  assert.deepEqual(p, { at: t + 2000, throughputPerMin: 20, latencyP50Ms: 100, latencyP95Ms: 190, queued: 3, leased: 1, nodes: 2 });
  // A minute later they are out of the window.
  const later = sample(t + 62_000, { queued: 0, leased: 0, nodes: 2 });
  assert.equal(later.throughputPerMin, 0);
  assert.equal(later.latencyP50Ms, null);
  sample(t + 63_000, { queued: 0, leased: 0, nodes: 2 });
  assert.deepEqual(
    h.samples().map((s) => s.at),
    [t + 2000, t + 62_000, t + 63_000],
  );
});

test('errors: counted by code, the last ones newest first and bounded, with the message the journal holds (else the code’s own)', () => {
  const journal = new Journal(':memory:');
  try {
    const h = new History({ errors: 2 });
    h.ended(end(1, 'failed', 0, 'AGENT_TRAP'), 10);
    h.ended(end(2, 'queued', 0, 'NODE_LOST'), 20);
    h.ended(end(3, 'dead', 0, 'NODE_LOST'), 30);
    assert.deepEqual(h.errorsByCode(), { AGENT_TRAP: 1, NODE_LOST: 2 });
    const last = h.lastErrors(journal, null);
    assert.deepEqual(
      last.map((e) => [e.code, e.at]),
      [
        ['NODE_LOST', 30],
        ['NODE_LOST', 20],
      ],
    );
    assert.ok(last.every((e) => e.message.length > 0 && e.nodeId === 'n1'));
    // A tenant-bound caller sees only its tenant's tasks (these have none).
    assert.deepEqual(h.lastErrors(journal, 'acme'), []);
  } finally {
    journal.close();
  }
});
