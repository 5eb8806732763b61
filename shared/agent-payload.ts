/**
 * The payload of an `agent` task and the shape of its result (docs/api.md "Agent payload and
 * result"): stdin and stdout as bytes, mounts (directory trees, read-only or writable), env and
 * args as given. The schema gives the structure; `checkAgentPayload` the rules a schema cannot
 * say (paths that stay inside their mount, mounts that do not overlap, base64 that decodes,
 * sizes), each with its own code. The coordinator runs it at submit; a node runs it again on
 * what it is assigned (a coordinator is not trusted more than that), so it is pure and cheap.
 */
import { Type, type Static } from '@sinclair/typebox';
import { AppError } from './errors';
import { LIMITS, MAX_AGENT_LIMITS } from './limits';

/** Bounds of the agent payload and result beyond LIMITS. */
export const AGENT_IO_LIMITS = {
  /** Mounts in one payload (the `files` shorthand counts as one). */
  maxMounts: 16,
  /** Files named inline in all mounts together. */
  maxMountFiles: 10_000,
  /** Longest mount path or relative file path, in UTF-8 bytes. */
  maxPathBytes: 1024,
  /** A writable mount's cap on its bytes when the payload gives no `maxBytes`. */
  defaultMountBytes: 16 << 20,
  /** Largest `maxBytes` a writable mount may ask for. */
  maxMountBytes: 64 << 20,
  /** Each directory entry (file, directory, link) counts this many bytes toward its mount's cap. */
  mountEntryBytes: 64,
  /** Files of writable mounts sent back in a result, total bytes (one socket message must hold them, base64 included). */
  maxResultFileBytes: 4 << 20,
  /** stdout and stderr kept in a failed attempt's error details, each. */
  maxFailureStreamBytes: 16 << 10,
  maxArgs: 256,
  maxOkExitCodes: 16,
  /** Model calls a run makes when its payload gives no `modelCalls` (agents that import agent_model). */
  defaultModelCalls: 64,
  /** Largest `modelCalls` a payload may ask for. */
  maxModelCalls: 4096,
  /** Largest max_tokens of one agent_model.generate call. */
  maxModelCallTokens: 4096,
  /** Longest prompt of one call, in UTF-8 bytes (the model's context decides first, with PROMPT_TOO_LONG). */
  maxModelPromptBytes: 1 << 20,
} as const;

const Name = Type.String({ pattern: '^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$' });
/** Any string; NUL and text that is not UTF-8 (lone surrogates) are refused by checkAgentPayload with AGENT_BAD_ARGS. */
const Arg = Type.String({ maxLength: 4096 });

export const FileContentSchema = Type.Union([
  Type.Object({ text: Type.String() }, { additionalProperties: false }),
  Type.Object({ base64: Type.String() }, { additionalProperties: false }),
  Type.Object({ blob: Type.String({ pattern: '^sha256:[0-9a-f]{64}$' }) }, { additionalProperties: false }),
]);

export const MountSchema = Type.Object(
  {
    /** Relative path (no leading `/`, no `.`/`..`/empty segments) → content; directories are made as needed. */
    files: Type.Optional(Type.Record(Type.String({ minLength: 1, maxLength: AGENT_IO_LIMITS.maxPathBytes }), FileContentSchema)),
    /** The agent may create, change and remove entries; what the mount holds at exit comes back in the result. */
    writable: Type.Optional(Type.Boolean()),
    /** Cap on a writable mount's bytes (files and entries); default AGENT_IO_LIMITS.defaultMountBytes. */
    maxBytes: Type.Optional(Type.Integer({ minimum: 0, maximum: AGENT_IO_LIMITS.maxMountBytes })),
  },
  { additionalProperties: false },
);

export const StdinSchema = Type.Union([
  Type.Object({ text: Type.String() }, { additionalProperties: false }),
  Type.Object({ base64: Type.String() }, { additionalProperties: false }),
]);

export const StdoutModeSchema = Type.Union([Type.Literal('json'), Type.Literal('text'), Type.Literal('base64')]);

export const AgentLimitsSchema = Type.Object(
  {
    memoryMB: Type.Optional(Type.Integer({ minimum: 1, maximum: MAX_AGENT_LIMITS.memoryMB })),
    fuel: Type.Optional(Type.Integer({ minimum: 1, maximum: MAX_AGENT_LIMITS.fuel })),
    timeoutMs: Type.Optional(Type.Integer({ minimum: 1, maximum: MAX_AGENT_LIMITS.timeoutMs })),
    maxStdoutBytes: Type.Optional(Type.Integer({ minimum: 0, maximum: MAX_AGENT_LIMITS.maxStdoutBytes })),
    maxStderrBytes: Type.Optional(Type.Integer({ minimum: 0, maximum: MAX_AGENT_LIMITS.maxStderrBytes })),
  },
  { additionalProperties: false },
);

