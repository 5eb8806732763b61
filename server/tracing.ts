/**
 * Traces: W3C trace context on every task, and OpenTelemetry spans when an exporter is configured.
 *
 * Every task keeps a `traceparent` (`00-<trace id>-<span id>-<flags>`) in the journal: a child of the
 * caller's `traceparent` header when that one is valid, else a fresh trace. A malformed header is ignored
 * (a fresh trace starts), never an error. The span id stands for the task's `task.submit` span.
 *
 * This file is the only one that knows OpenTelemetry. `Tracing.create()` answers null unless an OTLP
 * endpoint or an exporter is given: then no provider exists and no span object is ever made; call sites
 * guard with a null check and keep only the traceparent string. When on, the coordinator records
 * `task.submit` (child of the caller's span), `task.journal` (the durable write), `task.queue` (ready →
 * assigned, per attempt), `task.attempt` (per lease, node id and attempt as attributes), the node's own
 * spans as children of the attempt (bounded and checked: nodes may be hostile), `task.result` (the journal
 * write of the result) and `webhook.deliver`. No global provider is registered: several coordinators may
 * run in one process, each with its own provider's tracer.
 */
import { randomBytes } from 'node:crypto';
import { ROOT_CONTEXT, SpanKind, SpanStatusCode, TraceFlags, trace, type Attributes, type Span, type SpanContext, type Tracer } from '@opentelemetry/api';
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-http';
import { resourceFromAttributes } from '@opentelemetry/resources';
import { BatchSpanProcessor, SimpleSpanProcessor, TracerProvider, type SpanExporter } from '@opentelemetry/sdk-trace';
import { MAX_NODE_SPANS, MAX_NODE_SPAN_NAME, type NodeSpan } from '../shared';

export type { SpanExporter } from '@opentelemetry/sdk-trace';

export interface TracingOptions {
  /**
   * OTLP/HTTP (JSON) collector (--otlp-endpoint): a URL ending in `/v1/traces`, or a base URL
   * (`http://collector:4318`) to which `/v1/traces` is added. Spans go out in batches.
   */
  otlpEndpoint?: string;
  /** Spans go to this exporter, one by one (tests: InMemorySpanExporter). Takes precedence over otlpEndpoint. */
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

// ---------------------------------------------------------------- spans (OpenTelemetry)

/** A submit request's span and the traceparent its tasks keep. */
export interface SubmitTrace {
  readonly span: Span;
  readonly traceparent: string;
}

/** One lease's `task.attempt` span. */
export interface AttemptTrace {
  readonly span: Span;
  /** Wall-clock ms when the lease was made (node span times are offsets from it). */
  readonly startWall: number;
  /** Sent to the node in `task.assign`: the attempt span is the parent of what the node measures. */
  readonly traceparent: string;
  ended: boolean;
}

/** One webhook delivery's span and the traceparent header its requests carry. */
export interface WebhookTrace {
  readonly span: Span;
  readonly traceparent: string;
}

function parentContext(traceparent: string | null | undefined): ReturnType<typeof trace.setSpanContext> {
  const p = parseTraceparent(traceparent);
  if (!p) return ROOT_CONTEXT;
  const sc: SpanContext = { traceId: p.traceId, spanId: p.spanId, traceFlags: parseInt(p.flags, 16) & TraceFlags.SAMPLED, isRemote: true };
  return trace.setSpanContext(ROOT_CONTEXT, sc);
}

function traceparentFor(span: Span): string {
  const sc = span.spanContext();
  return `00-${sc.traceId}-${sc.spanId}-${(sc.traceFlags & TraceFlags.SAMPLED) === TraceFlags.SAMPLED ? '01' : '00'}`;
}

export class Tracing {
  readonly #provider: TracerProvider;
  readonly #tracer: Tracer;
  /** Node spans dropped as malformed, out of bounds or past MAX_NODE_SPANS. */
  droppedNodeSpans = 0;

  private constructor(provider: TracerProvider) {
    this.#provider = provider;
    this.#tracer = provider.getTracer('exec-node-coordinator');
  }

  /** Null (tracing off, nothing made) unless `opts` names an exporter or an OTLP endpoint. */
  static create(opts: TracingOptions | undefined): Tracing | null {
    if (!opts || (!opts.exporter && !opts.otlpEndpoint)) return null;
    const processor = opts.exporter
      ? new SimpleSpanProcessor({ exporter: opts.exporter })
      : new BatchSpanProcessor({
          exporter: new OTLPTraceExporter({ url: otlpTracesUrl(opts.otlpEndpoint!), timeoutMillis: 5_000 }),
          scheduledDelayMillis: 1_000,
          exportTimeoutMillis: 5_000,
          maxQueueSize: 8_192,
          maxExportBatchSize: 1_024,
        });
    const provider = new TracerProvider({
      resource: resourceFromAttributes({ 'service.name': opts.serviceName ?? 'exec-node-coordinator' }),
      spanProcessors: [processor],
    });
    return new Tracing(provider);
  }

