/**
 * The same-thread agent runtime: one WASI run of a compiled, instrumented
 * module. Used inside each pooled worker and directly by Node tests.
 * Never throws for agent faults: every ending maps to an AgentRunOutcome.
 */
import { File, OpenFile, PreopenDirectory, type Inode } from '@bjorn3/browser_wasi_shim';
import {
  AppError,
  FUEL_EXPORT,
  GROW_EXPORT,
  HOST_MEMORY_MODULE,
  HOST_MEMORY_NAME,
  WASM_PAGE_BYTES,
  serializeError,
  type ErrorCode,
  type ErrorInfo,
  type HostMemoryDescriptor,
} from '../../shared';
import { createMemory, isHostOutOfMemory, type HostMemories } from './memories';
import { CappedOutput } from './output';
import { AgentWasi } from './wasi';
import type { AgentRunOutcome, AgentRunRequest } from './types';

const PRINTABLE_ASCII = /^[\x20-\x7e]*$/;
const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;
const STDERR_TAIL = 2048;

export interface RunOptions {
  /** Wall-clock start of the run request (performance.timeOrigin + performance.now()), for spawn timing. */
  requestedAt?: number;
  /** Called right before `_start` with the spawn time in ms (from requestedAt, else from this call). */
  onStart?: (spawnMs: number) => void;
  /** The memory cap in pages the module was compiled with (default: from req.limits.memoryMB). */
  capPages?: number;
  /** The memory the module imports (PreparedModule.memory); null or absent: it defines its own. */
  memory?: HostMemoryDescriptor | null;
  /** Reuses memories across runs (a worker's); absent: a fresh memory per run. */
  memories?: HostMemories;
  /** The module variant's key in `memories` (PreparedModule.key). */
  memoryKey?: string;
}

/** Milliseconds on a clock shared by the page and its workers. */
export const wallClock = (): number => performance.timeOrigin + performance.now();

function refuse(code: ErrorCode, message: string, details?: Record<string, unknown>): AgentRunOutcome {
  return { ok: false, error: serializeError(new AppError(code, message, details)) };
}

function hostExhausted(what: string, err: unknown, details: Record<string, unknown> = {}): Extract<AgentRunOutcome, { ok: false }> {
  const message = err instanceof Error ? err.message : String(err);
  const error = new AppError('NODE_RESOURCE_EXHAUSTED', `The node could not ${what} (${message}); the task goes to another worker or node.`, { ...details, cause: message });
  return { ok: false, error: serializeError(error) };
}

/**
 * After a memory.grow the agent saw refused below its cap: could the host have given the
 * memory? Grows the (finished) memory to the cap; a refusal then is the host's, not the agent's.
 */
function hostRefusedGrowth(memory: WebAssembly.Memory, capPages: number): unknown {
  const pages = memory.buffer.byteLength / WASM_PAGE_BYTES;
  if (pages >= capPages) return null;
  try {
    memory.grow(capPages - pages);
    return null;
  } catch (err) {
    return isHostOutOfMemory(err) ? err : null;
  }
}

function checkArgs(req: AgentRunRequest): AgentRunOutcome | null {
  const bad = (what: string, value: string): AgentRunOutcome =>
    refuse('AGENT_BAD_ARGS', `${what} ${JSON.stringify(value.slice(0, 40))} is not printable ASCII; percent- or base64-encode it.`, { what });
  if (!PRINTABLE_ASCII.test(req.agentName)) return bad('The agent name', req.agentName);
  if (!PRINTABLE_ASCII.test(req.taskId)) return bad('The task id', req.taskId);
  for (const a of req.args) if (!PRINTABLE_ASCII.test(a)) return bad('An argument', a);
  for (const [k, v] of Object.entries(req.env)) {
    if (!ENV_NAME.test(k)) return refuse('AGENT_BAD_ARGS', `The env name ${JSON.stringify(k.slice(0, 40))} must match ${ENV_NAME.source}.`);
    if (!PRINTABLE_ASCII.test(v)) return bad(`The env value of ${k}`, v);
  }
  return null;
}

