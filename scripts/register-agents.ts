/**
 * Registers agent modules with a coordinator over its HTTP API
 * (`PUT /v1/agents/:name/versions/:version`, raw wasm bytes). The version is
 * derived from the content, so registering the same build twice is a no-op.
 */
import { createHash } from 'node:crypto';
import { AGENTS, readAgent, type AgentSpec } from '../agents';
import { isErrorCode, type ErrorCode } from '../shared';

export interface Registration {
  name: string;
  version: string;
  sha256: string;
  status: number;
  /** Set when the coordinator refused the module. */
  code: ErrorCode | null;
  message?: string;
}

/** `v-` + the first 16 hex digits of the module's SHA-256. */
export function contentVersion(bytes: Uint8Array): string {
  return `v-${sha256(bytes).slice(0, 16)}`;
}

export function sha256(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex');
}

/** `token`: a bearer token with the evolver role, for a coordinator run with --auth. */
export async function registerAgent(baseUrl: string, name: string, bytes: Uint8Array, version = contentVersion(bytes), token?: string): Promise<Registration> {
  const url = `${baseUrl.replace(/\/$/, '')}/v1/agents/${encodeURIComponent(name)}/versions/${encodeURIComponent(version)}`;
  const headers: Record<string, string> = { 'content-type': 'application/wasm' };
  if (token) headers.authorization = `Bearer ${token}`;
  const res = await fetch(url, { method: 'PUT', headers, body: new Uint8Array(bytes) as Uint8Array<ArrayBuffer> });
  const text = await res.text();
  const reg: Registration = { name, version, sha256: sha256(bytes), status: res.status, code: null };
  if (!res.ok) {
    let body: { error?: { code?: unknown; message?: unknown } } = {};
    try {
      body = JSON.parse(text) as typeof body;
    } catch {
      // not JSON
    }
    reg.code = isErrorCode(body.error?.code) ? body.error.code : 'INTERNAL';
    reg.message = typeof body.error?.message === 'string' ? body.error.message : text.slice(0, 200);
  }
  return reg;
}

/**
 * Registers the catalogued sample agents (all of them unless `specs` narrows it).
 * Refusals come back with their codes, not thrown: hostile modules are meant to be refused.
 */
export async function registerSampleAgents(baseUrl: string, specs: readonly AgentSpec[] = AGENTS, token?: string): Promise<Registration[]> {
  const out: Registration[] = [];
  for (const spec of specs) {
    const bytes = readAgent(spec.name);
    out.push(await registerAgent(baseUrl, spec.name, bytes, contentVersion(bytes), token));
  }
  return out;
}
