/**
 * What every route shares: the error body `{ error: { code, message, details } }`
 * with the status from shared/errors.ts, fastify's own errors mapped onto the
 * project's codes, and the isolation headers.
 */
import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { STATUS_CODES } from 'node:http';
import type { Socket } from 'node:net';
import { AppError, ERROR_CODES, ERRORS, LIMITS, isErrorCode, type ErrorCode } from '../shared';
import type { Metrics } from './metrics';
import type { JsonBodyParser } from './json';
import { setSecurityHeaders } from './headers';

/** Route config the error mapping reads: a route that takes bodies above the app's limit says what is too large there. */
export interface RouteConfig {
  tooLarge?: (req: FastifyRequest) => AppError;
}

export interface ErrorBody {
  error: { code: ErrorCode; message: string; details?: Record<string, unknown> };
}

export function errorBody(err: AppError): ErrorBody {
  const body: ErrorBody = { error: { code: err.code, message: err.message } };
  if (err.details) body.error.details = err.details;
  return body;
}

/** Turns anything thrown in a route, or by fastify itself, into an AppError. */
export function toAppError(err: unknown, req: FastifyRequest): AppError {
  if (err instanceof AppError) return err;
  const fe = err as Partial<FastifyError>;
  switch (fe.code) {
    case 'FST_ERR_CTP_INVALID_JSON_BODY':
      return new AppError('BAD_JSON', 'The request body is not valid JSON; send one JSON value with content-type application/json.');
    case 'FST_ERR_CTP_EMPTY_JSON_BODY':
      return new AppError('BAD_JSON', 'The request body is empty; send a JSON value or drop the content-type header.');
    case 'FST_ERR_CTP_BODY_TOO_LARGE': {
      // A route with a larger limit of its own says what is too large there (its config's tooLarge).
      const own = (req.routeOptions?.config as RouteConfig | undefined)?.tooLarge;
      if (own) return own(req);
      return new AppError('BODY_TOO_LARGE', `The body is larger than ${LIMITS.maxBodyBytes} bytes; send smaller batches.`, {
        limit: LIMITS.maxBodyBytes,
      });
    }
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
      return new AppError('UNSUPPORTED_MEDIA_TYPE', `Content type ${JSON.stringify(req.headers['content-type'] ?? '')} is not accepted here; send application/json (or application/wasm for modules).`);
    case 'FST_ERR_CTP_INVALID_CONTENT_LENGTH':
      return new AppError('BAD_JSON', 'The body length does not match its content-length header.');
    case 'FST_ERR_MAX_PARAM_LENGTH':
      return uriTooLong();
    case 'FST_ERR_BAD_URL':
      return new AppError('MALFORMED_REQUEST', 'The URL is not valid (a path segment has bad percent-encoding).');
    case 'ECONNRESET':
      return new AppError('REQUEST_ABORTED', 'The client closed the connection before the request body was complete.');
    default:
      break;
  }
  if (fe.code && isErrorCode(fe.code)) return new AppError(fe.code, fe.message);
  if (typeof fe.statusCode === 'number' && fe.statusCode >= 400 && fe.statusCode < 500) {
    return new AppError('SCHEMA_VIOLATION', fe.message ?? 'The request is malformed.', { fastifyCode: fe.code });
  }
  return new AppError('INTERNAL', `Unexpected error: ${fe.message ?? String(err)}`, undefined, { cause: err });
}

