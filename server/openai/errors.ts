/**
 * OpenAI's error shape, `{ error: { message, type, param, code } }`, for the
 * OpenAI-compatible routes. `code` is the project's stable code in lower case
 * (MODEL_NOT_FOUND → `model_not_found`, which is also OpenAI's own code for it);
 * `param` names the request field at fault when there is one.
 */
import { AppError, ERRORS } from '../../shared';

export type OpenAiErrorType = 'invalid_request_error' | 'rate_limit_error' | 'server_error';

export interface OpenAiErrorBody {
  error: { message: string; type: OpenAiErrorType; param: string | null; code: string };
}

export function openAiError(err: AppError): { status: number; body: OpenAiErrorBody } {
  const status = ERRORS[err.code].status;
  const type: OpenAiErrorType = status === 429 ? 'rate_limit_error' : status >= 500 ? 'server_error' : 'invalid_request_error';
  return { status, body: { error: { message: err.message, type, param: paramOf(err), code: err.code.toLowerCase() } } };
}

/** An AppError that names the request field at fault (read back by `paramOf`). */
export function badParam(param: string, message: string, code: 'SCHEMA_VIOLATION' | 'MODEL_NOT_FOUND' | 'ADAPTER_NOT_FOUND' = 'SCHEMA_VIOLATION'): AppError {
  return new AppError(code, message, { param });
}

function paramOf(err: AppError): string | null {
  const d = err.details;
  if (!d) return null;
  if (typeof d.param === 'string') return d.param;
  const first = Array.isArray(d.errors) ? (d.errors[0] as { path?: unknown } | undefined) : undefined;
  if (typeof first?.path !== 'string' || first.path === '/' || first.path === '') return null;
  // JSON pointer → OpenAI's dotted form: /messages/0/content → messages[0].content
  return first.path
    .split('/')
    .filter(Boolean)
    .map((part, i) => (/^\d+$/.test(part) ? `[${part}]` : i === 0 ? part : `.${part}`))
    .join('');
}
