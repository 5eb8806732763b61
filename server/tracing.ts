/**
 * Traces: W3C trace context on every task, and OpenTelemetry spans when an exporter is configured.
 *
 * Every task keeps a `traceparent` (`00-<trace id>-<span id>-<flags>`) in the journal: a child of the
 * caller's `traceparent` header when that one is valid, else a fresh trace. A malformed header is ignored
 * (a fresh trace starts), never an error. The span id stands for the task's `task.submit` span.
 *
 * This file is the only one that knows OpenTelemetry. `Tracing.create()` answers null unless an OTLP
 * endpoint or an exporter is given: then nothing is made per task; call sites guard with a null check
 * and keep only the traceparent string. When on, every task is traced (a caller's unsampled traceparent,
 * flags 00, is continued without spans, as OpenTelemetry's parent-based sampler does), recording
 * `task.submit` (child of the caller's span), `task.journal` (the durable write), `task.attempt` (per lease,
 * from the assignment to the result's journal write; node id, attempt, the queue wait and the result's
 * journal write as attributes), the node's own spans as children of the attempt (bounded and checked:
 * nodes may be hostile) and `webhook.deliver`: four spans per agent task on a browser node. Spans are
 * flat records, exported as OTLP/HTTP JSON from a worker thread (server/otlp-worker.ts), or handed to an
 * SDK SpanExporter as ReadableSpans (tests); nothing is global: several coordinators may run in one
 * process.
 */
import { randomBytes } from 'node:crypto';
import { Worker } from 'node:worker_threads';
import { SpanKind, SpanStatusCode, TraceFlags, type Attributes, type SpanContext } from '@opentelemetry/api';
import { hrTimeDuration, millisToHrTime } from '@opentelemetry/core';
import { resourceFromAttributes, type Resource } from '@opentelemetry/resources';
import type { ReadableSpan, SpanExporter } from '@opentelemetry/sdk-trace';
import { MAX_NODE_SPANS, MAX_NODE_SPAN_NAME, type NodeSpan } from '../shared';
import { startOtlpWorker, type Field, type OtlpOut } from './otlp-worker';

export type { SpanExporter } from '@opentelemetry/sdk-trace';

export interface TracingOptions {
  /**
   * OTLP/HTTP (JSON) collector (--otlp-endpoint): a URL ending in `/v1/traces`, or a base URL
   * (`http://collector:4318`) to which `/v1/traces` is added. Spans go out in batches.
   */
  otlpEndpoint?: string;
  /** Spans go to this exporter as each ends (tests: InMemorySpanExporter). Takes precedence over otlpEndpoint. */
  exporter?: SpanExporter;
  /** `service.name` of the spans. Default `exec-node-coordinator`. */
  serviceName?: string;
}

/** A task's trace context as its record shows it. */
export interface TraceRef {
  traceId: string;
  spanId: string;
}

// ---------------------------------------------------------------- W3C trace context (no OpenTelemetry)

const TRACEPARENT = /^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?$/;
const ZERO_TRACE = '0'.repeat(32);
const ZERO_SPAN = '0'.repeat(16);

/**
 * A `traceparent` header's parts, or null when it is absent or malformed (W3C Trace Context level 1:
 * lower-case hex, version ff refused, version 00 exactly 55 characters, no all-zero ids).
 */
export function parseTraceparent(header: unknown): { traceId: string; spanId: string; flags: string } | null {
  if (typeof header !== 'string' || header.length < 55 || header.length > 512) return null;
  const m = TRACEPARENT.exec(header);
  if (!m) return null;
  const [, version, traceId, spanId, flags, rest] = m as unknown as [string, string, string, string, string, string | undefined];
  if (version === 'ff' || (version === '00' && rest !== undefined)) return null;
  if (traceId === ZERO_TRACE || spanId === ZERO_SPAN) return null;
  return { traceId, spanId, flags };
}

/** A traceparent for a trace context as the record shows it (sampled). */
export function traceparentOf(ref: TraceRef): string {
  return `00-${ref.traceId}-${ref.spanId}-01`;
}