export function installErrorHandling(app: FastifyInstance, metrics: Metrics): void {
  app.setErrorHandler((err, req, reply) => {
    const appErr = toAppError(err, req);
    if (appErr.code === 'INTERNAL') req.log.error({ err }, 'internal error');
    if (appErr.code === 'RATE_LIMITED' || appErr.code === 'SHUTTING_DOWN' || appErr.code === 'STORE_UNAVAILABLE') reply.header('retry-after', '1');
    void reply.code(ERRORS[appErr.code].status).send(errorBody(appErr));
  });
  app.setNotFoundHandler((req, reply) => {
    const err = new AppError('NOT_FOUND', `No route ${req.method} ${req.url.split('?')[0]}; see docs/api.md for the routes.`);
    void reply.code(404).send(errorBody(err));
  });
  app.addHook('onSend', async (req, reply, payload) => {
    reply.header('cross-origin-opener-policy', 'same-origin');
    reply.header('cross-origin-embedder-policy', 'require-corp');
    reply.header('cross-origin-resource-policy', 'cross-origin');
    // Content-addressed modules and model files are public and immutable: a node page served
    // from another origin (`?coordinator=`) may fetch them.
    if (req.method === 'GET' && (req.url.startsWith('/v1/modules/') || req.url.startsWith('/models/') || req.url.startsWith('/ort/'))) {
      reply.header('access-control-allow-origin', '*');
    }
    // Static files: module scripts as text/javascript (what onnxruntime-web's loader expects).
    const type = reply.getHeader('content-type');
    if (typeof type === 'string' && type.startsWith('application/javascript')) {
      reply.header('content-type', 'text/javascript; charset=utf-8');
    }
    setSecurityHeaders(reply); // nosniff, no-referrer, CSP by content type (server/headers.ts)
    return payload;
  });
  app.addHook('onResponse', async (req, reply) => {
    metrics.httpAnswered(reply.statusCode);
    if (req.url.startsWith('/models/') && reply.statusCode < 400) {
      // Names pass the route's name pattern before a file is served, so the label is safe.
      const model = req.url.slice('/models/'.length).split('/')[0] ?? '';
      if (/^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/.test(model)) metrics.modelFileServed(model);
    }
  });
}

/** Sends an AppError from a handler that took over the reply (SSE). */
export function sendError(reply: FastifyReply, err: AppError): FastifyReply {
  return reply.code(ERRORS[err.code].status).send(errorBody(err));
}

/**
 * Takes over a reply as a server-sent event stream (no buffering by proxies, readable cross-origin);
 * answers the raw response to write events to.
 */
export function openEventStream(reply: FastifyReply, extraHeaders: Record<string, string> = {}): FastifyReply['raw'] {
  reply.hijack();
  const res = reply.raw;
  res.writeHead(200, {
    'content-type': 'text/event-stream; charset=utf-8',
    'cache-control': 'no-cache, no-transform',
    connection: 'keep-alive',
    'x-accel-buffering': 'no',
    ...extraHeaders,
    'cross-origin-resource-policy': 'cross-origin',
  });
  if (reply.request.method === 'HEAD') {
    // HEAD has no body: the headers are the whole answer (unsent, they would wait for the first event
    // forever). The caller's later writes are dropped, not errors.
    res.on('error', () => {});
    res.end();
  }
  return res;
}

/** Longest path segment the router takes: a Name (128) fits in every route, with room for percent-encoding. */
export const MAX_PARAM_LENGTH = 512;
/** Longest request target (path and query) a route reads. */
export const MAX_URL_LENGTH = 8192;
/** Node's limit on the request line plus headers (http.maxHeaderSize). */
export const MAX_HEADER_BYTES = 16 << 10;

function uriTooLong(): AppError {
  return new AppError('URI_TOO_LONG', `The request target is longer than ${MAX_URL_LENGTH} characters or a path segment longer than ${MAX_PARAM_LENGTH}; names are at most 128 characters.`, {
    maxUrlLength: MAX_URL_LENGTH,
    maxSegmentLength: MAX_PARAM_LENGTH,
  });
}

