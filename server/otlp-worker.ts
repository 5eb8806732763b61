/**
 * The OTLP/HTTP (JSON) exporter's thread: server/tracing.ts records spans as flat records (no span
 * objects) and hands them over in batches by postMessage; this thread builds the OTLP JSON request and
 * POSTs it to the collector, so neither the serialisation nor the HTTP client runs on the event loop
 * that serves tasks.
 *
 * It runs as an eval'd worker (tsx does not load TypeScript worker files), hence plain JavaScript in a
 * string. A record is `traceId, spanId, parentSpanId ('' for a root), name, kind (OpenTelemetry API
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
export const OTLP_WORKER_SOURCE = String.raw`
'use strict';
const { parentPort, workerData } = require('node:worker_threads');
const { url, resource, scope, timeoutMs, concurrency } = workerData;
const head = '{"resourceSpans":[{"resource":{"attributes":' + attributes(resource) + '},"scopeSpans":[{"scope":{"name":' + JSON.stringify(scope) + '},"spans":[';
const tail = ']}]}]}';
// Span flags: sampled, and whether the parent is remote (bits 8 and 9): only a server span's (task.submit's
// parent is the caller's span) is.
const SERVER = 1;
const queue = [];
let active = 0;
let waiters = [];

function value(v) {
  if (typeof v === 'string') return '{"stringValue":' + JSON.stringify(v) + '}';
  if (typeof v === 'boolean') return '{"boolValue":' + v + '}';
  return Number.isInteger(v) ? '{"intValue":' + v + '}' : '{"doubleValue":' + v + '}';
}
function attributes(obj) {
  const out = [];
  for (const k of Object.keys(obj)) out.push('{"key":' + JSON.stringify(k) + ',"value":' + value(obj[k]) + '}');
  return '[' + out.join(',') + ']';
}
// Names and attribute keys repeat from span to span: their JSON is made once.
const keys = new Map();
const names = new Map();
function keyJson(k) {
  let j = keys.get(k);
  if (j === undefined) {
    j = '{"key":' + JSON.stringify(k) + ',"value":';
    if (keys.size < 4096) keys.set(k, j);
  }
  return j;
}
function nameJson(name) {
  let j = names.get(name);
  if (j === undefined) {
    j = JSON.stringify(name);
    if (names.size < 4096) names.set(name, j);
  }
  return j;
}
function nano(ms) {
  const us = Math.round(ms * 1000);
  return us === 0 ? '0' : us + '000';
}
function body(buf) {
  const spans = [];
  let i = 0;
  while (i < buf.length) {
    const traceId = buf[i++], spanId = buf[i++], parent = buf[i++], name = buf[i++], kind = buf[i++];
    const start = buf[i++], end = buf[i++], code = buf[i++], message = buf[i++], n = buf[i++];
    let attrs = '';
    for (let a = 0; a < n; a++) {
      const k = buf[i++], v = buf[i++];
      attrs += (a ? ',' : '') + keyJson(k) + value(v) + '}';
    }
    spans.push(
      '{"traceId":"' + traceId + '","spanId":"' + spanId + '"' + (parent ? ',"parentSpanId":"' + parent + '"' : '') +
      ',"flags":' + (kind === SERVER && parent ? 769 : 257) + ',"name":' + nameJson(name) + ',"kind":' + (kind + 1) +
      ',"startTimeUnixNano":"' + nano(start) + '","endTimeUnixNano":"' + nano(end) + '","attributes":[' + attrs + ']' +
      (code ? ',"status":{"code":' + code + (message ? ',"message":' + JSON.stringify(message) : '') + '}' : '') + '}'
    );
  }
  return head + spans.join(',') + tail;
}
const target = new URL(url);
const client = require(target.protocol === 'https:' ? 'node:https' : 'node:http');
const agent = new client.Agent({ keepAlive: true, maxSockets: concurrency });
function post(payload) {
  return new Promise((resolve) => {
    const req = client.request(target, { method: 'POST', agent, timeout: timeoutMs, headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) } }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode >= 200 && res.statusCode < 300));
      res.on('error', () => resolve(false));
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', () => resolve(false));
    req.end(payload);
  });
}
async function send(item) {
  let ok = false;
  try {
    ok = await post(body(item.buf));
  } catch {
    ok = false;
  }
  parentPort.postMessage({ type: 'sent', spans: item.spans, ok });
}
function pump() {
  while (active < concurrency && queue.length) {
    active++;
    send(queue.shift()).finally(() => {
      active--;
      pump();
    });
  }
  if (active === 0 && queue.length === 0) {
    for (const id of waiters) parentPort.postMessage({ type: 'flushed', id });
    waiters = [];
  }
}
parentPort.on('message', (m) => {
  if (m.type === 'spans') queue.push(m);
  else if (m.type === 'flush') waiters.push(m.id);
  pump();
});
`;