function inputDir(files: Record<string, Uint8Array>): PreopenDirectory {
  const entries = new Map<string, Inode>();
  for (const [name, data] of Object.entries(files)) entries.set(name, new File(data, { readonly: true }));
  return new PreopenDirectory('/input', entries);
}

/** Runs one agent to its end in this thread. */
export function runAgentInThread(compiled: WebAssembly.Module, req: AgentRunRequest, options: RunOptions = {}): AgentRunOutcome {
  const requestedAt = options.requestedAt ?? wallClock();
  const badArgs = checkArgs(req);
  if (badArgs) return badArgs;

  const { limits } = req;
  const capPages = options.capPages ?? Math.floor((limits.memoryMB * 1024 * 1024) / WASM_PAGE_BYTES);
  const stdout = new CappedOutput('stdout', limits.maxStdoutBytes);
  const stderr = new CappedOutput('stderr', limits.maxStderrBytes);
  const env = [`AGENT_TASK_ID=${req.taskId}`, `AGENT_NAME=${req.agentName}`, ...Object.entries(req.env).map(([k, v]) => `${k}=${v}`)];
  const wasi = new AgentWasi([req.agentName, ...req.args], env, [new OpenFile(new File(req.stdin, { readonly: true })), stdout, stderr, inputDir(req.files)], {
    deadline: wallClock() + limits.timeoutMs,
  });

  const t0 = performance.now();
  const imports: WebAssembly.Imports = { wasi_snapshot_preview1: wasi.wasiImport as WebAssembly.ModuleImports };
  const hostMemory = options.memory ?? null;
  let given: WebAssembly.Memory | null = null;
  if (hostMemory) {
    try {
      given = options.memories ? options.memories.take(options.memoryKey ?? '', hostMemory) : createMemory(hostMemory);
    } catch (err) {
      if (isHostOutOfMemory(err)) return hostExhausted('reserve Wasm memory for the agent', err, { stage: 'memory' });
      return refuse('AGENT_TRAP', `The agent's memory could not be created: ${err instanceof Error ? err.message : String(err)}`);
    }
    imports[HOST_MEMORY_MODULE] = { [HOST_MEMORY_NAME]: given };
  }
  try {
    return runInstance(compiled, req, imports, given, capPages, stdout, stderr, wasi, t0, requestedAt, options);
  } finally {
    if (given && hostMemory) {
      if (options.memories) options.memories.give(options.memoryKey ?? '', hostMemory, given);
    }
  }
}