// Random ids from a pooled buffer: one randomBytes call per 170 tasks rather than one per task.
let pool = Buffer.alloc(0);
let poolAt = 0;
function randomHex(bytes: number): string {
  for (;;) {
    if (poolAt + bytes > pool.length) {
      pool = randomBytes(4096);
      poolAt = 0;
    }
    const hex = pool.toString('hex', poolAt, (poolAt += bytes));
    if (hex !== ZERO_TRACE && hex !== ZERO_SPAN) return hex;
  }
}

/**
 * With tracing off: the traceparent a submit's tasks keep — the caller's trace with a new span id
 * (standing for the submit), or a fresh sampled trace when the header is absent or malformed.
 */
export function untracedTraceparent(header: unknown): string {
  const parent = parseTraceparent(header);
  return parent ? `00-${parent.traceId}-${randomHex(8)}-${parent.flags}` : `00-${randomHex(16)}-${randomHex(8)}-01`;
}

// ---------------------------------------------------------------- node spans (checked, bounded)

const SPAN_NAME = /^[\x21-\x7e][\x20-\x7e]*$/;
const ATTR_KEY = /^[A-Za-z0-9_.-]{1,64}$/;
/** Most attributes kept per node span, and the longest string value. */
const MAX_NODE_ATTRS = 8;
const MAX_ATTR_CHARS = 256;
/** A node's clock may run a little ahead of ours over one lease. */
const WINDOW_SLACK_MS = 50;

/**
 * The node spans worth recording from what a node sent: at most MAX_NODE_SPANS (the rest dropped),
 * each with a printable name of at most MAX_NODE_SPAN_NAME characters and finite times (ms since the
 * node took the assignment) with 0 ≤ start ≤ end ≤ the lease's window; attributes at most 8 of string,
 * finite number or boolean. Anything else is dropped; `dropped` counts what was.
 */
export function checkNodeSpans(raw: unknown, windowMs: number): { spans: NodeSpan[]; dropped: number } {
  if (!Array.isArray(raw)) return { spans: [], dropped: raw === undefined ? 0 : 1 };
  const spans: NodeSpan[] = [];
  let dropped = Math.max(0, raw.length - MAX_NODE_SPANS);
  const n = Math.min(raw.length, MAX_NODE_SPANS);
  for (let i = 0; i < n; i++) {
    const s = raw[i] as Partial<Record<keyof NodeSpan, unknown>> | null;
    if (typeof s !== 'object' || s === null || Array.isArray(s)) {
      dropped++;
      continue;
    }
    const { name, startMs, endMs } = s;
    if (
      typeof name !== 'string' || name.length > MAX_NODE_SPAN_NAME || !SPAN_NAME.test(name) ||
      typeof startMs !== 'number' || typeof endMs !== 'number' || !Number.isFinite(startMs) || !Number.isFinite(endMs) ||
      startMs < 0 || endMs < startMs || endMs > windowMs + WINDOW_SLACK_MS
    ) {
      dropped++;
      continue;
    }
    const span: NodeSpan = { name, startMs, endMs: Math.min(endMs, windowMs) };
    if (span.startMs > span.endMs) span.startMs = span.endMs;
    const attrs = checkAttributes(s.attributes);
    if (attrs) span.attributes = attrs;
    spans.push(span);
  }
  return { spans, dropped };
}

function checkAttributes(raw: unknown): NodeSpan['attributes'] | null {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) return null;
  const out: NonNullable<NodeSpan['attributes']> = {};
  let kept = 0;
  for (const [k, v] of Object.entries(raw as Record<string, unknown>)) {
    if (kept >= MAX_NODE_ATTRS) break;
    if (!ATTR_KEY.test(k)) continue;
    if ((typeof v === 'string' && v.length <= MAX_ATTR_CHARS) || typeof v === 'boolean' || (typeof v === 'number' && Number.isFinite(v))) {
      out[k] = v;
      kept++;
    }
  }
  return kept ? out : null;
}

// ---------------------------------------------------------------- spans

/**
 * Spans are not OpenTelemetry SDK span objects: each is pushed as a flat record into one buffer (the
 * layout is server/otlp-worker.ts's), which goes in batches to the OTLP exporter thread, or, with an
 * `exporter` (tests), is turned into the SDK's ReadableSpans for it. Per task that is a few array pushes
 * rather than span, context and attribute objects (the SDK's cost measured about 70 µs a task here).
 */

