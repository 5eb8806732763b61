/**
 * Bearer tokens, their roles and tenants. A token file (`--auth FILE`) lists
 * `{ "tokens": [{ "token" | "sha256", "roles": [...], "tenant"?: "..." }] }`;
 * the coordinator keeps only SHA-256 digests and compares them in constant time.
 * A token is never logged, journaled or passed on: `Principal.id` stands for it.
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { AppError, NAME_PATTERN } from '../shared';

export const ROLES = ['planner', 'validator', 'refiner', 'evolver', 'allocator', 'node', 'admin'] as const;
export type Role = (typeof ROLES)[number];

export interface Principal {
  readonly roles: ReadonlySet<Role>;
  /** A tenant-bound token sees and touches only that tenant's tasks. */
  readonly tenant: string | null;
  /** Non-secret: 'tok-' + the first 12 hex digits of sha256(token); safe to log and journal. */
  readonly id: string;
}

export interface AuthTokenEntry {
  /** The secret itself, or… */
  token?: string;
  /** …its SHA-256 in hex (a file can hold digests instead of secrets). */
  sha256?: string;
  roles: Role[];
  tenant?: string;
}

export interface AuthFileConfig {
  tokens: AuthTokenEntry[];
}

/** The caller without a (known) token, on the routes open to everyone. */
export const ANONYMOUS: Principal = Object.freeze({ roles: new Set<Role>(), tenant: null, id: 'anonymous' });
/** Every caller in open mode (no --auth). */
const OPEN_ADMIN: Principal = Object.freeze({ roles: new Set<Role>(['admin']), tenant: null, id: 'open' });

/** Shortest plaintext token a file may hold (the generated ones are 43 characters). */
export const MIN_TOKEN_LENGTH = 16;
/** Longer bearer values are refused without hashing them. */
const MAX_TOKEN_LENGTH = 4096;
const NAME = new RegExp(NAME_PATTERN);
const HEX64 = /^[0-9a-fA-F]{64}$/;
const ENTRY_KEYS = new Set(['token', 'sha256', 'roles', 'tenant']);

interface Entry {
  digest: Buffer;
  principal: Principal;
}

export class Auth {
  readonly isOpen: boolean;
  readonly #entries: readonly Entry[];

  private constructor(isOpen: boolean, entries: readonly Entry[]) {
    this.isOpen = isOpen;
    this.#entries = entries;
  }

  /** No --auth: every caller is admin (in-process embedding, unit tests). */
  static open(): Auth {
    return new Auth(true, []);
  }

  /** Checks the config; a bad entry is INVALID_ARGUMENT naming it (`tokens[2].roles[0]: …`). */
  static fromConfig(cfg: AuthFileConfig, source = 'auth config'): Auth {
    return new Auth(false, parseConfig(cfg as unknown, source));
  }

  static fromFile(path: string): Auth {
    let text: string;
    try {
      text = readFileSync(path, 'utf8');
    } catch (err) {
      throw new AppError('INVALID_ARGUMENT', `--auth ${path}: cannot read the file (${(err as Error).message}).`, { path });
    }
    let raw: unknown;
    try {
      raw = JSON.parse(text);
    } catch (err) {
      throw new AppError('INVALID_ARGUMENT', `--auth ${path}: not valid JSON (${(err as Error).message}); see docs/api.md "Authentication" for the format.`, { path });
    }
    return new Auth(false, parseConfig(raw, path));
  }

  /** Bearer token → principal, or null. Digest compare with crypto.timingSafeEqual; never logs the token. */
  verify(token: string | undefined | null): Principal | null {
    if (this.isOpen) return OPEN_ADMIN;
    if (typeof token !== 'string' || token.length === 0 || token.length > MAX_TOKEN_LENGTH) return null;
    const digest = sha256(token);
    let found: Principal | null = null;
    // Every entry is compared, so the time taken does not say which one matched.
    for (const e of this.#entries) {
      if (timingSafeEqual(digest, e.digest) && found === null) found = e.principal;
    }
    return found;
  }

  /** admin holds every role. */
  static has(p: Principal | null, role: Role): boolean {
    return p !== null && (p.roles.has(role) || p.roles.has('admin'));
  }

  /** The token of an `authorization: Bearer <token>` header, or null. */
  static bearer(header: string | readonly string[] | undefined): string | null {
    const value = Array.isArray(header) ? header[0] : header;
    if (typeof value !== 'string') return null;
    const m = /^Bearer[ \t]+(\S+)[ \t]*$/i.exec(value);
    return m ? m[1]! : null;
  }
}

/** 'tok-' + the first 12 hex digits of the token's SHA-256 (what logs and the journal may show). */
export function tokenId(digestHex: string): string {
  return `tok-${digestHex.slice(0, 12).toLowerCase()}`;
}

/** A new random token: 32 bytes, base64url. */
export function newToken(): string {
  return randomBytes(32).toString('base64url');
}

export interface LocalTokens {
  auth: Auth;
  /** Plaintext admin token (printed by npm start, never logged by the coordinator). */
  admin: string;
  /** Plaintext node join token (goes in the page link). */
  join: string;
  /** True when the file was written now; false when an existing one was reused. */
  created: boolean;
}