function runInstance(
  compiled: WebAssembly.Module,
  req: AgentRunRequest,
  imports: WebAssembly.Imports,
  given: WebAssembly.Memory | null,
  capPages: number,
  stdout: CappedOutput,
  stderr: CappedOutput,
  wasi: AgentWasi,
  t0: number,
  requestedAt: number,
  options: RunOptions,
): AgentRunOutcome {
  const { limits } = req;
  let instance: WebAssembly.Instance;
  try {
    instance = new WebAssembly.Instance(compiled, imports);
  } catch (err) {
    if (isHostOutOfMemory(err)) return hostExhausted('allocate Wasm memory for the agent', err, { stage: 'instantiate' });
    return refuse('AGENT_TRAP', `The agent could not be instantiated: ${err instanceof Error ? err.message : String(err)}`);
  }
  const exports = instance.exports;
  const memory = (given ?? exports.memory) as WebAssembly.Memory;
  const fuel = exports[FUEL_EXPORT];
  const lastGrow = exports[GROW_EXPORT];
  if (!(fuel instanceof WebAssembly.Global) || !(lastGrow instanceof WebAssembly.Global) || !(memory instanceof WebAssembly.Memory)) {
    return refuse('INTERNAL', 'The compiled module is not instrumented; compile it through the module cache (prepareAgentModule).');
  }
  const fuelLimit = BigInt(limits.fuel);
  fuel.value = fuelLimit;

  let exitCode: number;
  let fault: unknown = null;
  options.onStart?.(wallClock() - requestedAt);
  try {
    exitCode = wasi.start(instance as { exports: { memory: WebAssembly.Memory; _start: () => unknown } });
  } catch (err) {
    exitCode = -1;
    fault = err;
  }
  const durationMs = performance.now() - t0;
  const remaining = fuel.value as bigint;
  const fuelUsed = Number(remaining < 0n ? fuelLimit : fuelLimit - remaining);
  const stderrText = stderr.text();
  const memoryBytes = memory.buffer.byteLength;
  const fail = (code: ErrorCode, message: string, details?: Record<string, unknown>): AgentRunOutcome => {
    const error: ErrorInfo = serializeError(new AppError(code, message, details));
    return { ok: false, error, stderr: stderrText, fuelUsed, durationMs, memoryBytes };
  };

  if (fault !== null) {
    if (fault instanceof AppError) return { ok: false, error: serializeError(fault), stderr: stderrText, fuelUsed, durationMs, memoryBytes };
    if (remaining < 0n) {
      return fail('AGENT_FUEL_EXHAUSTED', `The agent used all ${limits.fuel} units of fuel; raise limits.fuel or give it less work.`, { fuel: limits.fuel });
    }
    const message = fault instanceof Error ? fault.message : String(fault);
    if (isHostOutOfMemory(fault)) return { ...hostExhausted('grow the agent\'s memory', fault, { stage: 'run' }), stderr: stderrText, fuelUsed, durationMs, memoryBytes };
    if (fault instanceof WebAssembly.RuntimeError) {
      const atCap = memoryBytes >= capPages * WASM_PAGE_BYTES;
      const refused = lastGrow.value === -1 && !atCap ? hostRefusedGrowth(memory, capPages) : null;
      if (refused !== null) {
        return { ...hostExhausted('grow the agent\'s memory below its cap', refused, { stage: 'grow' }), stderr: stderrText, fuelUsed, durationMs, memoryBytes };
      }
      if (lastGrow.value === -1 || atCap) {
        return fail(
          'AGENT_MEMORY_LIMIT',
          `The agent trapped (${message}) after ${atCap ? 'reaching its memory cap' : 'a refused memory.grow'} of ${limits.memoryMB} MiB; raise limits.memoryMB or make it use less.`,
          { memoryBytes, capBytes: capPages * WASM_PAGE_BYTES },
        );
      }
    }
    return fail('AGENT_TRAP', `The agent trapped: ${message}`, { trap: message, stderrTail: stderrText.slice(-STDERR_TAIL) });
  }

  if (exitCode !== 0) {
    const refused = lastGrow.value === -1 ? hostRefusedGrowth(memory, capPages) : null;
    if (refused !== null) {
      return { ...hostExhausted('grow the agent\'s memory below its cap', refused, { stage: 'grow' }), stderr: stderrText, fuelUsed, durationMs, memoryBytes };
    }
    return fail('AGENT_EXIT_NONZERO', `The agent exited with code ${exitCode}; its stderr tail says why.`, {
      exitCode,
      stderrTail: stderrText.slice(-STDERR_TAIL),
    });
  }
  const text = new TextDecoder('utf-8', { fatal: false }).decode(stdout.contents());
  let output: unknown;
  try {
    output = JSON.parse(text);
  } catch {
    return fail('AGENT_BAD_OUTPUT', 'The agent exited 0 but its stdout is not one JSON value; print exactly one JSON document.', {
      stdoutHead: text.slice(0, 200),
    });
  }
  return {
    ok: true,
    result: { exitCode: 0, output, stderr: stderrText, fuelUsed, durationMs, memoryBytes: memory.buffer.byteLength },
  };
}