/** Spans per batch handed to the exporter thread, and the longest a span waits for its batch. */
const BATCH_SPANS = 4_096;
const BATCH_MS = 1_000;
/** Spans handed over and not yet sent: past this a batch is dropped (counted in `droppedSpans`). */
const MAX_PENDING_SPANS = 65_536;

// OpenTelemetry API SpanKind and SpanStatusCode values (kept as numbers in records).
const INTERNAL = SpanKind.INTERNAL;
const SERVER = SpanKind.SERVER;
const CLIENT = SpanKind.CLIENT;
const UNSET = SpanStatusCode.UNSET;
const ERROR = SpanStatusCode.ERROR;

/** A submit request's span and the traceparent its tasks keep. */
export interface SubmitTrace {
  readonly traceId: string;
  readonly spanId: string;
  readonly parentId: string;
  readonly sampled: boolean;
  readonly startWall: number;
  readonly tasks: number;
  readonly traceparent: string;
}

/** One lease's `task.attempt` span (recorded when it ends). */
export interface AttemptTrace {
  readonly traceId: string;
  readonly spanId: string;
  /** The task's submit span. */
  readonly parentId: string;
  readonly sampled: boolean;
  /** Wall-clock ms when the lease was made (node span times are offsets from it). */
  readonly startWall: number;
  /** Sent to the node in `task.assign`: the attempt span is the parent of what the node measures. */
  readonly traceparent: string;
  readonly taskId: string;
  readonly kind: string;
  readonly attempt: number;
  readonly nodeId: string;
  readonly replica: number | undefined;
  /** ms from ready to leased (`task.queue_ms`). */
  readonly queueMs: number;
  dropped: number;
  /** Wall-clock ms the result arrived (0: not yet); the span ends when it is journaled. */
  resultWall: number;
  code: string;
  ended: boolean;
}

/** One webhook delivery's span and the traceparent header its requests carry. */
export interface WebhookTrace {
  readonly traceId: string;
  readonly spanId: string;
  readonly parentId: string;
  readonly sampled: boolean;
  readonly startWall: number;
  readonly taskId: string;
  readonly host: string;
  readonly traceparent: string;
}

/** Where batches of records go. */
interface Sink {
  take(buf: Field[], spans: number): void;
  shutdown(): Promise<void>;
}

export class Tracing {
  readonly #sink: Sink;
  #buf: Field[] = [];
  #spans = 0;
  #timer: NodeJS.Timeout | null = null;
  readonly #immediate: boolean;
  /** Node spans dropped as malformed, out of bounds or past MAX_NODE_SPANS. */
  droppedNodeSpans = 0;
  /** Spans not exported: the exporter fell behind by MAX_PENDING_SPANS, failed, or the collector refused them. */
  droppedSpans = 0;

  private constructor(sink: Sink, immediate: boolean) {
    this.#sink = sink;
    this.#immediate = immediate;
  }

  /** Null (tracing off, nothing made) unless `opts` names an exporter or an OTLP endpoint. */
  static create(opts: TracingOptions | undefined): Tracing | null {
    if (!opts || (!opts.exporter && !opts.otlpEndpoint)) return null;
    const serviceName = opts.serviceName ?? 'exec-node-coordinator';
    if (opts.exporter) return new Tracing(new ExporterSink(opts.exporter, serviceName), true);
    let tracing: Tracing | null = null;
    const sink = new OtlpSink(otlpTracesUrl(opts.otlpEndpoint!), serviceName, (n) => {
      if (tracing) tracing.droppedSpans += n;
    });
    tracing = new Tracing(sink, false);
    return tracing;
  }

