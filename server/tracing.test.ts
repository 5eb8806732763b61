/**
 * Traces: one task's spans from submit to result (an in-memory exporter), with one trace id and the right
 * parents; the traceparent on task.assign and on the webhook request; hostile node spans dropped; tracing
 * off (the record still has `trace`, no tracer); a real OTLP/HTTP export to a loopback collector.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { SpanKind } from '@opentelemetry/api';
import { JsonTraceSerializer } from '@opentelemetry/otlp-transformer';
import { resourceFromAttributes } from '@opentelemetry/resources';
import { InMemorySpanExporter, type ReadableSpan } from '@opentelemetry/sdk-trace';
import { MAX_NODE_SPANS, type Assignment } from '../shared';
import { createCoordinator, type Coordinator } from './index';
import { HELLO_WAT, TestNode, apiClient, receiver, tempDir, until, wat } from './testing';
import { startOtlpWorker } from './otlp-worker';
import { Tracing, checkNodeSpans, parseTraceparent, readableSpans, untracedTraceparent } from './tracing';

const tmp = tempDir('tracing-');
after(() => tmp.cleanup());
const CALLER_TRACE = '4bf92f3577b34da6a3ce929d0e0e4736';
const CALLER_SPAN = '00f067aa0ba902b7';
const CALLER = `00-${CALLER_TRACE}-${CALLER_SPAN}-01`;

async function withAgent(c: Coordinator): Promise<void> {
  const res = await fetch(`${c.url}/v1/agents/hello/versions/1`, { method: 'PUT', headers: { 'content-type': 'application/wasm' }, body: await wat(HELLO_WAT) });
  assert.equal(res.status, 201);
}

const parentOf = (s: ReadableSpan): string | undefined => s.parentSpanContext?.spanId;
const idOf = (s: ReadableSpan): string => s.spanContext().spanId;
const toMs = (t: readonly [number, number]): number => t[0] * 1000 + t[1] / 1e6;

describe('W3C traceparent', () => {
  test('valid headers parse; malformed ones are null (never an error)', () => {
    assert.deepEqual(parseTraceparent(CALLER), { traceId: CALLER_TRACE, spanId: CALLER_SPAN, flags: '01' });
    assert.deepEqual(parseTraceparent(`01-${CALLER_TRACE}-${CALLER_SPAN}-00-future`), { traceId: CALLER_TRACE, spanId: CALLER_SPAN, flags: '00' }, 'a later version may add fields');
    for (const bad of [
      undefined,
      '',
      'garbage',
      CALLER.toUpperCase(),
      `ff-${CALLER_TRACE}-${CALLER_SPAN}-01`,
      `00-${'0'.repeat(32)}-${CALLER_SPAN}-01`,
      `00-${CALLER_TRACE}-${'0'.repeat(16)}-01`,
      `${CALLER}-extra`,
      `00-${CALLER_TRACE}-${CALLER_SPAN}-1`,
      [CALLER, CALLER],
      `00-${CALLER_TRACE}-${CALLER_SPAN}-01-${'x'.repeat(600)}`,
    ]) {
      assert.equal(parseTraceparent(bad), null, JSON.stringify(bad)?.slice(0, 80));
    }
    const fresh = parseTraceparent(untracedTraceparent('nonsense'));
    assert.ok(fresh && fresh.traceId !== CALLER_TRACE && fresh.flags === '01', 'a malformed header starts a fresh trace');
    assert.equal(parseTraceparent(untracedTraceparent(CALLER))?.traceId, CALLER_TRACE, 'a valid one is continued');
  });

  test('node spans are bounded and checked: too many, bad times, huge names, bad attributes are dropped', () => {
    const good = { name: 'agent.run', startMs: 1, endMs: 2, attributes: { ok: true, n: 3, s: 'x', bad: { nested: 1 }, inf: null } };
    const raw = [
      good,
      { name: 'x'.repeat(65), startMs: 0, endMs: 1 },
      { name: 'nan', startMs: null, endMs: 1 },
      { name: 'string-times', startMs: '0', endMs: '1' },
      { name: 'huge', startMs: 0, endMs: 1e308 },
      { name: 'backwards', startMs: 5, endMs: 1 },
      { name: 'negative', startMs: -1, endMs: 1 },
      { name: 'ctrl\u0000name', startMs: 0, endMs: 1 },
      'not an object',
      ...Array.from({ length: 20 }, (_, i) => ({ name: `extra-${i}`, startMs: 0, endMs: 1 })),
    ];
    const { spans, dropped } = checkNodeSpans(raw, 100);
    assert.equal(spans.length, MAX_NODE_SPANS - 8, 'only the first 16 entries are looked at, and 8 of them are bad');
    assert.equal(dropped, raw.length - spans.length);
    assert.deepEqual(spans[0], { name: 'agent.run', startMs: 1, endMs: 2, attributes: { ok: true, n: 3, s: 'x' } });
    assert.deepEqual(checkNodeSpans('nope', 100), { spans: [], dropped: 1 });
    assert.deepEqual(checkNodeSpans(undefined, 100), { spans: [], dropped: 0 });
    assert.deepEqual(checkNodeSpans([{ name: 'late', startMs: 0, endMs: 200 }], 100).spans, [], 'past the lease window');
    assert.equal(Tracing.create(undefined), null, 'off: no tracer');
    assert.equal(Tracing.create({}), null, 'off without an exporter or endpoint');
  });
});

describe('a traced task (in-memory exporter)', () => {
  let c: Coordinator;
  let hook: Awaited<ReturnType<typeof receiver>>;
  const exporter = new InMemorySpanExporter();

  before(async () => {
    hook = await receiver();
    c = await createCoordinator({ dbPath: join(tmp.dir, 'traced.db'), tracing: { exporter }, webhook: { allowHosts: ['127.0.0.1'], attempts: 2, baseDelayMs: 10 } });
    await withAgent(c);
  });
  after(async () => {
    await c.close();
    await hook.close();
  });

  test('submit → journal → attempt (queue wait, result journaled) → node spans → webhook: one trace, the right parents', async () => {
    const node = await TestNode.connect(c.url);
    const api = apiClient(c.url);
    const res = await api('/v1/tasks', { method: 'POST', headers: { traceparent: CALLER }, json: { kind: 'agent', payload: { agent: 'hello' }, webhook: `${hook.url}/hook` } });
    assert.equal(res.status, 202);
    const id = res.body.id as string;

    const [a] = (await node.assignments(1)) as [Assignment];
    const assigned = parseTraceparent(a.traceparent);
    assert.ok(assigned, 'task.assign carries a traceparent');
    assert.equal(assigned.traceId, CALLER_TRACE);

    // The node's phases, with hostile ones among them.
    const spans: unknown[] = [
      { name: 'node.queue', startMs: 0, endMs: 0.5 },
      { name: 'agent.run', startMs: 0.5, endMs: 1, attributes: { workerId: 2 } },
      { name: 'z'.repeat(10_000), startMs: 0, endMs: 1 },
      { name: 'nan', startMs: null, endMs: 1 },
      { name: 'far-future', startMs: 0, endMs: 1e12 },
      ...Array.from({ length: 40 }, (_, i) => ({ name: `flood-${i}`, startMs: 0, endMs: 0 })),
    ];
    node.send({ type: 'task.result', results: [{ taskId: a.taskId, leaseId: a.leaseId, ok: true, result: { exitCode: 0, output: 'ok' }, spans }] });

    const record = await until(async () => {
      const r = await api(`/v1/tasks/${id}`);
      return r.body.state === 'succeeded' ? r.body : undefined;
    });
    const hit = await until(() => hook.hits[0], 5_000, 'the webhook');
    const byName = await until(() => {
      const m = new Map<string, ReadableSpan[]>();
      for (const s of exporter.getFinishedSpans()) m.set(s.name, [...(m.get(s.name) ?? []), s]);
      return m.has('webhook.deliver') && m.has('task.attempt') ? m : undefined;
    }, 5_000, 'the spans');
    const one = (name: string): ReadableSpan => {
      const list = byName.get(name) ?? [];
      assert.equal(list.length, 1, `one ${name} span`);
      return list[0]!;
    };

    const all = exporter.getFinishedSpans();
    assert.ok(all.every((s) => s.spanContext().traceId === CALLER_TRACE), 'every span is in the caller’s trace');
    const submit = one('task.submit');
    assert.equal(parentOf(submit), CALLER_SPAN, 'the submit span is a child of the caller’s span');
    assert.deepEqual(record.trace, { traceId: CALLER_TRACE, spanId: idOf(submit) }, 'the record shows the trace and the submit span');
    for (const name of ['task.journal', 'task.attempt', 'webhook.deliver']) assert.equal(parentOf(one(name)), idOf(submit), `${name} is a child of task.submit`);
    const attempt = one('task.attempt');
    assert.equal(assigned.spanId, idOf(attempt), 'the node was given the attempt span as its parent');
    assert.equal(attempt.attributes['node.id'], node.id);
    assert.equal(attempt.attributes['task.attempt'], 1);
    assert.equal(attempt.attributes['task.id'], id);
    // The queue wait and the result's journal write are the attempt's attributes (no spans of their own).
    assert.equal(attempt.attributes['task.state'], 'succeeded', 'the attempt ends with its result journaled');
    for (const k of ['task.queue_ms', 'result.wait_ms', 'result.journal_ms']) {
      const v = attempt.attributes[k];
      assert.ok(typeof v === 'number' && v >= 0 && v < 5_000, `${k}: ${String(v)}`);
    }
    assert.ok(toMs(attempt.endTime) >= toMs(submit.endTime), 'the attempt ends after the submit');
    const names = new Set(all.map((s) => s.name));
    assert.ok(!names.has('task.queue') && !names.has('task.result'), 'no per-task queue or result spans');
    // The first 16 entries are looked at: 2 phases, 3 hostile ones, 11 of the flood; the rest are dropped unread.
    assert.equal(attempt.attributes['node.spans_dropped'], spans.length - 13);
    assert.equal(byName.get('flood-10')?.length, 1);
    assert.equal(byName.get('flood-11'), undefined, 'at most 16 spans per result');
    const nodeQueue = one('node.queue');
    const run = one('agent.run');
    for (const s of [nodeQueue, run]) assert.equal(parentOf(s), idOf(attempt), `${s.name} is a child of the attempt`);
    assert.equal(run.attributes.workerId, 2);
    assert.equal(run.attributes['span.source'], 'node');
    assert.ok(all.every((s) => s.name.length <= 64 && s.name !== 'nan' && s.name !== 'far-future'), 'hostile spans were dropped');
    assert.equal(await c.metrics.value('coordinator_trace_spans_dropped_total', { reason: 'node_invalid' }), spans.length - 13, 'the dropped node spans are counted in /metrics');

    // The webhook request carries the delivery span's traceparent, in the same trace.
    const sent = parseTraceparent(hit.headers.traceparent);
    assert.ok(sent, 'the webhook request has a traceparent');
    assert.equal(sent.traceId, CALLER_TRACE);
    assert.equal(sent.spanId, idOf(one('webhook.deliver')));
    await node.close();
  });

  test('a malformed traceparent is ignored: 202, a fresh trace, its submit span a root', async () => {
    exporter.reset();
    const api = apiClient(c.url);
    const res = await api('/v1/tasks', { method: 'POST', headers: { traceparent: 'not-a-traceparent' }, json: { kind: 'agent', payload: { agent: 'hello' } } });
    assert.equal(res.status, 202);
    const record = (await api(`/v1/tasks/${res.body.id}`)).body;
    const submit = await until(() => exporter.getFinishedSpans().find((s) => s.name === 'task.submit'));
    assert.equal(parentOf(submit), undefined, 'a root span');
    assert.deepEqual(record.trace, { traceId: submit.spanContext().traceId, spanId: idOf(submit) });
    assert.notEqual(record.trace.traceId, CALLER_TRACE);
  });
});

describe('tracing off', () => {
  let c: Coordinator;
  let hook: Awaited<ReturnType<typeof receiver>>;
  before(async () => {
    hook = await receiver();
    c = await createCoordinator({ dbPath: join(tmp.dir, 'off.db'), webhook: { allowHosts: ['127.0.0.1'], attempts: 1 } });
    await withAgent(c);
  });
  after(async () => {
    await c.close();
    await hook.close();
  });

  test('the record still has trace (the caller’s trace continued, or a new one); no traceparent on task.assign; the webhook carries it', async () => {
    const node = await TestNode.connect(c.url);
    const api = apiClient(c.url);
    const withHeader = await api('/v1/tasks', { method: 'POST', headers: { traceparent: CALLER }, json: { kind: 'agent', payload: { agent: 'hello' }, webhook: `${hook.url}/hook` } });
    const without = await api('/v1/tasks', { method: 'POST', json: { kind: 'agent', payload: { agent: 'hello' } } });
    assert.equal(withHeader.status, 202);
    assert.equal(without.status, 202);
    const assignments = await node.assignments(2);
    assert.ok(assignments.every((a) => a.traceparent === undefined), 'nothing to measure for: no traceparent to the node');
    node.succeed(assignments);
    const a = (await api(`/v1/tasks/${withHeader.body.id}/wait?timeoutMs=5000`)).body;
    const b = (await api(`/v1/tasks/${without.body.id}/wait?timeoutMs=5000`)).body;
    assert.equal(a.trace.traceId, CALLER_TRACE);
    assert.match(a.trace.spanId, /^[0-9a-f]{16}$/);
    assert.notEqual(a.trace.spanId, CALLER_SPAN, 'the task’s own span id');
    assert.match(b.trace.traceId, /^[0-9a-f]{32}$/);
    assert.notEqual(b.trace.traceId, CALLER_TRACE);
    const hit = await until(() => hook.hits[0], 5_000, 'the webhook');
    assert.equal(hit.headers.traceparent, `00-${CALLER_TRACE}-${a.trace.spanId}-01`);
    await node.close();
  });
});

test('OTLP/HTTP: spans reach a loopback collector as a POST to /v1/traces with the trace id', async () => {
  const collector = await receiver();
  const c = await createCoordinator({ dbPath: join(tmp.dir, 'otlp.db'), tracing: { otlpEndpoint: collector.url } });
  try {
    await withAgent(c);
    const node = await TestNode.connect(c.url);
    const res = await apiClient(c.url)('/v1/tasks', { method: 'POST', headers: { traceparent: CALLER }, json: { kind: 'agent', payload: { agent: 'hello' } } });
    assert.equal(res.status, 202);
    const [a] = (await node.assignments(1)) as [Assignment];
    node.send({ type: 'task.result', results: [{ taskId: a.taskId, leaseId: a.leaseId, ok: true, result: { exitCode: 0, output: 'ok' }, spans: [{ name: 'agent.run', startMs: 0, endMs: 0.1 }] }] });
    await until(async () => (await apiClient(c.url)(`/v1/tasks/${res.body.id}`)).body.state === 'succeeded');
    await node.close();
  } finally {
    await c.close(); // flushes the batch
  }
  try {
    const posts = collector.hits.filter((h) => h.url === '/v1/traces');
    assert.ok(posts.length >= 1, 'the collector got a POST to /v1/traces');
    assert.ok(posts.every((p) => p.headers['content-type'] === 'application/json'));
    const spans = posts.flatMap((p) => (JSON.parse(p.body) as OtlpRequest).resourceSpans.flatMap((r) => {
      assert.deepEqual(r.resource.attributes, [{ key: 'service.name', value: { stringValue: 'exec-node-coordinator' } }]);
      return r.scopeSpans.flatMap((sc) => sc.spans);
    }));
    assert.ok(spans.every((s) => s.traceId === CALLER_TRACE), 'one trace id');
    const byName = new Map(spans.map((s) => [s.name, s]));
    const submit = byName.get('task.submit');
    const attempt = byName.get('task.attempt');
    const run = byName.get('agent.run');
    assert.ok(submit && attempt && run && byName.has('task.journal'), [...byName.keys()].join(', '));
    assert.equal(submit.parentSpanId, CALLER_SPAN);
    assert.equal(byName.get('task.journal')!.parentSpanId, submit.spanId);
    assert.equal(attempt.parentSpanId, submit.spanId);
    assert.equal(run.parentSpanId, attempt.spanId, 'the node span is a child of the attempt');
    assert.equal(submit.kind, 2, 'SPAN_KIND_SERVER');
    assert.ok(BigInt(attempt.endTimeUnixNano) >= BigInt(run.endTimeUnixNano) && BigInt(run.startTimeUnixNano) >= BigInt(attempt.startTimeUnixNano));
  } finally {
    await collector.close();
  }
});

interface OtlpSpan {
  traceId: string;
  spanId: string;
  parentSpanId?: string;
  name: string;
  kind: number;
  startTimeUnixNano: string;
  endTimeUnixNano: string;
  attributes: unknown[];
  status?: { code: number; message?: string };
}
interface OtlpRequest {
  resourceSpans: Array<{ resource: { attributes: unknown[] }; scopeSpans: Array<{ scope: { name: string }; spans: OtlpSpan[] }> }>;
}

test('the exporter thread writes what OpenTelemetry’s JsonTraceSerializer writes for the same spans (less default fields)', async () => {
  const collector = await receiver();
  const worker = startOtlpWorker({ url: `${collector.url}/v1/traces`, resource: { 'service.name': 'svc' }, scope: 'exec-node-coordinator', timeoutMs: 5_000, concurrency: 2 });
  try {
    const t = Date.UTC(2026, 0, 2, 3, 4, 5, 678);
    // Records as server/tracing.ts pushes them: a root server span with an int, a node span with a
    // double, a bool and a string needing escapes, and an error span.
    const buf = [
      CALLER_TRACE, CALLER_SPAN, '', 'task.submit', SpanKind.SERVER, t, t + 2, 0, '', 1, 'task.count', 3,
      CALLER_TRACE, 'a1b2c3d4e5f60718', CALLER_SPAN, 'agent.run', SpanKind.INTERNAL, t + 0.25, t + 1.5, 0, '', 3, 'ratio', 0.5, 'ok', true, 's', 'quote " and \\ \u2028',
      CALLER_TRACE, 'b1b2c3d4e5f60718', CALLER_SPAN, 'webhook.deliver', SpanKind.CLIENT, t, t + 10, 2, 'HTTP 500', 1, 'webhook.attempts', 2,
    ];
    const answered = new Promise<{ spans: number; ok: boolean }>((resolve) => worker.once('message', resolve));
    worker.postMessage({ type: 'spans', buf, spans: 3 });
    assert.deepEqual(await answered, { type: 'sent', spans: 3, ok: true });
    const ours = JSON.parse(collector.hits[0]!.body) as OtlpRequest;
    const theirs = JSON.parse(new TextDecoder().decode(JsonTraceSerializer.serializeRequest(readableSpans(buf, resourceFromAttributes({ 'service.name': 'svc' }))))) as Record<string, unknown>;
    assert.deepEqual(ours, withoutDefaults(theirs));
    assert.equal(ours.resourceSpans[0]!.scopeSpans[0]!.spans.length, 3);
  } finally {
    await worker.terminate();
    await collector.close();
  }
});

/** proto3 JSON may leave out fields at their default: zero counts, empty lists, an unset status, an absent version. */
function withoutDefaults(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(withoutDefaults);
  if (typeof v !== 'object' || v === null) return v;
  const out: Record<string, unknown> = {};
  for (const [k, x] of Object.entries(v)) {
    if (x === undefined || x === 0 && k.startsWith('dropped') || (Array.isArray(x) && x.length === 0 && k !== 'attributes')) continue;
    if (k === 'status' && (x as { code: number }).code === 0) continue;
    out[k] = withoutDefaults(x);
  }
  return out;
}
