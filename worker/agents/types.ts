/**
 * The contract of the agent runtime, shared by its same-thread implementation
 * (tests, Node) and the pooled Web Worker one (the page).
 */
import type { AgentLimits, AgentResult, ErrorInfo, StdoutMode } from '../../shared';

/** A preopened directory for one run: its tree as bytes (blobs already fetched). */
export interface AgentMount {
  /** Guest path, absolute (`/` too); checked by checkAgentPayload. */
  path: string;
  /** Relative path (directories made as needed) → bytes. */
  files: Record<string, Uint8Array>;
  /** Read-only unless true: creates, writes, removals and renames in it answer ROFS. */
  writable?: boolean;
  /** A writable mount's cap on its bytes (files plus AGENT_IO_LIMITS.mountEntryBytes per entry): NOSPC past it. */
  maxBytes?: number;
}

export interface AgentRunRequest {
  /** Carried into env as AGENT_TASK_ID; used by `stop(taskId)`. */
  taskId: string;
  agentName: string;
  /** SHA-256 (hex) of the module bytes as uploaded. */
  moduleHash: string;
  /** Written to stdin: the task's `input` as JSON text, or its `stdin` bytes. */
  stdin: Uint8Array;
  /** argv after argv[0]. Any UTF-8 without NUL (AGENT_BAD_ARGS otherwise). */
  args: string[];
  /** argv[0]; default agentName. */
  argv0?: string;
  /** Given env. Values any UTF-8 without NUL; names without `=`. */
  env: Record<string, string>;
  /** false: exactly `env`; otherwise AGENT_TASK_ID and AGENT_NAME come first. */
  injectEnv?: boolean;
  /** Files in the read-only preopened directory `/input`, name → bytes (the payload's `files`). */
  files: Record<string, Uint8Array>;
  /**
   * Preopens after `/input`, fds in this order. Absent: `/input` alone, even empty (today's
   * behaviour); present: `/input` only when `files` has any.
   */
  mounts?: AgentMount[];
  /** How stdout becomes `output` (default json). */
  stdout?: StdoutMode;
  /** Exit codes besides 0 that count as success. */
  okExitCodes?: readonly number[];
  limits: AgentLimits;
  /** Most agent_model.generate calls (default AGENT_IO_LIMITS.defaultModelCalls); only for modules importing agent_model. */
  modelCalls?: number;
}

/** One agent_model.generate call, as the agent's worker asks it of the node. */
export interface ModelCall {
  prompt: string;
  maxTokens: number;
}

export type ModelAnswer = { ok: true; text: string; promptTokens: number; completionTokens: number } | { ok: false; error: ErrorInfo };

/**
 * How a run reaches the node's model: given to AgentRuntime.run for a task that names one (the pool hands it to
 * the worker through a comlink proxy). Answers AGENT_TIMEOUT once the run's deadline passed.
 */
export interface ModelBridge {
  generate(call: ModelCall): Promise<ModelAnswer>;
}

export type AgentRunOutcome =
  | { ok: true; result: AgentResult }
  | {
      ok: false;
      error: ErrorInfo;
      stderr?: string;
      fuelUsed?: number;
      durationMs?: number;
      /** The agent's memory when it ended (where it got to run). */
      memoryBytes?: number;
    };

/** Lifecycle events the runtime emits; integration code subscribes with `on`. */
export type AgentEvent =
  | { type: 'spawn'; taskId: string; agentName: string; workerId: number; warm: boolean; spawnMs: number }
  | { type: 'exit'; taskId: string; agentName: string; workerId: number; outcome: AgentRunOutcome }
  | { type: 'stop'; taskId: string; workerId: number; reason: string }
  | { type: 'replace'; workerId: number; reason: string }
  | { type: 'worker.start'; workerId: number; startMs: number };

export interface AgentRuntimeStats {
  workers: number;
  idle: number;
  running: number;
  queued: number;
  /** Compiled module variants (hash × memory cap) the runtime holds. */
  compiledModules: number;
  /** Bytes of module code held, as the runtime's byte bound counts them. */
  moduleBytes: number;
  /** Modules dropped as least recently used since the runtime started. */
  evictedModules: number;
  /** Workers terminated and replaced to give Wasm memory or address space back. */
  recycledWorkers: number;
  /** Runs tried again on a fresh worker after NODE_RESOURCE_EXHAUSTED. */
  resourceRetries: number;
  spawnP50Ms: number;
  spawnP99Ms: number;
  /** Median linear memory of the latest runs (0 before any). */
  agentMemoryBytes: number;
}

export interface AgentRuntime {
  /**
   * Runs one agent; never throws for agent faults: they come back as `{ ok: false }`. `model`: how a module
   * importing agent_model reaches the node's model (without it its calls fail).
   */
  run(req: AgentRunRequest, model?: ModelBridge): Promise<AgentRunOutcome>;
  /** Stops a running agent (its worker is terminated and replaced). */
  stop(taskId: string, reason?: string): boolean;
  /**
   * Whether the module for this hash is held. It turns false again when the module is
   * evicted (least recently used past the runtime's bounds); add it again then.
   */
  hasModule(hash: string): boolean;
  /** Hands the runtime a module's bytes (verified against the hash). */
  addModule(hash: string, bytes: Uint8Array): Promise<void>;
  on(listener: (e: AgentEvent) => void): () => void;
  stats(): AgentRuntimeStats;
  close(): Promise<void>;
}