/** Methods whose bodies fastify reads (GET, HEAD and TRACE bodies are never read, so never buffered). */
const BODY_METHODS = new Set(['POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS']);
const TOKEN = /^[\w!#$%&'*+.^`|~-]+\/[\w!#$%&'*+.^`|~-]+$/;

/** `type/subtype` in lower case and the charset parameter (lower case, unquoted), or type null when malformed. */
export function mediaType(header: string): { type: string | null; charset: string | null } {
  const parts = header.split(';');
  const type = parts[0]!.trim().toLowerCase();
  let charset: string | null = null;
  for (let i = 1; i < parts.length; i++) {
    const eq = parts[i]!.indexOf('=');
    if (eq < 0) continue;
    if (parts[i]!.slice(0, eq).trim().toLowerCase() !== 'charset') continue;
    charset = parts[i]!.slice(eq + 1).trim().replace(/^"(.*)"$/, '$1').toLowerCase();
  }
  return { type: TOKEN.test(type) ? type : null, charset };
}

/**
 * The gate in front of every body: the application/json parser is the bounded one (server/json.ts), the
 * only parser at the root (fastify's text/plain one is removed); a scope that reads other types (the module
 * upload) adds its own. Before any body byte is read (onRequest), a request whose content type no parser of
 * its route's scope takes, or JSON declared in a charset other than UTF-8, is refused with 415; its body is
 * then discarded as it arrives, never buffered. Call before routes are registered.
 */
export function installInputGate(app: FastifyInstance, metrics: Metrics, json: JsonBodyParser): void {
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('application/json', { parseAs: 'buffer' }, (_req, body, done) => {
    json.parse(body as Buffer).then(
      (value) => done(null, value),
      (err: Error) => done(err, undefined),
    );
  });
  // An error answered with no body (a plugin's bare `reply.code(404).send()`, such as @fastify/websocket's
  // for a plain GET of the socket route) gets one in our shape.
  app.addHook('onSend', async (req, reply, payload) => {
    if (reply.statusCode < 400 || req.method === 'HEAD' || (payload !== undefined && payload !== null && payload !== '')) return payload;
    const code = reply.statusCode === 404 ? 'NOT_FOUND' : (ERROR_CODES.find((c) => ERRORS[c].status === reply.statusCode) ?? 'INTERNAL');
    const message = code === 'NOT_FOUND' ? `Nothing answers ${req.method} ${req.url.split('?')[0]!.slice(0, 200)} here (a WebSocket route takes only upgrades); see docs/api.md.` : ERRORS[code].message;
    void reply.type('application/json; charset=utf-8');
    return JSON.stringify(errorBody(new AppError(code, message)));
  });
  app.addHook('onRequest', async (req, reply) => {
    if (req.url.length > MAX_URL_LENGTH) throw uriTooLong();
    // The router answers a segment past maxParamLength as no route; say what is wrong instead.
    if (req.url.length > MAX_PARAM_LENGTH && (req.url.split('?')[0] ?? '').split('/').some((seg) => seg.length > MAX_PARAM_LENGTH)) throw uriTooLong();
    if (!BODY_METHODS.has(req.method) || req.is404) return;
    const header = req.headers['content-type'];
    if (header === undefined) {
      const length = req.headers['content-length'];
      if (req.headers['transfer-encoding'] === undefined && (length === undefined || length === '0')) return;
      return refuseBody(req, reply, metrics, new AppError('UNSUPPORTED_MEDIA_TYPE', 'The request has a body but no content-type; send application/json (or application/wasm for modules).'));
    }
    const { type, charset } = mediaType(header);
    if (type === null || !req.server.hasContentTypeParser(type)) {
      return refuseBody(req, reply, metrics, new AppError('UNSUPPORTED_MEDIA_TYPE', `Content type ${JSON.stringify(header.slice(0, 100))} is not accepted here; send application/json (or application/wasm for modules).`, {
        contentType: header.slice(0, 100),
      }));
    }
    if (type === 'application/json' && charset !== null && charset !== 'utf-8' && charset !== 'utf8') {
      return refuseBody(req, reply, metrics, new AppError('UNSUPPORTED_MEDIA_TYPE', `JSON is read as UTF-8 only, not ${JSON.stringify(charset.slice(0, 40))}; encode the body as UTF-8 and send charset=utf-8 (or no charset).`, {
        charset: charset.slice(0, 40),
      }));
    }
  });
}

/** A refused body up to this size is read and discarded as usual (the connection stays open). */
const DISCARD_BYTES = 64 << 10;
/** How long a connection with a refused large body stays half-open for the client to read the answer. */
const LINGER_MS = 2_000;

/**
 * Refuses a request before its body is read. A small body is discarded as it arrives (keep-alive goes on);
 * a large or chunked one is never read at all (answerAndClose). Reading 15 MiB only to throw it away kept
 * the event loop busy for a fifth of a second.
 */
function refuseBody(req: FastifyRequest, reply: FastifyReply, metrics: Metrics, err: AppError): void {
  const length = Number(req.headers['content-length'] ?? 0);
  if (req.headers['transfer-encoding'] === undefined && length <= DISCARD_BYTES) throw err;
  if (!answerAndClose(req.raw.socket, reply, metrics, err)) throw err;
}

/**
 * Answers `err` and closes the connection without reading the rest of the request body, in stages, so that a
 * client still sending gets the answer rather than a reset: the reply is hijacked and the answer (with
 * `connection: close`) written on the socket, which stops reading (the client's sends stall, costing nothing
 * here) and half-closes; it is destroyed after LINGER_MS (sooner should the client's end reach it). Node, after an answer
 * with `connection: close`, destroys the socket as soon as the answer is flushed; with the client's bytes
 * still arriving that is a reset (RST), and the client's next write fails with EPIPE or ECONNRESET, often
 * before it has read the answer. Answers false, doing nothing, when the socket can no longer be written
 * (the client is gone; the caller throws the error as usual). `socket` is the request's, taken before its body
 * was read: Node detaches it from a request whose body stream was destroyed.
 */
export function answerAndClose(socket: Socket | null, reply: FastifyReply, metrics: Metrics, err: AppError): boolean {
  if (socket === null || !socket.writable) return false;
  void reply.hijack();
  socket.pause();
  const status = ERRORS[err.code].status;
  const body = JSON.stringify(errorBody(err));
  metrics.httpAnswered(status);
  // Not unref'd: a socket that reads nothing and has nothing left to write holds no event loop, and until it is
  // destroyed the server's close() waits for it; unref'd, a process with nothing else to do never closed.
  const timer = setTimeout(() => socket.destroy(), LINGER_MS);
  socket.once('close', () => clearTimeout(timer));
  socket.once('end', () => socket.destroy());
  socket.end(
    `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? 'Error'}\r\ncontent-type: application/json; charset=utf-8\r\ncontent-length: ${Buffer.byteLength(body)}\r\n` +
      `x-content-type-options: nosniff\r\ncache-control: no-store\r\nconnection: close\r\n\r\n${body}`,
  );
  return true;
}

/**
 * Fastify's `frameworkErrors`: errors the router raises before a route runs (a path segment past
 * MAX_PARAM_LENGTH, bad percent-encoding), in our shape.
 */
export function frameworkErrors(err: FastifyError, req: FastifyRequest, reply: FastifyReply): void {
  const appErr = toAppError(err, req);
  void reply.code(ERRORS[appErr.code].status).send(errorBody(appErr));
}

/**
 * Fastify's `clientErrorHandler` (the http server's 'clientError' event): what Node's HTTP parser refuses
 * before fastify sees a request — headers past MAX_HEADER_BYTES (431), a request not received within the
 * request timeout (408), anything not HTTP/1.1 (400) — answered in our shape, then the connection closes.
 */
export function clientErrorHandler(metrics: Metrics): (err: Error & { code?: string }, socket: Socket) => void {
  return (err, socket) => {
    if (err.code === 'ECONNRESET' || socket.destroyed) return;
    let appErr: AppError;
    if (err.code === 'HPE_HEADER_OVERFLOW') {
      appErr = new AppError('HEADERS_TOO_LARGE', `The request line and headers are larger than ${MAX_HEADER_BYTES} bytes; send fewer or shorter headers.`, {
        limit: MAX_HEADER_BYTES,
      });
    } else if (err.code === 'ERR_HTTP_REQUEST_TIMEOUT') {
      appErr = new AppError('REQUEST_TIMEOUT', 'The request was not received in time; send it again, faster.');
    } else {
      appErr = new AppError('MALFORMED_REQUEST', 'The request is not well-formed HTTP/1.1; check the request line, the headers and the body framing.', {
        parserCode: err.code ?? null,
      });
    }
    const status = ERRORS[appErr.code].status;
    metrics.httpAnswered(status);
    if (!socket.writable) {
      socket.destroy();
      return;
    }
    const body = JSON.stringify(errorBody(appErr));
    // Destroyed once the answer is flushed (at once it could drop it), or after a second at most.
    const timer = setTimeout(() => socket.destroy(), 1_000);
    timer.unref();
    socket.end(
      `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? 'Error'}\r\ncontent-type: application/json; charset=utf-8\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`,
      () => {
        clearTimeout(timer);
        socket.destroy();
      },
    );
  };
}
