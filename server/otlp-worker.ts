/**
 * The OTLP/HTTP (JSON) exporter's thread: server/tracing.ts records spans as flat records (no span
 * objects) and hands them over in batches by postMessage; this thread builds the OTLP JSON request and
 * POSTs it to the collector, so neither the serialisation nor the HTTP client runs on the event loop
 * that serves tasks.
 *
 * It is started by `startOtlpWorker` through server/ts-worker.mjs (tsx's loader does not follow --import
 * into worker threads on Node 20). A record is `traceId, spanId, parentSpanId ('' for a root), name, kind (OpenTelemetry API
 * SpanKind), startMs, endMs (epoch ms, fractions allowed), statusCode, statusMessage, n, then n
 * key/value pairs` (string, finite number or boolean values). The body is the OTLP/JSON encoding
 * (hex ids, nanosecond times as decimal strings, OTLP's SpanKind = API's + 1) of
 * @opentelemetry/otlp-transformer's JsonTraceSerializer, less the fields at their default (no events,
 * links or dropped counts; status only when set), which proto3 JSON leaves out; server/tracing.test.ts
 * compares the two. Every span is sampled; only a SERVER span has a remote parent.
 *
 * Messages in: `{ type: 'spans', buf, spans }`, `{ type: 'flush', id }`. Out: `{ type: 'sent', spans, ok }`
 * per request, `{ type: 'flushed', id }` once every request before the flush has ended.
 */
import { request as httpRequest, Agent as HttpAgent, type IncomingMessage } from 'node:http';
import { request as httpsRequest, Agent as HttpsAgent } from 'node:https';
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';

/** One span record's fields, flat (see the layout above). */
export type Field = string | number | boolean;

export interface OtlpWorkerData {
  url: string;
  resource: Record<string, Field>;
  scope: string;
  timeoutMs: number;
  concurrency: number;
}

export type OtlpIn = { type: 'spans'; buf: Field[]; spans: number } | { type: 'flush'; id: number };
export type OtlpOut = { type: 'sent'; spans: number; ok: boolean } | { type: 'flushed'; id: number };

/** The exporter thread for `data`: a Worker running this file. */
export function startOtlpWorker(data: OtlpWorkerData): Worker {
  return new Worker(new URL('./ts-worker.mjs', import.meta.url), {
    workerData: { entry: new URL(import.meta.url).href, otlp: data },
  });
}

/** OpenTelemetry API SpanKind.SERVER: only a server span (task.submit, child of the caller's) has a remote parent. */
const SERVER = 1;

function value(v: Field): string {
  if (typeof v === 'string') return `{"stringValue":${JSON.stringify(v)}}`;
  if (typeof v === 'boolean') return `{"boolValue":${v}}`;
  return Number.isInteger(v) ? `{"intValue":${v}}` : `{"doubleValue":${v}}`;
}

function attributes(obj: Record<string, Field>): string {
  return `[${Object.keys(obj).map((k) => `{"key":${JSON.stringify(k)},"value":${value(obj[k]!)}}`).join(',')}]`;
}

/** Epoch ms (fractions allowed) → OTLP's nanoseconds as a decimal string. */
function nano(ms: number): string {
  const us = Math.round(ms * 1000);
  return us === 0 ? '0' : `${us}000`;
}

/** Builds OTLP/JSON request bodies; names and attribute keys repeat from span to span, so their JSON is made once. */
export class OtlpEncoder {
  readonly #head: string;
  readonly #keys = new Map<string, string>();
  readonly #names = new Map<string, string>();

  constructor(resource: Record<string, Field>, scope: string) {
    this.#head = `{"resourceSpans":[{"resource":{"attributes":${attributes(resource)}},"scopeSpans":[{"scope":{"name":${JSON.stringify(scope)}},"spans":[`;
  }

  #key(k: string): string {
    let j = this.#keys.get(k);
    if (j === undefined) {
      j = `{"key":${JSON.stringify(k)},"value":`;
      if (this.#keys.size < 4096) this.#keys.set(k, j);
    }
    return j;
  }

