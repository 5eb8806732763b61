/**
 * What every route shares: the error body `{ error: { code, message, details } }`
 * with the status from shared/errors.ts, fastify's own errors mapped onto the
 * project's codes, and the isolation headers.
 */
import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { AppError, ERRORS, LIMITS, isErrorCode, type ErrorCode } from '../shared';
import type { Metrics } from './metrics';
import { setSecurityHeaders } from './headers';

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
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      if (req.url.startsWith('/v1/agents/')) {
        return new AppError('WASM_TOO_LARGE', `The module is larger than ${LIMITS.maxWasmBytes} bytes; strip debug sections (wasm-opt --strip-debug) or split the agent.`, {
          limit: LIMITS.maxWasmBytes,
        });
      }
      return new AppError('BODY_TOO_LARGE', `The body is larger than ${LIMITS.maxBodyBytes} bytes; send smaller batches.`, {
        limit: LIMITS.maxBodyBytes,
      });
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
      return new AppError('UNSUPPORTED_MEDIA_TYPE', `Content type ${JSON.stringify(req.headers['content-type'] ?? '')} is not accepted here; send application/json (or application/wasm for modules).`);
    case 'FST_ERR_CTP_INVALID_CONTENT_LENGTH':
      return new AppError('BAD_JSON', 'The body length does not match its content-length header.');
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
    if (appErr.code === 'RATE_LIMITED' || appErr.code === 'SHUTTING_DOWN') reply.header('retry-after', '1');
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
  return res;
}