  // One record: 10 fields, then `n` key/value pairs pushed by the caller.
  #head(traceId: string, spanId: string, parentId: string, name: string, kind: number, start: number, end: number, code: number, message: string, n: number): Field[] {
    const b = this.#buf;
    b.push(traceId, spanId, parentId, name, kind, start, end, code, message, n);
    return b;
  }

  #ended(): void {
    this.#spans++;
    if (this.#immediate || this.#spans >= BATCH_SPANS) this.#flush();
    else if (this.#timer === null) {
      this.#timer = setTimeout(() => this.#flush(), BATCH_MS);
      this.#timer.unref();
    }
  }

  #flush(): void {
    if (this.#timer !== null) {
      clearTimeout(this.#timer);
      this.#timer = null;
    }
    if (this.#spans === 0) return;
    const buf = this.#buf;
    const spans = this.#spans;
    this.#buf = [];
    this.#spans = 0;
    this.#sink.take(buf, spans);
  }

  /** Starts a submit request's span (a child of the caller's traceparent when valid, else a new trace). */
  submit(header: unknown, tasks: number): SubmitTrace {
    const p = parseTraceparent(header);
    const traceId = p ? p.traceId : randomHex(16);
    const sampled = p ? (parseInt(p.flags, 16) & 1) === 1 : true;
    const spanId = randomHex(8);
    return { traceId, spanId, parentId: p ? p.spanId : '', sampled, startWall: Date.now(), tasks, traceparent: `00-${traceId}-${spanId}-${sampled ? '01' : '00'}` };
  }

  /** The durable write of a submit (`task.journal`, start and end in wall-clock ms), and the submit's end. */
  journaled(s: SubmitTrace, startWall: number, endWall: number, created: number, error?: unknown): void {
    if (!s.sampled) return;
    const code = error === undefined ? '' : errorCode(error);
    const status = code ? ERROR : UNSET;
    const b = this.#head(s.traceId, randomHex(8), s.spanId, 'task.journal', INTERNAL, startWall, endWall, status, code, code ? 2 : 1);
    b.push('task.created', created);
    if (code) b.push('error.code', code);
    this.#ended();
    this.#submitSpan(s, endWall, code, created);
  }

  /** Ends a submit that failed before its journal write. */
  refused(s: SubmitTrace, error: unknown): void {
    if (s.sampled) this.#submitSpan(s, Date.now(), errorCode(error), null);
  }

  #submitSpan(s: SubmitTrace, endWall: number, code: string, created: number | null): void {
    const n = 1 + (created === null ? 0 : 1) + (code ? 1 : 0);
    const b = this.#head(s.traceId, s.spanId, s.parentId, 'task.submit', SERVER, s.startWall, endWall, code ? ERROR : UNSET, code, n);
    b.push('task.count', s.tasks);
    if (created !== null) b.push('task.created', created);
    if (code) b.push('error.code', code);
    this.#ended();
  }

  /**
   * A lease was made: the `task.attempt` span starts, a child of the task's submit span, with the time
   * the task waited from ready to leased (`readyAgoMs`) as `task.queue_ms`.
   */
  attempt(traceparent: string | null, readyAgoMs: number, attrs: { taskId: string; nodeId: string; attempt: number; kind: string; replica?: number }): AttemptTrace {
    const now = Date.now();
    const p = parseTraceparent(traceparent);
    const traceId = p ? p.traceId : randomHex(16);
    const sampled = p ? (parseInt(p.flags, 16) & 1) === 1 : true;
    const parentId = p ? p.spanId : '';
    const spanId = randomHex(8);
    return {
      traceId, spanId, parentId, sampled, startWall: now, traceparent: `00-${traceId}-${spanId}-${sampled ? '01' : '00'}`,
      taskId: attrs.taskId, kind: attrs.kind, attempt: attrs.attempt, nodeId: attrs.nodeId, replica: attrs.replica,
      queueMs: Math.max(0, readyAgoMs), dropped: 0, resultWall: 0, code: '', ended: false,
    };
  }

  /**
   * A result arrived on the lease: the node's spans (checked) become children of the attempt span, which
   * ends when the result is journaled (`recorded`), with the outcome.
   */
  resulted(a: AttemptTrace, rawSpans: unknown, outcome: { ok: true } | { ok: false; code: string }): void {
    if (a.ended || a.resultWall) return;
    a.resultWall = Date.now();
    a.code = outcome.ok ? '' : outcome.code;
    if (rawSpans !== undefined) {
      const { spans, dropped } = checkNodeSpans(rawSpans, a.resultWall - a.startWall);
      this.droppedNodeSpans += dropped;
      a.dropped = dropped;
      if (a.sampled) {
        for (const s of spans) {
          const attrs = s.attributes;
          let n = 1;
          if (attrs) for (const _ in attrs) n++;
          const b = this.#head(a.traceId, randomHex(8), a.spanId, s.name, INTERNAL, a.startWall + s.startMs, a.startWall + s.endMs, UNSET, '', n);
          if (attrs) for (const k in attrs) b.push(k, attrs[k]!);
          b.push('span.source', 'node');
          this.#ended();
        }
      }
    }
  }

  /** Ends an attempt span without a result (expired, lost, cancelled). */
  endAttempt(a: AttemptTrace, outcome: { ok: true } | { ok: false; code: string }): void {
    if (a.ended || a.resultWall) return;
    this.#endAttempt(a, Date.now(), outcome.ok ? '' : outcome.code, null, 0);
  }

  /**
   * The journal write of an attempt's result, from `startWall` to `endWall`: the attempt span ends with
   * it, with `task.state` (what the journal made of the result) and `result.journal_ms` (the write; the
   * result arrived `result.wait_ms` before the write began, waiting for its batch).
   */
  recorded(a: AttemptTrace, startWall: number, endWall: number, state: string | null): void {
    if (a.ended || !a.resultWall) return;
    this.#endAttempt(a, endWall, a.code, state ?? 'duplicate', endWall - startWall, Math.max(0, startWall - a.resultWall));
  }

  #endAttempt(a: AttemptTrace, end: number, code: string, state: string | null, journalMs: number, waitMs = 0): void {
    a.ended = true;
    if (!a.sampled) return;
    const n = 5 + (state === null ? 0 : 3) + (a.replica === undefined ? 0 : 1) + (a.dropped ? 1 : 0) + (code ? 1 : 0);
    const b = this.#head(a.traceId, a.spanId, a.parentId, 'task.attempt', INTERNAL, a.startWall, end, code ? ERROR : UNSET, code, n);
    b.push('task.id', a.taskId, 'task.kind', a.kind, 'task.attempt', a.attempt, 'node.id', a.nodeId, 'task.queue_ms', a.queueMs);
    if (state !== null) b.push('task.state', state, 'result.wait_ms', waitMs, 'result.journal_ms', journalMs);
    if (a.replica !== undefined) b.push('task.replica', a.replica);
    if (a.dropped) b.push('node.spans_dropped', a.dropped);
    if (code) b.push('error.code', code);
    this.#ended();
  }

  /** Starts a webhook delivery's span (child of the task's submit span); its traceparent goes on every request. */
  webhook(traceparent: string, url: string, taskId: string): WebhookTrace {
    let host = '';
    try {
      host = new URL(url).host;
    } catch {
      // refused at delivery anyway
    }
    const p = parseTraceparent(traceparent);
    const traceId = p ? p.traceId : randomHex(16);
    const sampled = p ? (parseInt(p.flags, 16) & 1) === 1 : true;
    const spanId = randomHex(8);
    return { traceId, spanId, parentId: p ? p.spanId : '', sampled, startWall: Date.now(), taskId, host, traceparent: `00-${traceId}-${spanId}-${sampled ? '01' : '00'}` };
  }

  webhookDone(w: WebhookTrace, attempts: number, error: string | null): void {
    if (!w.sampled) return;
    const message = error === null ? '' : error.slice(0, 200);
    this.#head(w.traceId, w.spanId, w.parentId, 'webhook.deliver', CLIENT, w.startWall, Date.now(), error === null ? UNSET : ERROR, message, 3)
      .push('task.id', w.taskId, 'server.address', w.host, 'webhook.attempts', attempts);
    this.#ended();
  }

  /** Exports what is pending and stops (coordinator close). */
  async shutdown(): Promise<void> {
    this.#flush();
    await this.#sink.shutdown();
  }
}