export const AgentPayloadSchema = Type.Object(
  {
    agent: Name,
    /** Omitted: the newest version. */
    version: Type.Optional(Name),
    /** Written to the agent's stdin as JSON. Not together with `stdin`. */
    input: Type.Optional(Type.Unknown()),
    /** Raw stdin: UTF-8 text or base64 bytes. Not together with `input`. */
    stdin: Type.Optional(StdinSchema),
    /** How stdout becomes the result's `output`: parsed JSON (default), text, or base64. */
    stdout: Type.Optional(StdoutModeSchema),
    /** Exit codes besides 0 that count as success. */
    okExitCodes: Type.Optional(Type.Array(Type.Integer({ minimum: 0, maximum: 255 }), { maxItems: AGENT_IO_LIMITS.maxOkExitCodes })),
    /** argv after argv[0]: any UTF-8 without NUL. */
    args: Type.Optional(Type.Array(Arg, { maxItems: AGENT_IO_LIMITS.maxArgs })),
    /** argv[0]; default the agent name. */
    argv0: Type.Optional(Arg),
    /** Environment: values any UTF-8 without NUL. */
    env: Type.Optional(Type.Record(Type.String({ pattern: '^[A-Za-z_][A-Za-z0-9_]{0,63}$' }), Arg)),
    /** false: exactly `env` (no AGENT_TASK_ID, AGENT_NAME). Default true. */
    injectEnv: Type.Optional(Type.Boolean()),
    /** Shorthand for a read-only mount `/input` of UTF-8 text files, name → text. */
    files: Type.Optional(Type.Record(Type.String({ pattern: '^[A-Za-z0-9._-]{1,128}$' }), Type.String())),
    /** Guest path (absolute, `/` included) → mount; preopened as fds 3+ in this order (after `/input` of `files`). */
    mounts: Type.Optional(Type.Record(Type.String({ minLength: 1, maxLength: AGENT_IO_LIMITS.maxPathBytes }), MountSchema)),
    limits: Type.Optional(AgentLimitsSchema),
    /**
     * The model the agent calls through agent_model (required when its version imports it, refused otherwise);
     * the task runs on a node that holds it and has JSPI.
     */
    model: Type.Optional(Name),
    /** A LoRA adapter of `model` the calls use. */
    adapter: Type.Optional(Name),
    /** Most agent_model.generate calls the run may make (default AGENT_IO_LIMITS.defaultModelCalls). */
    modelCalls: Type.Optional(Type.Integer({ minimum: 1, maximum: AGENT_IO_LIMITS.maxModelCalls })),
  },
  { additionalProperties: false },
);

export type AgentPayload = Static<typeof AgentPayloadSchema>;
export type FileContent = Static<typeof FileContentSchema>;
export type MountSpec = Static<typeof MountSchema>;
export type StdoutMode = Static<typeof StdoutModeSchema>;

/** A file a writable mount held at exit: UTF-8 text when it is valid UTF-8, else base64. */
export type ResultFile = { text: string } | { base64: string };

/** stdout or stderr as a failed attempt keeps it (error.details.stdout / .stderr). */
export interface CapturedStream {
  /** What was kept: text (UTF-8, invalid sequences replaced) or, for stdout in base64 mode, base64. */
  text?: string;
  base64?: string;
  /** Bytes the agent wrote (up to its stream cap). */
  bytes: number;
  /** Less was kept than written: the agent passed its cap, or more than AGENT_IO_LIMITS.maxFailureStreamBytes was written. */
  truncated: boolean;
}

/** What an agent run returns. */
export interface AgentResult {
  /** 0, or one of the payload's okExitCodes. */
  exitCode: number;
  /** stdout as the payload asked: parsed JSON (`stdout: "json"`, the default), the text, or base64. */
  output: unknown;
  /** stderr as text, cut at the cap. */
  stderr: string;
  /** Writable mounts at exit: guest path → relative path → content. Absent when the payload has no writable mount. */
  files?: Record<string, Record<string, ResultFile>>;
  fuelUsed: number;
  durationMs: number;
  memoryBytes: number;
  /** From the run's start on the node to the agent's first instruction (worker and instance ready), when the node measured it. */
  spawnMs?: number;
  /** An agent that called the node's model: its calls, their tokens, and the time it spent suspended waiting for them. */
  model?: ModelCallStats;
}

/** What an agent's agent_model calls cost (in its result, and in a failed attempt's details). */
export interface ModelCallStats {
  calls: number;
  /** Calls answered with an error (negative return). */
  failed: number;
  promptTokens: number;
  completionTokens: number;
  /** Wall time the agent was suspended in calls (its fuel does not count it; its deadline does). */
  waitMs: number;
}

// ---------------------------------------------------------------- checks

