import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { LeaseId, ResultItem, TaskId } from '../../shared';
import { ResultBatcher } from './result-batcher';

const item = (i: number): ResultItem => ({
  taskId: `t${i}` as TaskId,
  leaseId: `l${i}` as LeaseId,
  ok: false,
  error: { code: 'AGENT_TRAP', name: 'AppError', message: 'x' },
});

test('a burst of results becomes one message on the next tick', async () => {
  const sent: ResultItem[][] = [];
  let first!: () => void;
  const firstSend = new Promise<void>((resolve) => (first = resolve));
  const b = new ResultBatcher({ send: (items) => (sent.push(items), first(), true), delayMs: 0 });
  for (let i = 0; i < 10; i++) b.push(item(i));
  assert.equal(sent.length, 0);
  await firstSend;
  assert.equal(sent.length, 1);
  assert.equal(sent[0]!.length, 10);
  assert.deepEqual(b.counts, { batches: 1, results: 10 });
});

test('a full batch goes at once, and results wait while the socket is down', () => {
  const sent: ResultItem[][] = [];
  let up = false;
  const b = new ResultBatcher({ send: (items) => (up ? (sent.push(items), true) : false), maxBatch: 4 });
  for (let i = 0; i < 9; i++) b.push(item(i));
  assert.equal(sent.length, 0);
  assert.equal(b.pending, 9);
  const leases: string[] = [];
  b.pendingLeases(leases);
  assert.equal(leases.length, 9);
  up = true;
  b.flush();
  assert.deepEqual(
    sent.map((s) => s.length),
    [4, 4, 1],
  );
  assert.equal(b.pending, 0);
  b.close();
});