function errorCode(error: unknown): string {
  return typeof error === 'object' && error !== null && 'code' in error ? String((error as { code: unknown }).code) : 'INTERNAL';
}

/** Batches to the OTLP/HTTP exporter thread (server/otlp-worker.ts). */
class OtlpSink implements Sink {
  readonly #worker: Worker;
  #pending = 0;
  #failed = false;
  #flushes = new Map<number, () => void>();
  #nextFlush = 0;
  readonly #dropped: (n: number) => void;

  constructor(url: string, serviceName: string, dropped: (n: number) => void) {
    this.#dropped = dropped;
    this.#worker = startOtlpWorker({ url, resource: { 'service.name': serviceName }, scope: 'exec-node-coordinator', timeoutMs: 5_000, concurrency: 2 });
    this.#worker.unref();
    this.#worker.on('message', (m: OtlpOut) => {
      if (m.type === 'sent') {
        this.#pending -= m.spans;
        if (!m.ok) this.#dropped(m.spans);
      } else {
        this.#flushes.get(m.id)?.();
        this.#flushes.delete(m.id);
      }
    });
    this.#worker.on('error', () => {
      this.#failed = true;
      for (const done of this.#flushes.values()) done();
      this.#flushes.clear();
    });
  }

  take(buf: Field[], spans: number): void {
    if (this.#failed || this.#pending + spans > MAX_PENDING_SPANS) {
      this.#dropped(spans);
      return;
    }
    this.#pending += spans;
    this.#worker.postMessage({ type: 'spans', buf, spans });
  }

  async shutdown(): Promise<void> {
    if (!this.#failed) {
      const id = this.#nextFlush++;
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, 6_000); // the requests' own timeout is 5 s
        this.#flushes.set(id, () => {
          clearTimeout(timer);
          resolve();
        });
        this.#worker.postMessage({ type: 'flush', id });
      });
    }
    await this.#worker.terminate();
  }
}