/** One mount as the runtime builds it: `files` shorthand first (`/input`), then `mounts` in order. */
export interface MountPlan {
  path: string;
  writable: boolean;
  maxBytes: number;
  files: [string, FileContent][];
}

const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;

/** Bytes of a base64 string (RFC 4648, padded); null when it is not one. */
export function base64ToBytes(s: string): Uint8Array | null {
  if (s.length % 4 !== 0 || !BASE64.test(s)) return null;
  let bin: string;
  try {
    bin = atob(s);
  } catch {
    return null;
  }
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

/** Decoded length of a base64 string already known to be valid. */
function base64Length(s: string): number {
  const pad = s.endsWith('==') ? 2 : s.endsWith('=') ? 1 : 0;
  return (s.length / 4) * 3 - pad;
}

export function bytesToBase64(bytes: Uint8Array): string {
  let bin = '';
  const CHUNK = 0x8000;
  for (let i = 0; i < bytes.length; i += CHUNK) bin += String.fromCharCode(...bytes.subarray(i, i + CHUNK));
  return btoa(bin);
}

const utf8 = new TextEncoder();

/** UTF-8 bytes of a string, without encoding it. */
export function utf8Length(s: string): number {
  let n = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x80) n += 1;
    else if (c < 0x800) n += 2;
    else if (c >= 0xd800 && c <= 0xdbff && i + 1 < s.length) {
      n += 4;
      i++;
    } else n += 3;
  }
  return n;
}

/** A string that is UTF-8 (no lone surrogate) and holds no NUL. */
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;
export function isCleanText(s: string): boolean {
  return !s.includes('\0') && !LONE_SURROGATE.test(s);
}

/** Why a mount path is not `/` or `/seg/seg` (null when it is). */
function badGuestPath(p: string): string | null {
  if (!p.startsWith('/')) return 'must be absolute (start with /)';
  if (p === '/') return null;
  if (p.endsWith('/')) return 'must not end with /';
  return badSegments(p.slice(1));
}

function badSegments(rel: string): string | null {
  if (!isCleanText(rel)) return 'must be UTF-8 without NUL';
  if (utf8Length(rel) > AGENT_IO_LIMITS.maxPathBytes) return `must be at most ${AGENT_IO_LIMITS.maxPathBytes} bytes`;
  for (const seg of rel.split('/')) {
    if (seg === '') return 'has an empty segment (// or a leading or trailing /)';
    if (seg === '.' || seg === '..') return `has a "${seg}" segment: paths stay inside their mount`;
  }
  return null;
}

const refuse = (code: 'MOUNT_PATH_INVALID' | 'MOUNT_OVERLAP' | 'INVALID_BASE64' | 'AGENT_INPUT_TOO_LARGE' | 'AGENT_BAD_ARGS' | 'AGENT_PAYLOAD_INVALID',
  path: string, message: string, details: Record<string, unknown> = {}): never => {
  throw new AppError(code, `${path}: ${message}`, { path, ...details });
};

/** `a` is `b` or lies under it (or the other way round). */
function overlaps(a: string, b: string): boolean {
  if (a === b || a === '/' || b === '/') return true;
  return a.startsWith(`${b}/`) || b.startsWith(`${a}/`);
}

/**
 * Checks what the schema cannot and returns the mounts in fd order. Throws AppError:
 * AGENT_PAYLOAD_INVALID (`stdin` with `input`; `maxBytes` on a read-only mount),
 * AGENT_BAD_ARGS (NUL or non-UTF-8 text in args, argv0 or env values), MOUNT_PATH_INVALID
 * (a guest path not absolute and clean; a relative path absolute, with `.`/`..`/empty
 * segments, or both a file and a directory), MOUNT_OVERLAP (two mounts at the same path or
 * one inside another), INVALID_BASE64, AGENT_INPUT_TOO_LARGE (inline bytes over
 * LIMITS.maxAgentInputBytes, or too many mounts or files). `path` prefixes the JSON paths in
 * messages (e.g. `/tasks/3/payload`).
 */