/**
 * The token file `npm start` and `server/main.ts` use when no --auth is given: reused when it
 * exists and holds a plaintext admin token and node token, else written fresh (mode 0600)
 * with one of each. A file without them is refused rather than overwritten.
 */
export function ensureLocalTokens(path: string): LocalTokens {
  if (existsSync(path)) {
    const auth = Auth.fromFile(path);
    const cfg = JSON.parse(readFileSync(path, 'utf8')) as AuthFileConfig;
    const admin = cfg.tokens.find((t) => t.token !== undefined && t.roles.includes('admin'))?.token;
    const join = cfg.tokens.find((t) => t.token !== undefined && t.roles.includes('node') && t.tenant === undefined)?.token;
    if (admin === undefined || join === undefined) {
      throw new AppError('INVALID_ARGUMENT', `${path} holds no plaintext admin token and node token; pass it with --auth, or move it away to have a fresh one written.`, { path });
    }
    return { auth, admin, join, created: false };
  }
  const admin = newToken();
  const join = newToken();
  const cfg: AuthFileConfig = { tokens: [{ token: admin, roles: ['admin'] }, { token: join, roles: ['node'] }] };
  mkdirSync(dirname(path), { recursive: true });
  writeFileSync(path, `${JSON.stringify(cfg, null, 2)}\n`, { mode: 0o600, flag: 'wx' });
  return { auth: Auth.fromConfig(cfg, path), admin, join, created: true };
}

function sha256(text: string): Buffer {
  return createHash('sha256').update(text, 'utf8').digest();
}

function bad(source: string, path: string, message: string, entry?: number): AppError {
  const details: Record<string, unknown> = { source, path };
  if (entry !== undefined) details.entry = entry;
  return new AppError('INVALID_ARGUMENT', `${source}: ${path}: ${message}; see docs/api.md "Authentication" for the format.`, details);
}

function parseConfig(raw: unknown, source: string): Entry[] {
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) throw bad(source, '(top level)', 'must be an object { "tokens": [...] }');
  const top = raw as Record<string, unknown>;
  for (const key of Object.keys(top)) if (key !== 'tokens') throw bad(source, key, 'unknown key (only "tokens")');
  if (!Array.isArray(top.tokens)) throw bad(source, 'tokens', 'must be an array of { "token" | "sha256", "roles", "tenant"? }');
  const entries: Entry[] = [];
  const seen = new Map<string, number>();
  top.tokens.forEach((item: unknown, i: number) => {
    const at = `tokens[${i}]`;
    if (item === null || typeof item !== 'object' || Array.isArray(item)) throw bad(source, at, 'must be an object', i);
    const e = item as Record<string, unknown>;
    for (const key of Object.keys(e)) {
      if (!ENTRY_KEYS.has(key)) throw bad(source, `${at}.${key}`, 'unknown key (token, sha256, roles, tenant)', i);
    }
    if ((e.token === undefined) === (e.sha256 === undefined)) throw bad(source, at, 'give exactly one of "token" and "sha256"', i);
    let digestHex: string;
    if (e.token !== undefined) {
      if (typeof e.token !== 'string' || e.token.length < MIN_TOKEN_LENGTH || e.token.length > MAX_TOKEN_LENGTH || /\s/.test(e.token)) {
        throw bad(source, `${at}.token`, `must be a string of ${MIN_TOKEN_LENGTH} to ${MAX_TOKEN_LENGTH} characters without spaces`, i);
      }
      digestHex = sha256(e.token).toString('hex');
    } else {
      if (typeof e.sha256 !== 'string' || !HEX64.test(e.sha256)) throw bad(source, `${at}.sha256`, 'must be 64 hex digits (sha256 of the token)', i);
      digestHex = e.sha256.toLowerCase();
    }
    if (!Array.isArray(e.roles) || e.roles.length === 0) throw bad(source, `${at}.roles`, `must be a non-empty array of ${ROLES.join(', ')}`, i);
    const roles = new Set<Role>();
    e.roles.forEach((r: unknown, j: number) => {
      if (typeof r !== 'string' || !(ROLES as readonly string[]).includes(r)) {
        throw bad(source, `${at}.roles[${j}]`, `${JSON.stringify(r)} is not a role (${ROLES.join(', ')})`, i);
      }
      roles.add(r as Role);
    });
    let tenant: string | null = null;
    if (e.tenant !== undefined) {
      if (typeof e.tenant !== 'string' || !NAME.test(e.tenant)) throw bad(source, `${at}.tenant`, `must be a name matching ${NAME_PATTERN}`, i);
      tenant = e.tenant;
    }
    const prev = seen.get(digestHex);
    if (prev !== undefined) throw bad(source, at, `the same token as tokens[${prev}]`, i);
    seen.set(digestHex, i);
    entries.push({ digest: Buffer.from(digestHex, 'hex'), principal: Object.freeze({ roles, tenant, id: tokenId(digestHex) }) });
  });
  return entries;
}
