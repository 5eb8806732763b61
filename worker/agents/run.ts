/**
 * The same-thread agent runtime: one WASI run of a compiled, instrumented
 * module. Used inside each pooled worker and directly by Node tests.
 * Never throws for agent faults: every ending maps to an AgentRunOutcome.
 */
import { File, OpenFile, WASIProcExit, type PreopenDirectory } from '@bjorn3/browser_wasi_shim';
import {
  AGENT_IO_LIMITS,
  AppError,
  FUEL_EXPORT,
  GROW_EXPORT,
  HOST_MEMORY_MODULE,
  HOST_MEMORY_NAME,
  MODEL_MODULE,
  WASM_PAGE_BYTES,
  bytesToBase64,
  isCleanText,
  serializeError,
  type AgentResult,
  type CapturedStream,
  type ErrorCode,
  type ErrorInfo,
  type HostMemoryDescriptor,
} from '../../shared';
import { createMemory, isHostOutOfMemory, type HostMemories } from './memories';
import { importsModel, jspi, modelImports, type ModelImportState } from './model-import';
import { CappedOutput } from './output';
import { AgentWasi, collectFiles, mountTree, type MountOptions } from './wasi';
import type { AgentRunOutcome, AgentRunRequest, ModelBridge } from './types';

const STDERR_TAIL = 2048;
const lossy = new TextDecoder('utf-8', { fatal: false });
const strict = new TextDecoder('utf-8', { fatal: true });

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
  /** How a module importing agent_model reaches the node's model. */
  model?: ModelBridge;
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

/** Args, argv0 and env as the agent gets them: any UTF-8 without NUL (names without `=`). */
function checkArgs(req: AgentRunRequest): AgentRunOutcome | null {
  const bad = (what: string, value: string): AgentRunOutcome =>
    refuse('AGENT_BAD_ARGS', `${what} ${JSON.stringify(value.slice(0, 40))} holds NUL or text that is not UTF-8; pass bytes through stdin or a mount.`, { what });
  if (!isCleanText(req.agentName)) return bad('The agent name', req.agentName);
  if (!isCleanText(req.taskId)) return bad('The task id', req.taskId);
  if (req.argv0 !== undefined && !isCleanText(req.argv0)) return bad('argv0', req.argv0);
  for (const a of req.args) if (!isCleanText(a)) return bad('An argument', a);
  for (const [k, v] of Object.entries(req.env)) {
    if (k === '' || k.includes('=') || !isCleanText(k)) return refuse('AGENT_BAD_ARGS', `The env name ${JSON.stringify(k.slice(0, 40))} must be non-empty, without = or NUL.`);
    if (!isCleanText(v)) return bad(`The env value of ${k}`, v);
  }
  return null;
}

interface Preopens {
  fds: PreopenDirectory[];
  mounts: MountOptions[];
  /** Writable mounts, guest path → preopen, for the files coming back. */
  writable: [string, PreopenDirectory][];
}

/** `/input` (the files shorthand; always there when the request has no mounts), then the mounts in order. */
function preopens(req: AgentRunRequest): Preopens {
  const out: Preopens = { fds: [], mounts: [], writable: [] };
  const add = (path: string, files: Record<string, Uint8Array>, writable: boolean, maxBytes?: number): void => {
    const pre = mountTree(path, files, !writable);
    out.fds.push(pre);
    out.mounts.push({ root: pre.dir, readonly: !writable, maxBytes });
    if (writable) out.writable.push([path, pre]);
  };
  if (!req.mounts || Object.keys(req.files).length > 0) add('/input', req.files, false);
  for (const m of req.mounts ?? []) add(m.path, m.files, m.writable === true, m.writable ? (m.maxBytes ?? AGENT_IO_LIMITS.defaultMountBytes) : undefined);
  return out;
}

/** stdout or stderr as a failed attempt keeps it. */
function captured(out: CappedOutput, base64: boolean): CapturedStream {
  const all = out.contents();
  const keep = all.byteLength > AGENT_IO_LIMITS.maxFailureStreamBytes ? all.subarray(0, AGENT_IO_LIMITS.maxFailureStreamBytes) : all;
  const truncated = out.overflowed || keep.byteLength < all.byteLength;
  return base64 ? { base64: bytesToBase64(keep), bytes: out.bytes, truncated } : { text: lossy.decode(keep), bytes: out.bytes, truncated };
}

type ResultFiles = NonNullable<AgentResult['files']>;