  #name(name: string): string {
    let j = this.#names.get(name);
    if (j === undefined) {
      j = JSON.stringify(name);
      if (this.#names.size < 4096) this.#names.set(name, j);
    }
    return j;
  }

  body(buf: readonly Field[]): string {
    const spans: string[] = [];
    let i = 0;
    while (i < buf.length) {
      const traceId = buf[i++] as string, spanId = buf[i++] as string, parent = buf[i++] as string, name = buf[i++] as string;
      const kind = buf[i++] as number, start = buf[i++] as number, end = buf[i++] as number;
      const code = buf[i++] as number, message = buf[i++] as string, n = buf[i++] as number;
      let attrs = '';
      for (let a = 0; a < n; a++) {
        const k = buf[i++] as string;
        const v = buf[i++]!;
        attrs += `${a ? ',' : ''}${this.#key(k)}${value(v)}}`;
      }
      spans.push(
        `{"traceId":"${traceId}","spanId":"${spanId}"${parent ? `,"parentSpanId":"${parent}"` : ''}` +
          `,"flags":${kind === SERVER && parent ? 769 : 257},"name":${this.#name(name)},"kind":${kind + 1}` +
          `,"startTimeUnixNano":"${nano(start)}","endTimeUnixNano":"${nano(end)}","attributes":[${attrs}]` +
          `${code ? `,"status":{"code":${code}${message ? `,"message":${JSON.stringify(message)}` : ''}}` : ''}}`,
      );
    }
    return `${this.#head}${spans.join(',')}]}]}]}`;
  }
}

/** The thread's side: batches in, POSTs out (at most `concurrency` at once), `flushed` once all before a flush ended. */
function serve(data: OtlpWorkerData, port: NonNullable<typeof parentPort>): void {
  const encoder = new OtlpEncoder(data.resource, data.scope);
  const target = new URL(data.url);
  const https = target.protocol === 'https:';
  const agent = https ? new HttpsAgent({ keepAlive: true, maxSockets: data.concurrency }) : new HttpAgent({ keepAlive: true, maxSockets: data.concurrency });
  const queue: Array<Extract<OtlpIn, { type: 'spans' }>> = [];
  let active = 0;
  let waiters: number[] = [];
  const post = (payload: string): Promise<boolean> =>
    new Promise((resolve) => {
      const options = { method: 'POST', agent, timeout: data.timeoutMs, headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) } };
      const answered = (res: IncomingMessage): void => {
        res.resume();
        res.on('end', () => resolve(res.statusCode !== undefined && res.statusCode >= 200 && res.statusCode < 300));
        res.on('error', () => resolve(false));
      };
      const req = https ? httpsRequest(target, options, answered) : httpRequest(target, options, answered);
      req.on('timeout', () => req.destroy(new Error('timeout')));
      req.on('error', () => resolve(false));
      req.end(payload);
    });
  const send = async (item: Extract<OtlpIn, { type: 'spans' }>): Promise<void> => {
    let ok = false;
    try {
      ok = await post(encoder.body(item.buf));
    } catch {
      ok = false;
    }
    port.postMessage({ type: 'sent', spans: item.spans, ok } satisfies OtlpOut);
  };
  const pump = (): void => {
    while (active < data.concurrency && queue.length) {
      active++;
      void send(queue.shift()!).finally(() => {
        active--;
        pump();
      });
    }
    if (active === 0 && queue.length === 0) {
      for (const id of waiters) port.postMessage({ type: 'flushed', id } satisfies OtlpOut);
      waiters = [];
    }
  };
  port.on('message', (m: OtlpIn) => {
    if (m.type === 'spans') queue.push(m);
    else waiters.push(m.id);
    pump();
  });
}

if (!isMainThread && parentPort && (workerData as { otlp?: OtlpWorkerData } | null)?.otlp) serve((workerData as { otlp: OtlpWorkerData }).otlp, parentPort);
