/**
 * Traces end to end, for real: the built page in a headless Chromium node, a coordinator with tracing
 * on (an in-memory exporter: the coordinator runs in this process), the `trivial` agent. A task
 * submitted with a caller's traceparent comes back with the browser node's own span (agent.run, from
 * taking the lease to the result, its phases node.queue_ms / agent.spawn_ms / agent.exec_ms as attributes, measured in the page) as children of the task's attempt span, in the caller's
 * trace, within the attempt's time.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { InMemorySpanExporter, type ReadableSpan } from '@opentelemetry/sdk-trace';
import { readAgent } from '../agents';
import type { TaskRecord } from '../shared';
import { E2ePool } from './pool';
import { registerAgent } from '../scripts/register-agents';
import { waitAll } from './tasks';

const CALLER_TRACE = '0af7651916cd43dd8448eb211c80319c';
const CALLER_SPAN = 'b7ad6b7169203331';
const TASKS = 4;

let pool: E2ePool | null = null;
let url = '';
const exporter = new InMemorySpanExporter();

before(async () => {
  pool = await E2ePool.start('e2e-tracing-', { tracing: { exporter } });
  url = pool.url;
  const reg = await registerAgent(url, 'trivial', readAgent('trivial'));
  assert.ok(!reg.code, `the trivial agent was refused: ${reg.code} ${reg.message}`);
  await pool.join({ count: 1 });
});

after(async () => {
  await pool?.close();
});

const ms = (t: readonly [number, number]): number => t[0] * 1000 + t[1] / 1e6;

test("a browser node's spans become children of the attempt span, in the caller's trace", async () => {
  const res = await fetch(`${url}/v1/tasks`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', traceparent: `00-${CALLER_TRACE}-${CALLER_SPAN}-01` },
    body: JSON.stringify({ tasks: Array.from({ length: TASKS }, () => ({ kind: 'agent', payload: { agent: 'trivial', input: {} }, maxAttempts: 1 })) }),
  });
  assert.equal(res.status, 202);
  const { ids } = (await res.json()) as { ids: string[] };
  const records: TaskRecord[] = await waitAll(url, ids);
  for (const r of records) assert.equal(r.state, 'succeeded', `${r.id}: ${r.state} ${r.error?.code ?? ''}`);

  // The attempt span ends with the result's journal write, which the waits above saw.
  const deadline = Date.now() + 10_000;
  let spans: ReadableSpan[] = [];
  while ((spans = exporter.getFinishedSpans()).filter((s) => s.name === 'task.attempt').length < TASKS) {
    assert.ok(Date.now() < deadline, `attempt spans: ${spans.filter((s) => s.name === 'task.attempt').length} of ${TASKS}`);
    await new Promise((r) => setTimeout(r, 25));
  }
  const submit = spans.find((s) => s.name === 'task.submit');
  assert.ok(submit, 'a task.submit span');
  assert.equal(submit.parentSpanContext?.spanId, CALLER_SPAN);
  for (const r of records) {
    assert.deepEqual(r.trace, { traceId: CALLER_TRACE, spanId: submit.spanContext().spanId });
    const attempt = spans.find((s) => s.name === 'task.attempt' && s.attributes['task.id'] === r.id);
    assert.ok(attempt, `${r.id}: an attempt span`);
    assert.equal(attempt.spanContext().traceId, CALLER_TRACE);
    assert.equal(attempt.parentSpanContext?.spanId, submit.spanContext().spanId, 'the attempt is a child of the submit');
    assert.equal(attempt.attributes['node.id'], r.nodeId);
    const children = spans.filter((s) => s.parentSpanContext?.spanId === attempt.spanContext().spanId);
    const names = children.map((s) => s.name).sort();
    assert.deepEqual(names, ['agent.run'], `${r.id}: node spans ${names.join(', ')}`);
    const run = children[0]!;
    for (const phase of ['node.queue_ms', 'agent.spawn_ms', 'agent.exec_ms']) {
      const v = run.attributes[phase];
      assert.ok(typeof v === 'number' && v >= 0 && v <= ms(run.endTime) - ms(run.startTime) + 1, `${r.id}: agent.run has ${phase} (${String(v)})`);
    }
    for (const c of children) {
      assert.equal(c.spanContext().traceId, CALLER_TRACE, `${c.name} in the caller's trace`);
      assert.equal(c.attributes['span.source'], 'node', `${c.name} was measured by the node`);
      assert.ok(ms(c.startTime) >= ms(attempt.startTime) - 1 && ms(c.endTime) <= ms(attempt.endTime) + 1, `${c.name} lies within the attempt`);
      assert.ok(ms(c.endTime) >= ms(c.startTime), `${c.name} ends after it starts`);
    }
    assert.equal(attempt.attributes['node.spans_dropped'], undefined, 'the page sent no span the coordinator refused');
  }
});