/** The writable mounts' files (UTF-8 without NUL as text, else base64), bounded; AGENT_OUTPUT_TOO_LARGE past AGENT_IO_LIMITS.maxResultFileBytes. */
function filesBack(writable: [string, PreopenDirectory][]): { files: ResultFiles } | { over: number } {
  const files: ResultFiles = {};
  let total = 0;
  for (const [path, pre] of writable) {
    const mount: ResultFiles[string] = {};
    for (const [rel, data] of collectFiles(pre.dir)) {
      total += data.byteLength;
      if (total > AGENT_IO_LIMITS.maxResultFileBytes) return { over: total };
      // Text when it is UTF-8 without NUL bytes; anything else (binary) as base64.
      let text: string | null = null;
      if (!data.includes(0)) {
        try {
          text = strict.decode(data);
        } catch {
          text = null;
        }
      }
      mount[rel] = text !== null ? { text } : { base64: bytesToBase64(data) };
    }
    files[path] = mount;
  }
  return { files };
}

/**
 * Runs one agent to its end in this thread. A module importing agent_model runs suspendable (JSPI), and its
 * outcome comes as a promise; any other runs to its end before this returns.
 */
export function runAgent(compiled: WebAssembly.Module, req: AgentRunRequest, options: RunOptions = {}): AgentRunOutcome | Promise<AgentRunOutcome> {
  if (!importsModel(compiled, MODEL_MODULE)) return runAgentInThread(compiled, req, options);
  if (!jspi()) {
    return refuse('AGENT_JSPI_UNSUPPORTED', 'The agent imports agent_model, and this node has no JavaScript Promise Integration (WebAssembly.Suspending) to suspend it while the model works; the task goes to a node that has it.');
  }
  return runPrepared(compiled, req, options, true);
}

/** Runs one agent to its end in this thread (a module that imports nothing but WASI). */
export function runAgentInThread(compiled: WebAssembly.Module, req: AgentRunRequest, options: RunOptions = {}): AgentRunOutcome {
  return runPrepared(compiled, req, options, false) as AgentRunOutcome;
}

/** Sets a run up and runs it (`suspendable`: through JSPI, the outcome a promise). */
function runPrepared(compiled: WebAssembly.Module, req: AgentRunRequest, options: RunOptions, suspendable: boolean): AgentRunOutcome | Promise<AgentRunOutcome> {
  const requestedAt = options.requestedAt ?? wallClock();
  const badArgs = checkArgs(req);
  if (badArgs) return badArgs;

  const { limits } = req;
  const capPages = options.capPages ?? Math.floor((limits.memoryMB * 1024 * 1024) / WASM_PAGE_BYTES);
  const stdout = new CappedOutput('stdout', limits.maxStdoutBytes);
  const stderr = new CappedOutput('stderr', limits.maxStderrBytes);
  const given = Object.entries(req.env).map(([k, v]) => `${k}=${v}`);
  const env = req.injectEnv === false ? given : [`AGENT_TASK_ID=${req.taskId}`, `AGENT_NAME=${req.agentName}`, ...given];
  const pre = preopens(req);
  const deadline = wallClock() + limits.timeoutMs;
  const wasi = new AgentWasi([req.argv0 ?? req.agentName, ...req.args], env, [new OpenFile(new File(req.stdin, { readonly: true })), stdout, stderr, ...pre.fds], {
    deadline,
    mounts: pre.mounts,
    entryBytes: AGENT_IO_LIMITS.mountEntryBytes,
  });

  const t0 = performance.now();
  const imports: WebAssembly.Imports = { wasi_snapshot_preview1: wasi.wasiImport as WebAssembly.ModuleImports };
  const hostMemory = options.memory ?? null;
  let hostGiven: WebAssembly.Memory | null = null;
  if (hostMemory) {
    try {
      hostGiven = options.memories ? options.memories.take(options.memoryKey ?? '', hostMemory) : createMemory(hostMemory);
    } catch (err) {
      if (isHostOutOfMemory(err)) return hostExhausted('reserve Wasm memory for the agent', err, { stage: 'memory' });
      return refuse('AGENT_TRAP', `The agent's memory could not be created: ${err instanceof Error ? err.message : String(err)}`);
    }
    imports[HOST_MEMORY_MODULE] = { [HOST_MEMORY_NAME]: hostGiven };
  }
  const giveBack = (): void => {
    if (hostGiven && hostMemory && options.memories) options.memories.give(options.memoryKey ?? '', hostMemory, hostGiven);
  };
  let model: ModelImportState | null = null;
  let instanceMemory: WebAssembly.Memory | null = hostGiven;
  if (suspendable) {
    model = modelImports(jspi()!, options.model, {
      deadline,
      maxCalls: req.modelCalls ?? AGENT_IO_LIMITS.defaultModelCalls,
      memory: () => instanceMemory!,
      now: wallClock,
    });
    imports[MODEL_MODULE] = model.imports;
  }
  const run: Run = { req, imports, given: hostGiven, capPages, stdout, stderr, wasi, pre, t0, requestedAt, options, model, setMemory: (m) => (instanceMemory = m) };
  // An async function: whatever it meets comes as its promise's outcome, so the memory goes back when that settles.
  if (suspendable) return runSuspendable(compiled, run).finally(giveBack);
  try {
    return runInstance(compiled, run);
  } finally {
    giveBack();
  }
}