export function checkAgentPayload(p: AgentPayload, path = '/payload'): MountPlan[] {
  if (p.stdin !== undefined && p.input !== undefined) {
    refuse('AGENT_PAYLOAD_INVALID', `${path}/stdin`, 'stdin and input cannot both be given: input is written to stdin as JSON.');
  }
  if (p.model === undefined && (p.adapter !== undefined || p.modelCalls !== undefined)) {
    refuse('AGENT_PAYLOAD_INVALID', `${path}/${p.adapter !== undefined ? 'adapter' : 'modelCalls'}`, 'applies to agents that call a model: name it in model.');
  }
  const text = (where: string, s: string): void => {
    if (!isCleanText(s)) refuse('AGENT_BAD_ARGS', where, 'holds NUL or text that is not UTF-8 (a lone surrogate); pass bytes through a mount or stdin.');
  };
  p.args?.forEach((a, i) => text(`${path}/args/${i}`, a));
  if (p.argv0 !== undefined) text(`${path}/argv0`, p.argv0);
  for (const [k, v] of Object.entries(p.env ?? {})) text(`${path}/env/${k}`, v);

  let inline = p.input === undefined ? 0 : utf8Length(JSON.stringify(p.input) ?? '');
  if (p.stdin) {
    if ('text' in p.stdin) inline += utf8Length(p.stdin.text);
    else {
      if (base64ToBytes(p.stdin.base64) === null) refuse('INVALID_BASE64', `${path}/stdin/base64`, 'is not base64 (RFC 4648, standard alphabet, padded).');
      inline += base64Length(p.stdin.base64);
    }
  }
  const plans: MountPlan[] = [];
  if (p.files) {
    const files: [string, FileContent][] = [];
    for (const [name, t] of Object.entries(p.files)) {
      files.push([name, { text: t }]);
      inline += utf8Length(t);
    }
    plans.push({ path: '/input', writable: false, maxBytes: 0, files });
  }
  let fileCount = plans[0]?.files.length ?? 0;
  for (const [guest, m] of Object.entries(p.mounts ?? {})) {
    const at = `${path}/mounts/${guest}`;
    const why = badGuestPath(guest);
    if (why) refuse('MOUNT_PATH_INVALID', at, `the mount path ${why}.`);
    for (const other of plans) {
      if (overlaps(guest, other.path)) {
        refuse('MOUNT_OVERLAP', at, `overlaps the mount at ${other.path}${other.path === '/input' && p.files ? ' (the files shorthand)' : ''}; mount paths may not be equal or nested.`, { other: other.path });
      }
    }
    if (m.maxBytes !== undefined && !m.writable) refuse('AGENT_PAYLOAD_INVALID', `${at}/maxBytes`, 'applies to writable mounts only.');
    const files: [string, FileContent][] = [];
    const dirs = new Set<string>();
    const names = new Set<string>();
    for (const [rel, content] of Object.entries(m.files ?? {})) {
      const fileAt = `${at}/files/${rel}`;
      if (rel.startsWith('/')) refuse('MOUNT_PATH_INVALID', fileAt, 'is absolute: paths in files are relative to their mount.');
      const bad = badSegments(rel);
      if (bad) refuse('MOUNT_PATH_INVALID', fileAt, `the path ${bad}.`);
      const segs = rel.split('/');
      for (let i = 1; i < segs.length; i++) dirs.add(segs.slice(0, i).join('/'));
      names.add(rel);
      if ('text' in content) inline += utf8Length(content.text);
      else if ('base64' in content) {
        if (base64ToBytes(content.base64) === null) refuse('INVALID_BASE64', `${fileAt}/base64`, 'is not base64 (RFC 4648, standard alphabet, padded).');
        inline += base64Length(content.base64);
      }
      files.push([rel, content]);
    }
    for (const d of dirs) if (names.has(d)) refuse('MOUNT_PATH_INVALID', `${at}/files/${d}`, 'is a file and also a directory of other files.');
    fileCount += files.length;
    plans.push({ path: guest, writable: m.writable === true, maxBytes: m.writable ? (m.maxBytes ?? AGENT_IO_LIMITS.defaultMountBytes) : 0, files });
  }
  if (plans.length > AGENT_IO_LIMITS.maxMounts) {
    refuse('AGENT_INPUT_TOO_LARGE', `${path}/mounts`, `${plans.length} mounts; the limit is ${AGENT_IO_LIMITS.maxMounts}.`);
  }
  if (fileCount > AGENT_IO_LIMITS.maxMountFiles) {
    refuse('AGENT_INPUT_TOO_LARGE', `${path}/mounts`, `${fileCount} files inline; the limit is ${AGENT_IO_LIMITS.maxMountFiles}. Upload larger inputs once as blobs (POST /v1/blobs) and name them in a mount ({ "blob": "sha256:…" }).`);
  }
  if (inline > LIMITS.maxAgentInputBytes) {
    refuse('AGENT_INPUT_TOO_LARGE', path, `input, stdin, files and inline mount files hold ${inline} bytes; the limit is ${LIMITS.maxAgentInputBytes}. Upload larger inputs once as blobs (POST /v1/blobs) and name them in a mount ({ "blob": "sha256:…" }).`, { bytes: inline, limit: LIMITS.maxAgentInputBytes });
  }
  return plans;
}

/** UTF-8 bytes of a file's inline content (blobs: null, the node fetches them). */
export function inlineBytes(c: FileContent): Uint8Array | null {
  if ('text' in c) return utf8.encode(c.text);
  if ('base64' in c) return base64ToBytes(c.base64);
  return null;
}
