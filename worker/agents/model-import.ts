/**
 * `agent_model`: the host import through which an agent asks the node's model to generate (shared/wasm
 * MODEL_MODULE has the ABI). The agent is suspended with JavaScript Promise Integration while the model
 * works: `generate` is a `WebAssembly.Suspending` import and `_start` runs through `WebAssembly.promising`,
 * so the worker's event loop carries the call to the page (the ModelBridge) and back. Fuel is spent only
 * by the agent's own instructions, so the wait costs none; the wall-clock deadline keeps running through it
 * (the pool ends the run at it, and a call made after it ends the run with AGENT_TIMEOUT).
 */
import { AGENT_IO_LIMITS, AppError, MODEL_ERRORS, serializeError, type ErrorCode, type ErrorInfo, type ModelCallStats } from '../../shared';
import type { ModelBridge } from './types';

interface Jspi {
  Suspending: new (fn: (...args: number[]) => Promise<number>) => WebAssembly.ExportValue;
  promising: (fn: (...args: never[]) => unknown) => (...args: unknown[]) => Promise<unknown>;
}

/** The engine's JSPI, or null where it has none (Node 20, browsers before Chromium 137). */
export function jspi(): Jspi | null {
  const w = WebAssembly as unknown as Partial<Jspi>;
  return typeof w.Suspending === 'function' && typeof w.promising === 'function' ? (w as Jspi) : null;
}

/** Whether this thread can run agents that import agent_model. */
export const hasJspi = (): boolean => jspi() !== null;

/** Whether a compiled module imports agent_model (remembered per module). */
const usesModelCache = new WeakMap<WebAssembly.Module, boolean>();
export function importsModel(module: WebAssembly.Module, namespace: string): boolean {
  let uses = usesModelCache.get(module);
  if (uses === undefined) usesModelCache.set(module, (uses = WebAssembly.Module.imports(module).some((i) => i.module === namespace)));
  return uses;
}

const strict = new TextDecoder('utf-8', { fatal: true });
const encoder = new TextEncoder();

export interface ModelImportState {
  imports: WebAssembly.ModuleImports;
  stats: ModelCallStats;
  /** The last failed call's error (null: none failed). */
  lastError(): ErrorInfo | null;
}

/**
 * The agent_model functions of one run. `memory` is read on every call (set once the instance exists);
 * `now` is the wall clock the deadline is on.
 */
export function modelImports(
  api: Jspi,
  bridge: ModelBridge | undefined,
  opts: { deadline: number; maxCalls: number; memory: () => WebAssembly.Memory; now: () => number },
): ModelImportState {
  const stats: ModelCallStats = { calls: 0, failed: 0, promptTokens: 0, completionTokens: 0, waitMs: 0 };
  let last: ErrorInfo | null = null;
  const refuse = (status: number, code: ErrorCode, message: string, details?: Record<string, unknown>): number => {
    stats.failed++;
    last = serializeError(new AppError(code, message, details));
    return status;
  };
  const inBounds = (ptr: number, len: number): boolean => ptr >= 0 && len >= 0 && ptr + len <= opts.memory().buffer.byteLength;
  const pastDeadline = (when: string): AppError =>
    new AppError('AGENT_TIMEOUT', `The agent ${when} its wall-clock deadline; raise limits.timeoutMs or ask the model less.`, { deadline: opts.deadline });

  const generate = async (promptPtr: number, promptLen: number, outPtr: number, outCap: number, maxTokens: number): Promise<number> => {
    const pp = promptPtr >>> 0, pl = promptLen >>> 0, op = outPtr >>> 0, oc = outCap >>> 0;
    if (opts.now() >= opts.deadline) throw pastDeadline('called the model after');
    if (!inBounds(pp, pl) || !inBounds(op, oc)) {
      return refuse(MODEL_ERRORS.invalid, 'AGENT_MODEL_CALL_INVALID', 'agent_model.generate was given a prompt or output buffer outside the agent\'s memory.', { promptPtr: pp, promptLen: pl, outPtr: op, outCap: oc });
    }
    if (pl > AGENT_IO_LIMITS.maxModelPromptBytes) {
      return refuse(MODEL_ERRORS.promptTooLong, 'PROMPT_TOO_LONG', `The prompt is ${pl} bytes; a model call takes at most ${AGENT_IO_LIMITS.maxModelPromptBytes}.`, { promptBytes: pl });
    }
    if (maxTokens < 1 || maxTokens > AGENT_IO_LIMITS.maxModelCallTokens) {
      return refuse(MODEL_ERRORS.invalid, 'AGENT_MODEL_CALL_INVALID', `max_tokens is ${maxTokens}; give 1 to ${AGENT_IO_LIMITS.maxModelCallTokens}.`, { maxTokens });
    }
    let prompt: string;
    try {
      prompt = strict.decode(new Uint8Array(opts.memory().buffer, pp, pl));
    } catch {
      return refuse(MODEL_ERRORS.invalid, 'AGENT_MODEL_CALL_INVALID', 'The prompt given to agent_model.generate is not UTF-8.');
    }
    if (stats.calls >= opts.maxCalls) {
      return refuse(MODEL_ERRORS.exhausted, 'AGENT_MODEL_CALLS_EXHAUSTED', `The run made its ${opts.maxCalls} model calls; raise the payload's modelCalls.`, { modelCalls: opts.maxCalls });
    }
    if (!bridge) return refuse(MODEL_ERRORS.failed, 'AGENT_PAYLOAD_INVALID', 'The task names no model for agent_model calls (payload.model).');
    stats.calls++;
    const t0 = performance.now();
    let answer;
    try {
      answer = await bridge.generate({ prompt, maxTokens });
    } finally {
      stats.waitMs += performance.now() - t0;
    }
    if (opts.now() >= opts.deadline) throw pastDeadline('passed');
    if (!answer.ok) {
      if (answer.error.code === 'AGENT_TIMEOUT') throw pastDeadline('passed');
      stats.failed++;
      last = answer.error;
      return answer.error.code === 'PROMPT_TOO_LONG' ? MODEL_ERRORS.promptTooLong : MODEL_ERRORS.failed;
    }
    stats.promptTokens += answer.promptTokens;
    stats.completionTokens += answer.completionTokens;
    const bytes = encoder.encode(answer.text);
    // The memory may have been replaced by a grow before the call: view it afresh.
    new Uint8Array(opts.memory().buffer, op, oc).set(bytes.subarray(0, Math.min(oc, bytes.byteLength)));
    return bytes.byteLength;
  };

  const lastError = (outPtr: number, outCap: number): number => {
    const op = outPtr >>> 0, oc = outCap >>> 0;
    if (!inBounds(op, oc)) return MODEL_ERRORS.invalid;
    if (!last) return 0;
    const bytes = encoder.encode(`${last.code}: ${last.message}`);
    new Uint8Array(opts.memory().buffer, op, oc).set(bytes.subarray(0, Math.min(oc, bytes.byteLength)));
    return bytes.byteLength;
  };

  return {
    imports: { generate: new api.Suspending(generate), last_error: lastError },
    stats,
    lastError: () => last,
  };
}