/** Records turned into the SDK's ReadableSpans for a SpanExporter (tests: InMemorySpanExporter). */
class ExporterSink implements Sink {
  readonly #exporter: SpanExporter;
  readonly #resource: Resource;

  constructor(exporter: SpanExporter, serviceName: string) {
    this.#exporter = exporter;
    this.#resource = resourceFromAttributes({ 'service.name': serviceName });
  }

  take(buf: Field[]): void {
    this.#exporter.export(readableSpans(buf, this.#resource), () => undefined);
  }

  async shutdown(): Promise<void> {
    await this.#exporter.forceFlush?.();
    await this.#exporter.shutdown();
  }
}

const SCOPE = { name: 'exec-node-coordinator' };

/** The SDK's ReadableSpans for a buffer of records (the layout of server/otlp-worker.ts). */
export function readableSpans(buf: readonly Field[], resource: Resource): ReadableSpan[] {
  const out: ReadableSpan[] = [];
  let i = 0;
  while (i < buf.length) {
    const traceId = buf[i++] as string;
    const spanId = buf[i++] as string;
    const parentId = buf[i++] as string;
    const name = buf[i++] as string;
    const kind = buf[i++] as SpanKind;
    const start = buf[i++] as number;
    const end = buf[i++] as number;
    const code = buf[i++] as SpanStatusCode;
    const message = buf[i++] as string;
    const n = buf[i++] as number;
    const attributes: Attributes = {};
    for (let a = 0; a < n; a++) attributes[buf[i++] as string] = buf[i++]!;
    const context: SpanContext = { traceId, spanId, traceFlags: TraceFlags.SAMPLED };
    const startTime = millisToHrTime(start);
    const endTime = millisToHrTime(end);
    out.push({
      name,
      kind,
      spanContext: () => context,
      // Only task.submit's parent (the caller's span) is remote.
      ...(parentId ? { parentSpanContext: { traceId, spanId: parentId, traceFlags: TraceFlags.SAMPLED, isRemote: kind === SpanKind.SERVER } } : {}),
      startTime,
      endTime,
      status: message ? { code, message } : { code },
      attributes,
      links: [],
      events: [],
      duration: hrTimeDuration(startTime, endTime),
      ended: true,
      resource,
      instrumentationScope: SCOPE,
      droppedAttributesCount: 0,
      droppedEventsCount: 0,
      droppedLinksCount: 0,
    });
  }
  return out;
}

/** `--otlp-endpoint`: a base URL gets `/v1/traces`; a URL with a path is used as given. */
export function otlpTracesUrl(endpoint: string): string {
  let url: URL;
  try {
    url = new URL(endpoint);
  } catch {
    throw new Error(`--otlp-endpoint must be an http or https URL; got ${endpoint}`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new Error(`--otlp-endpoint must be an http or https URL; got ${endpoint}`);
  if (url.pathname === '/' || url.pathname === '') url.pathname = '/v1/traces';
  return url.toString();
}