  /** Starts a submit request's span (a child of the caller's traceparent when valid, else a new trace). */
  submit(header: unknown, tasks: number): SubmitTrace {
    const span = this.#tracer.startSpan('task.submit', { kind: SpanKind.SERVER, attributes: { 'task.count': tasks } }, parentContext(typeof header === 'string' ? header : null));
    return { span, traceparent: traceparentFor(span) };
  }

  /** The durable write of a submit (`task.journal`, start and end in wall-clock ms), and the submit's end. */
  journaled(s: SubmitTrace, startWall: number, endWall: number, created: number, error?: unknown): void {
    const ctx = trace.setSpan(ROOT_CONTEXT, s.span);
    const j = this.#tracer.startSpan('task.journal', { startTime: startWall, attributes: { 'task.created': created } }, ctx);
    if (error !== undefined) failed(j, error);
    j.end(endWall);
    s.span.setAttribute('task.created', created);
    if (error !== undefined) failed(s.span, error);
    s.span.end(endWall);
  }

  /** Ends a submit that failed before its journal write. */
  refused(s: SubmitTrace, error: unknown): void {
    failed(s.span, error);
    s.span.end();
  }

  /**
   * A lease was made: `task.queue` from when the task became ready (`readyAgoMs` before now) to now, and
   * the `task.attempt` span started, both children of the task's submit span.
   */
  attempt(traceparent: string | null, readyAgoMs: number, attrs: { taskId: string; nodeId: string; attempt: number; kind: string; replica?: number }): AttemptTrace {
    const now = Date.now();
    const ctx = parentContext(traceparent);
    const attributes: Attributes = { 'task.id': attrs.taskId, 'task.kind': attrs.kind, 'task.attempt': attrs.attempt, 'node.id': attrs.nodeId };
    if (attrs.replica !== undefined) attributes['task.replica'] = attrs.replica;
    this.#tracer.startSpan('task.queue', { startTime: now - Math.max(0, readyAgoMs), attributes: { 'task.id': attrs.taskId, 'task.attempt': attrs.attempt } }, ctx).end(now);
    const span = this.#tracer.startSpan('task.attempt', { startTime: now, attributes }, ctx);
    return { span, startWall: now, traceparent: traceparentFor(span), ended: false };
  }

  /**
   * A result arrived on the lease: the node's spans (checked) become children of the attempt span,
   * which ends now with the outcome.
   */
  resulted(a: AttemptTrace, rawSpans: unknown, outcome: { ok: true } | { ok: false; code: string }): void {
    if (a.ended) return;
    const now = Date.now();
    if (rawSpans !== undefined) {
      const { spans, dropped } = checkNodeSpans(rawSpans, now - a.startWall);
      this.droppedNodeSpans += dropped;
      if (dropped) a.span.setAttribute('node.spans_dropped', dropped);
      const ctx = trace.setSpan(ROOT_CONTEXT, a.span);
      for (const s of spans) {
        const child = this.#tracer.startSpan(s.name, { startTime: a.startWall + s.startMs, attributes: { ...s.attributes, 'span.source': 'node' } }, ctx);
        child.end(a.startWall + s.endMs);
      }
    }
    this.endAttempt(a, outcome);
  }

  /** Ends an attempt span (expired, lost, cancelled, or its result arrived). */
  endAttempt(a: AttemptTrace, outcome: { ok: true } | { ok: false; code: string }): void {
    if (a.ended) return;
    a.ended = true;
    if (!outcome.ok) {
      a.span.setAttribute('error.code', outcome.code);
      a.span.setStatus({ code: SpanStatusCode.ERROR, message: outcome.code });
    }
    a.span.end();
  }

  /** The journal write of an attempt's result (`task.result`, child of the attempt span). */
  recorded(a: AttemptTrace, startWall: number, endWall: number, state: string | null): void {
    const span = this.#tracer.startSpan('task.result', { startTime: startWall, attributes: { 'task.state': state ?? 'duplicate' } }, trace.setSpan(ROOT_CONTEXT, a.span));
    span.end(endWall);
  }

  /** Starts a webhook delivery's span (child of the task's submit span); its traceparent goes on every request. */
  webhook(traceparent: string, url: string, taskId: string): WebhookTrace {
    let host = '';
    try {
      host = new URL(url).host;
    } catch {
      // refused at delivery anyway
    }
    const span = this.#tracer.startSpan('webhook.deliver', { kind: SpanKind.CLIENT, attributes: { 'task.id': taskId, 'server.address': host } }, parentContext(traceparent));
    return { span, traceparent: traceparentFor(span) };
  }

  webhookDone(w: WebhookTrace, attempts: number, error: string | null): void {
    w.span.setAttribute('webhook.attempts', attempts);
    if (error !== null) w.span.setStatus({ code: SpanStatusCode.ERROR, message: error.slice(0, 200) });
    w.span.end();
  }

  /** Exports what is pending and stops (coordinator close). */
  async shutdown(): Promise<void> {
    await this.#provider.shutdown();
  }
}

function failed(span: Span, error: unknown): void {
  const code = typeof error === 'object' && error !== null && 'code' in error ? String((error as { code: unknown }).code) : 'INTERNAL';
  span.setAttribute('error.code', code);
  span.setStatus({ code: SpanStatusCode.ERROR, message: code });
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