/** One run's parts, from its set-up to its outcome. */
interface Run {
  req: AgentRunRequest;
  imports: WebAssembly.Imports;
  given: WebAssembly.Memory | null;
  capPages: number;
  stdout: CappedOutput;
  stderr: CappedOutput;
  wasi: AgentWasi;
  pre: Preopens;
  t0: number;
  requestedAt: number;
  options: RunOptions;
  /** The agent_model imports of a suspendable run. */
  model: ModelImportState | null;
  /** Tells the model imports which memory the instance uses. */
  setMemory(memory: WebAssembly.Memory): void;
}

type Started = { instance: WebAssembly.Instance; memory: WebAssembly.Memory; fuel: WebAssembly.Global; lastGrow: WebAssembly.Global; fuelLimit: bigint };

/** Instantiates the module and sets its fuel; an outcome when it cannot start. */
function instantiate(compiled: WebAssembly.Module, r: Run): Started | AgentRunOutcome {
  let instance: WebAssembly.Instance;
  try {
    instance = new WebAssembly.Instance(compiled, r.imports);
  } catch (err) {
    if (isHostOutOfMemory(err)) return hostExhausted('allocate Wasm memory for the agent', err, { stage: 'instantiate' });
    return refuse('AGENT_TRAP', `The agent could not be instantiated: ${err instanceof Error ? err.message : String(err)}`);
  }
  const exports = instance.exports;
  const memory = (r.given ?? exports.memory) as WebAssembly.Memory;
  const fuel = exports[FUEL_EXPORT];
  const lastGrow = exports[GROW_EXPORT];
  if (!(fuel instanceof WebAssembly.Global) || !(lastGrow instanceof WebAssembly.Global) || !(memory instanceof WebAssembly.Memory)) {
    return refuse('INTERNAL', 'The compiled module is not instrumented; compile it through the module cache (prepareAgentModule).');
  }
  r.setMemory(memory);
  const fuelLimit = BigInt(r.req.limits.fuel);
  fuel.value = fuelLimit;
  return { instance, memory, fuel, lastGrow, fuelLimit };
}

function runInstance(compiled: WebAssembly.Module, r: Run): AgentRunOutcome {
  const s = instantiate(compiled, r);
  if (!('instance' in s)) return s;
  let exitCode: number;
  let fault: unknown = null;
  r.options.onStart?.(wallClock() - r.requestedAt);
  try {
    exitCode = r.wasi.start(s.instance as { exports: { memory: WebAssembly.Memory; _start: () => unknown } });
  } catch (err) {
    exitCode = -1;
    fault = err;
  }
  return conclude(r, s, exitCode, fault);
}

/** runInstance for a module importing agent_model: `_start` through WebAssembly.promising, suspended in each model call. */
async function runSuspendable(compiled: WebAssembly.Module, r: Run): Promise<AgentRunOutcome> {
  const s = instantiate(compiled, r);
  if (!('instance' in s)) return s;
  const start = jspi()!.promising(s.instance.exports._start as () => unknown);
  // The shim's functions read the memory through `inst` (its own start() sets it).
  (r.wasi as unknown as { inst: { exports: { memory: WebAssembly.Memory } } }).inst = { exports: { memory: s.memory } };
  let exitCode = 0;
  let fault: unknown = null;
  r.options.onStart?.(wallClock() - r.requestedAt);
  try {
    await start();
  } catch (err) {
    if (err instanceof WASIProcExit) exitCode = err.code;
    else {
      exitCode = -1;
      fault = err;
    }
  }
  return conclude(r, s, exitCode, fault);
}

