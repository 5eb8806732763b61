/**
 * Every error the project reports carries a stable code from this table. The
 * HTTP status is what the coordinator answers with when the error reaches an
 * API caller; `retryable` tells the scheduler whether another attempt can help.
 *
 * Add codes here, never inline strings elsewhere. `errors.test.ts` keeps this
 * table, the README's error table and the `ErrorCode` type in step.
 */
export const ERRORS = {
  // Requests (HTTP API)
  BAD_JSON: { status: 400, retryable: false, message: 'The request body is not valid JSON.' },
  SCHEMA_VIOLATION: { status: 400, retryable: false, message: 'The request does not match the schema.' },
  BODY_TOO_LARGE: { status: 413, retryable: false, message: 'The request body is larger than the limit.' },
  BATCH_TOO_LARGE: { status: 413, retryable: false, message: 'The batch holds more tasks than the limit.' },
  UNSUPPORTED_MEDIA_TYPE: { status: 415, retryable: false, message: 'The content type is not accepted here.' },
  WEBHOOK_URL_REFUSED: { status: 400, retryable: false, message: 'The webhook URL is not https, or its host is loopback, private or otherwise not public, and not allowed.' },
  CROSS_SITE_REFUSED: { status: 403, retryable: false, message: 'A state-changing request from another site (Origin or Sec-Fetch-Site) that is not allowed.' },
  NOT_FOUND: { status: 404, retryable: false, message: 'No such resource.' },
  TASK_NOT_FOUND: { status: 404, retryable: false, message: 'No task has this id.' },
  IDEMPOTENCY_CONFLICT: { status: 409, retryable: false, message: 'This idempotency key was used for a different task.' },
  INVALID_ID: { status: 400, retryable: false, message: 'The id is not well formed.' },
  TASK_NOT_TERMINAL: { status: 409, retryable: false, message: 'The task has not ended yet.' },
  NODE_NOT_FOUND: { status: 404, retryable: false, message: 'No connected node has this id.' },
  RATE_LIMITED: { status: 429, retryable: true, message: 'Too many requests; retry later.' },
  SHUTTING_DOWN: { status: 503, retryable: true, message: 'The coordinator is shutting down; retry on another.' },
  STORE_UNAVAILABLE: { status: 503, retryable: true, message: 'The journal\'s database (PostgreSQL) cannot be reached; nothing was accepted or changed, retry shortly.' },
  JSON_TOO_DEEP: { status: 400, retryable: false, message: 'The JSON body nests objects and arrays deeper than the limit (128).' },
  JSON_STRING_TOO_LONG: { status: 400, retryable: false, message: 'A string or key in the JSON body is longer than the limit.' },
  JSON_TOO_MANY_ITEMS: { status: 400, retryable: false, message: 'An object in the JSON body has more keys, or an array more elements, than the limit.' },
  JSON_NUMBER_OUT_OF_RANGE: { status: 400, retryable: false, message: 'A number in the JSON body is not finite as a double (such as 1e309); send it as a string.' },
  JSON_FORBIDDEN_KEY: { status: 400, retryable: false, message: 'The JSON body holds a key that is not accepted (__proto__).' },
  URI_TOO_LONG: { status: 414, retryable: false, message: 'The request target or one of its path segments is longer than the limit.' },
  HEADERS_TOO_LARGE: { status: 431, retryable: false, message: 'The request headers are larger than the limit (16 KiB).' },
  MALFORMED_REQUEST: { status: 400, retryable: false, message: 'The request is not well-formed HTTP/1.1 (request line, headers or framing).' },
  REQUEST_ABORTED: { status: 400, retryable: false, message: 'The client closed the connection before the request body was complete.' },
  REQUEST_TIMEOUT: { status: 408, retryable: true, message: 'The request was not received in time.' },
  UNAUTHORIZED: { status: 401, retryable: false, message: 'No bearer token, or not a known one; send authorization: Bearer <token>.' },
  FORBIDDEN: { status: 403, retryable: false, message: 'The token lacks the role (or the tenant) this request needs.' },

  // Agent registry
  AGENT_NOT_FOUND: { status: 404, retryable: false, message: 'No agent has this name.' },
  AGENT_VERSION_NOT_FOUND: { status: 404, retryable: false, message: 'The agent has no such version.' },
  AGENT_VERSION_EXISTS: { status: 409, retryable: false, message: 'This agent version exists with different content.' },
  WASM_INVALID: { status: 422, retryable: false, message: 'The file is not a valid WebAssembly module.' },
  WASM_FORBIDDEN_IMPORT: { status: 422, retryable: false, message: 'The module imports something other than wasi_snapshot_preview1 (and agent_model, where its version declares it), or agent_model with the wrong name or type.' },
  WASM_MISSING_EXPORT: { status: 422, retryable: false, message: 'The module must export _start and memory.' },
  WASM_TOO_LARGE: { status: 413, retryable: false, message: 'The module is larger than the limit.' },

  // Agent runs
  AGENT_TRAP: { status: 500, retryable: false, message: 'The agent trapped.' },
  AGENT_EXIT_NONZERO: { status: 500, retryable: false, message: 'The agent exited with a non-zero code.' },
  AGENT_FUEL_EXHAUSTED: { status: 500, retryable: false, message: 'The agent ran out of fuel.' },
  AGENT_MEMORY_LIMIT: { status: 500, retryable: false, message: 'The agent hit its memory limit.' },
  AGENT_TIMEOUT: { status: 504, retryable: false, message: 'The agent ran past its wall-clock deadline.' },
  AGENT_OUTPUT_LIMIT: { status: 500, retryable: false, message: 'The agent wrote more output than its cap.' },
  AGENT_BAD_OUTPUT: { status: 500, retryable: false, message: 'The agent did not write one JSON value on stdout.' },
  AGENT_BAD_ARGS: { status: 400, retryable: false, message: 'Agent args, argv0 and env values must be UTF-8 without NUL (env names: letters, digits, _).' },
  AGENT_PAYLOAD_INVALID: { status: 400, retryable: false, message: 'The agent payload combines fields that do not go together (stdin with input, maxBytes on a read-only mount).' },
  MOUNT_PATH_INVALID: { status: 400, retryable: false, message: 'A mount path is not absolute and clean, or a file path in a mount is absolute, has ./../empty segments, or is both a file and a directory.' },
  MOUNT_OVERLAP: { status: 400, retryable: false, message: 'Two mounts have the same path or one lies inside the other (the files shorthand is a mount at /input).' },
  INVALID_BASE64: { status: 400, retryable: false, message: 'A base64 field is not base64 (RFC 4648, standard alphabet, padded).' },
  AGENT_INPUT_TOO_LARGE: { status: 413, retryable: false, message: 'The inline input (input, stdin, files, mounts) is over its limit; upload large inputs once as blobs (POST /v1/blobs) and name them in a mount.' },
  AGENT_MOUNT_FULL: { status: 500, retryable: false, message: 'The agent failed after a writable mount refused a write past its maxBytes (NOSPC); raise the mount\'s maxBytes or write less.' },
  AGENT_OUTPUT_TOO_LARGE: { status: 500, retryable: false, message: 'The writable mounts held more bytes at exit than a result carries back; write less, or fewer files.' },
  AGENT_JSPI_UNSUPPORTED: {
    status: 503,
    retryable: true,
    message: 'The agent imports agent_model and this node has no JavaScript Promise Integration (WebAssembly.Suspending) to suspend it while the model works; the task goes to a node that has it.',
  },
  AGENT_MODEL_CALL_INVALID: { status: 400, retryable: false, message: 'The agent called agent_model.generate with pointers outside its memory, a prompt that is not UTF-8, or max_tokens out of range.' },
  AGENT_MODEL_CALLS_EXHAUSTED: { status: 429, retryable: false, message: "The agent made more model calls than its payload's modelCalls allow." },
  AGENT_STOPPED: { status: 500, retryable: true, message: 'The agent was stopped before it finished.' },
  WORKER_CRASHED: { status: 500, retryable: true, message: 'The worker running the task died.' },
  AGENT_MODULE_MISSING: { status: 500, retryable: true, message: 'The node has not loaded this agent module; hand it to the runtime (addModule) first.' },
  NODE_RESOURCE_EXHAUSTED: {
    status: 503,
    retryable: true,
    message: 'The node ran out of a resource (Wasm memory or address space) it needed to run the agent; the task goes to another worker or node. Not the agent\'s fault.',
  },
  WASM_HASH_MISMATCH: { status: 422, retryable: false, message: 'The module bytes do not match their SHA-256; fetch the module again.' },
  WASM_COMPILE_OUT_OF_MEMORY: { status: 507, retryable: true, message: 'The node ran out of memory compiling the module; the task goes to another node.' },

  // Scheduling and nodes
  NO_CAPABLE_NODE: { status: 503, retryable: true, message: 'No connected node can run this task.' },
  LEASE_EXPIRED: { status: 500, retryable: true, message: 'The node did not finish the task within its lease.' },
  NODE_LOST: { status: 500, retryable: true, message: 'The node running the task disconnected.' },
  DEADLINE_EXCEEDED: { status: 504, retryable: false, message: 'The task passed its deadline.' },
  CANCELLED: { status: 409, retryable: false, message: 'The task was cancelled.' },
  ATTEMPTS_EXHAUSTED: { status: 500, retryable: false, message: 'The task failed on every attempt.' },
  QUORUM_FAILED: { status: 502, retryable: false, message: "The task's replicas did not agree on an output (up to maxReplicas); every replica's output is in the task record." },
  PROTOCOL_ERROR: { status: 400, retryable: false, message: 'A message broke the node protocol.' },
  TASK_KIND_UNSUPPORTED: { status: 501, retryable: false, message: 'This node cannot run tasks of this kind.' },
  NODE_DRAINING: { status: 503, retryable: true, message: 'The node is draining and takes no new tasks; the task goes to another node.' },
  LEASE_NOT_HELD: { status: 409, retryable: false, message: 'This connection does not hold the lease it reported on; a node reports only on its own leases.' },
  RESULT_PARTS_INCOMPLETE: { status: 502, retryable: true, message: "A result named parts of a file (task.part) that did not all arrive on the lease's connection; the attempt runs again." },
  LEASE_STALLED: { status: 500, retryable: true, message: 'The node held the task without progress or a result for too long while it heartbeated; the task went back to the queue.' },
  ORIGIN_NOT_ALLOWED: { status: 403, retryable: false, message: "The page's Origin may not join as a node; serve the page from the coordinator or start it with --allow-origin ORIGIN." },

  // Models, weights, GPU
  MODEL_NOT_FOUND: { status: 404, retryable: false, message: 'No model folder has this name.' },
  MODEL_FILE_MISSING: { status: 422, retryable: false, message: 'A file the model needs is missing.' },
  MODEL_CORRUPT: { status: 422, retryable: false, message: 'A model file does not match its digest or format.' },
  MODEL_UNSUPPORTED: { status: 422, retryable: false, message: 'The model architecture or dtype is not supported.' },
  MODEL_TOO_LARGE: { status: 507, retryable: false, message: 'The model does not fit the device limits.' },
  SAFETENSORS_INVALID: { status: 422, retryable: false, message: 'The safetensors header does not match the file.' },
  DTYPE_UNSUPPORTED: { status: 422, retryable: false, message: 'The tensor dtype is not one the engine reads.' },
  SHAPE_MISMATCH: { status: 422, retryable: false, message: 'Tensor shapes do not agree.' },
  ADAPTER_MISMATCH: { status: 422, retryable: false, message: 'The adapter was made for another base model.' },
  ADAPTER_INVALID: { status: 422, retryable: false, message: 'The adapter files are not a valid PEFT LoRA adapter.' },
  DATASET_INVALID: { status: 422, retryable: false, message: 'A dataset line is not a conversation.' },
  DATASET_NOT_FOUND: { status: 404, retryable: false, message: 'The dataset file does not exist or cannot be read.' },
  BLOB_NOT_FOUND: { status: 404, retryable: false, message: 'No blob with this SHA-256 was uploaded (by this tenant); POST /v1/blobs uploads one.' },
  BLOB_TOO_LARGE: { status: 413, retryable: false, message: 'The blob is larger than the limit.' },
  DATASET_CORRUPT: { status: 502, retryable: true, message: 'The dataset bytes the node received do not match their SHA-256; they were not used.' },
  BLOB_CORRUPT: { status: 502, retryable: true, message: 'The blob bytes the node received do not match their SHA-256 (or their length); they were not used or cached.' },
  CHECKPOINT_NOT_FOUND: { status: 404, retryable: false, message: 'The task has no checkpoint: it is not a train task, or its node has not sent one yet.' },
  TRAINING_CHECKPOINT_INVALID: { status: 422, retryable: false, message: 'The training checkpoint is not one of this run (another model, settings or dataset), or its bytes are broken.' },
  TRAINING_DIVERGED: { status: 422, retryable: false, message: 'The training loss became NaN or infinite, or exploded far above where it began; lower the learning rate or clip the gradients (maxGradNorm).' },
  DATASET_NO_TARGETS: { status: 422, retryable: false, message: 'No assistant token is left to learn from (after templating, or within the sequence length); add assistant turns, raise the sequence length or use overflow "split".' },
  CHAT_TEMPLATE_MISSING: { status: 422, retryable: false, message: "The model's tokenizer has no chat template; name one (template: 'chatml' or a Jinja string)." },
  MODEL_CONFIG_INCONSISTENT: { status: 422, retryable: false, message: "config.json's model_type contradicts its architectures; fix config.json so both name the same model family." },
  LORA_SETTINGS_INVALID: { status: 422, retryable: false, message: 'The LoRA rank or a target module does not fit the model; the error lists what the model has.' },
  WEBGPU_UNAVAILABLE: {
    status: 503,
    retryable: false,
    message: 'No WebGPU adapter. In Chromium pass --enable-unsafe-webgpu; in Node set VK_ICD_FILENAMES to a Vulkan driver.',
  },
  GPU_DEVICE_LOST: { status: 503, retryable: true, message: 'The GPU device was lost; the engine reset itself.' },
  GPU_OUT_OF_MEMORY: { status: 507, retryable: true, message: 'The GPU ran out of memory.' },
  STORAGE_QUOTA: { status: 507, retryable: false, message: 'The weight store is over its budget.' },
  MODEL_DOWNLOAD_FAILED: { status: 502, retryable: true, message: 'The node could not fetch a model file from the coordinator.' },
  ADAPTER_NOT_FOUND: { status: 404, retryable: false, message: 'No adapter has this name for this model.' },
  PROMPT_TOO_LONG: { status: 400, retryable: false, message: "The prompt plus the tokens asked for do not fit the model's context." },
  RESPONSE_FORMAT_UNSUPPORTED: { status: 400, retryable: false, message: 'The response_format schema uses a JSON Schema feature that constrained decoding does not support.' },
  INFERENCE_FAILED: { status: 500, retryable: true, message: 'The inference backend failed while generating; the task is retried.' },

  // Tools (command-line)
  INVALID_ARGUMENT: { status: 400, retryable: false, message: 'A command-line option is missing or not valid.' },

  // Catch-all
  INTERNAL: { status: 500, retryable: true, message: 'An unexpected internal error.' },
} as const satisfies Record<string, { status: number; retryable: boolean; message: string }>;

