/** Limits every side agrees on. The coordinator enforces them; nodes rely on them. */
export const LIMITS = {
  /** Largest JSON request body the HTTP API reads. */
  maxBodyBytes: 1 << 20,
  /** Most tasks in one `POST /v1/tasks` batch. */
  maxBatch: 1000,
  /** Largest agent module accepted by the registry. */
  maxWasmBytes: 64 << 20,
  /** Largest blob (`POST /v1/blobs`, input by reference in an agent mount), measured while it streams. */
  maxBlobBytes: 256 << 20,
  /** Largest training dataset (`POST /v1/datasets`, JSON lines) the coordinator stores. */
  maxDatasetBytes: 64 << 20,
  /** Largest agent input (stdin JSON plus files), in bytes. */
  maxAgentInputBytes: 256 << 10,
  /** Attempts a task gets unless it asks for fewer. */
  defaultMaxAttempts: 3,
  maxAttempts: 10,
  /** Retry backoff: base * 2^(attempt-1), capped, with full jitter. */
  retryBaseMs: 200,
  retryMaxMs: 30_000,
  /** A node must heartbeat within this; a lease lasts this long past the last heartbeat. */
  heartbeatIntervalMs: 2_000,
  leaseMs: 10_000,
  /** Largest WebSocket message either side sends. */
  maxSocketMessageBytes: 8 << 20,
  /** Most bytes of result files (task.part) one lease may send: the largest adapter the registry takes. */
  maxResultPartsBytes: 64 << 20,
} as const;

/** Quotas of one agent run. */
export interface AgentLimits {
  /** Cap on linear memory, MiB (written into the module's memory section). */
  memoryMB: number;
  /** Deterministic fuel: one unit per loop iteration and per entry to a function that calls others (leaf functions are free: they cannot run forever on their own). */
  fuel: number;
  /** Wall-clock deadline; the worker is terminated and replaced past it. */
  timeoutMs: number;
  maxStdoutBytes: number;
  maxStderrBytes: number;
}

export const DEFAULT_AGENT_LIMITS: AgentLimits = {
  memoryMB: 16,
  fuel: 200_000_000,
  timeoutMs: 5_000,
  maxStdoutBytes: 1 << 20,
  maxStderrBytes: 64 << 10,
};

/** Upper bounds a caller may ask for (Layer 8 may set lower ones per tenant). */
export const MAX_AGENT_LIMITS: AgentLimits = {
  memoryMB: 1024,
  fuel: 100_000_000_000,
  timeoutMs: 600_000,
  maxStdoutBytes: 16 << 20,
  maxStderrBytes: 1 << 20,
};