/** The outcome of a run that started: its exit, fault, fuel, output and files. */
function conclude(r: Run, s: Started, exitCode: number, fault: unknown): AgentRunOutcome {
  const { req, stdout, stderr, pre, capPages, t0, wasi } = r;
  const { memory, fuel, lastGrow, fuelLimit } = s;
  const { limits } = req;
  const durationMs = performance.now() - t0;
  const remaining = fuel.value as bigint;
  const fuelUsed = Number(remaining < 0n ? fuelLimit : fuelLimit - remaining);
  const stderrText = stderr.text();
  const memoryBytes = memory.buffer.byteLength;
  // A failed attempt keeps what the agent wrote (capped) and its writable mounts' files when they fit.
  const kept = (details: Record<string, unknown> = {}): Record<string, unknown> => {
    const out: Record<string, unknown> = { ...details, stdout: captured(stdout, req.stdout === 'base64'), stderr: captured(stderr, false) };
    if (r.model) out.model = r.model.stats;
    if (pre.writable.length > 0) {
      const back = filesBack(pre.writable);
      if ('files' in back) out.files = back.files;
    }
    return out;
  };
  const fail = (code: ErrorCode, message: string, details?: Record<string, unknown>): AgentRunOutcome => {
    const error: ErrorInfo = serializeError(new AppError(code, message, kept(details)));
    return { ok: false, error, stderr: stderrText, fuelUsed, durationMs, memoryBytes };
  };
  const full = wasi.fullMount;
  const mountFull = (details: Record<string, unknown>): AgentRunOutcome | null => {
    if (!full) return null;
    const path = pre.writable.find(([, p]) => p.dir === full.root)?.[0] ?? null;
    return fail('AGENT_MOUNT_FULL', `The agent failed after the writable mount ${path} refused a write past its ${full.max} bytes (NOSPC); raise its maxBytes or write less.`, {
      ...details, mount: path, maxBytes: full.max,
    });
  };

  if (fault !== null) {
    if (fault instanceof AppError) {
      const info = serializeError(fault);
      info.details = kept(info.details);
      return { ok: false, error: info, stderr: stderrText, fuelUsed, durationMs, memoryBytes };
    }
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
    return mountFull({ trap: message }) ?? fail('AGENT_TRAP', `The agent trapped: ${message}`, { trap: message, stderrTail: stderrText.slice(-STDERR_TAIL) });
  }

  if (exitCode !== 0 && !req.okExitCodes?.includes(exitCode)) {
    const refused = lastGrow.value === -1 ? hostRefusedGrowth(memory, capPages) : null;
    if (refused !== null) {
      return { ...hostExhausted('grow the agent\'s memory below its cap', refused, { stage: 'grow' }), stderr: stderrText, fuelUsed, durationMs, memoryBytes };
    }
    const details = { exitCode, stderrTail: stderrText.slice(-STDERR_TAIL) };
    // An agent that gives up after the model refused its call fails with the model's code (PROMPT_TOO_LONG, say).
    const refusedCall = r.model?.lastError() ?? null;
    if (refusedCall) {
      return fail(refusedCall.code as ErrorCode, `The agent exited with code ${exitCode} after the model refused its call: ${refusedCall.message}`, {
        ...details, modelError: { code: refusedCall.code, message: refusedCall.message },
      });
    }
    return mountFull(details) ?? fail('AGENT_EXIT_NONZERO', `The agent exited with code ${exitCode}; its stderr tail says why (list the code in okExitCodes if it means success).`, details);
  }
  let output: unknown;
  if (req.stdout === 'text') output = lossy.decode(stdout.contents());
  else if (req.stdout === 'base64') output = bytesToBase64(stdout.contents());
  else {
    const text = lossy.decode(stdout.contents());
    try {
      output = JSON.parse(text);
    } catch {
      return fail('AGENT_BAD_OUTPUT', `The agent exited ${exitCode} but its stdout is not one JSON value; print exactly one JSON document, or ask for stdout "text" or "base64".`, {
        exitCode,
        stdoutHead: text.slice(0, 200),
      });
    }
  }
  const result: AgentResult = { exitCode, output, stderr: stderrText, fuelUsed, durationMs, memoryBytes: memory.buffer.byteLength };
  if (r.model) result.model = { ...r.model.stats };
  if (pre.writable.length > 0) {
    const back = filesBack(pre.writable);
    if ('over' in back) {
      return fail('AGENT_OUTPUT_TOO_LARGE', `The writable mounts hold more than ${AGENT_IO_LIMITS.maxResultFileBytes} bytes of files at exit, more than a result carries back; write less.`, {
        exitCode, bytes: back.over, limit: AGENT_IO_LIMITS.maxResultFileBytes,
      });
    }
    result.files = back.files;
  }
  return { ok: true, result };
}