export type ErrorCode = keyof typeof ERRORS;

export const ERROR_CODES = Object.keys(ERRORS) as ErrorCode[];

export function isErrorCode(value: unknown): value is ErrorCode {
  return typeof value === 'string' && Object.prototype.hasOwnProperty.call(ERRORS, value);
}

/** The form an error takes on the wire (HTTP bodies, socket messages, worker calls). */
export interface ErrorInfo {
  code: ErrorCode;
  name: string;
  message: string;
  stack?: string;
  details?: Record<string, unknown>;
}

/** The project's error: a stable code, a message that says what to do, optional details. */
export class AppError extends Error {
  readonly code: ErrorCode;
  readonly details: Record<string, unknown> | undefined;

  constructor(code: ErrorCode, message?: string, details?: Record<string, unknown>, options?: { cause?: unknown }) {
    super(message ?? ERRORS[code].message, options);
    this.name = 'AppError';
    this.code = code;
    this.details = details;
  }

  get status(): number {
    return ERRORS[this.code].status;
  }

  get retryable(): boolean {
    return ERRORS[this.code].retryable;
  }

  toJSON(): ErrorInfo {
    return serializeError(this);
  }
}

/** Turns any thrown value into the wire form; unknown errors become INTERNAL. */
export function serializeError(err: unknown, withStack = false): ErrorInfo {
  if (err instanceof AppError) {
    const info: ErrorInfo = { code: err.code, name: err.name, message: err.message };
    if (err.details) info.details = err.details;
    if (withStack && err.stack) info.stack = err.stack;
    return info;
  }
  if (err && typeof err === 'object' && 'code' in err && isErrorCode((err as { code: unknown }).code)) {
    const e = err as { code: ErrorCode; name?: string; message?: string; stack?: string; details?: Record<string, unknown> };
    const info: ErrorInfo = { code: e.code, name: e.name ?? 'AppError', message: e.message ?? ERRORS[e.code].message };
    if (e.details) info.details = e.details;
    if (withStack && e.stack) info.stack = e.stack;
    return info;
  }
  const message = err instanceof Error ? err.message : String(err);
  const info: ErrorInfo = { code: 'INTERNAL', name: err instanceof Error ? err.name : 'Error', message };
  if (withStack && err instanceof Error && err.stack) info.stack = err.stack;
  return info;
}

/** Rebuilds an AppError from its wire form, keeping code, message and the remote stack. */
export function deserializeError(info: ErrorInfo): AppError {
  const err = new AppError(isErrorCode(info.code) ? info.code : 'INTERNAL', info.message, info.details);
  if (info.stack) err.stack = info.stack;
  return err;
}

/**
 * The error an HTTP API answer carries (`{ error: { code, message, details } }`, the shape every route
 * answers with), or null when the body is not one with a known code. `fallbackMessage`: when it has none.
 */
export function errorFromAnswer(body: unknown, fallbackMessage = ''): AppError | null {
  const e = (body as { error?: Partial<ErrorInfo> } | null)?.error;
  if (!e || !isErrorCode(e.code)) return null;
  return deserializeError({ code: e.code, name: e.name ?? 'AppError', message: e.message ?? fallbackMessage, details: e.details });
}
