/**
 * Agent versions (a WASM module by content hash plus config) and tenant quotas,
 * kept in memory for the submit path and written through to the journal.
 */
import { createHash } from 'node:crypto';
import {
  AppError,
  DEFAULT_AGENT_LIMITS,
  type AgentLimits,
  type AgentPayload,
  validateAgentModule,
} from '../shared';
import type { Journal } from './journal';
import type { AgentConfig } from './validate';

export interface AgentVersion {
  name: string;
  version: string;
  moduleHash: string;
  size: number;
  config: AgentConfig;
  createdAt: number;
}

export interface Quota {
  maxQueued: number | null;
  agentLimits: Partial<AgentLimits> | null;
  /** Share of the pool against other tenants of the same priority (fair sharing; null: 1). */
  weight: number | null;
  /** Most tasks the tenant has leased at once (the rest wait with reason `quota`; null: no bound). */
  maxLeased: number | null;
}

/** How often a journal shared with other coordinators has its quotas read again (another may have set one). */
const QUOTA_REFRESH_MS = 1_000;

export class Registry {
  readonly #journal: Journal;
  /** name → versions in publication order (last is newest). */
  readonly #agents = new Map<string, AgentVersion[]>();
  readonly #quotas = new Map<string, Quota>();

  /** When the quotas were last read (a shared journal's are read again each QUOTA_REFRESH_MS). */
  #quotasAt = 0;

  constructor(journal: Journal) {
    this.#journal = journal;
    this.#loadAgents();
    this.#loadQuotas();
  }

  #loadAgents(name?: string): void {
    const rows = this.#journal.agentVersions(name);
    if (name === undefined) this.#agents.clear();
    else this.#agents.delete(name);
    for (const r of rows) {
      this.#add({
        name: r.name,
        version: r.version,
        moduleHash: r.module_hash,
        size: r.size,
        config: JSON.parse(r.config) as AgentConfig,
        createdAt: r.created_at,
      });
    }
  }

  #loadQuotas(): void {
    this.#quotasAt = Date.now();
    this.#quotas.clear();
    for (const q of this.#journal.quotas()) {
      this.#quotas.set(q.tenant, {
        maxQueued: q.max_queued,
        agentLimits: q.agent_limits ? (JSON.parse(q.agent_limits) as Partial<AgentLimits>) : null,
        weight: q.weight,
        maxLeased: q.max_leased,
      });
    }
  }

  /**
   * The versions of `name`. On a journal other coordinators share, a name or version not known here is read
   * from the journal (another coordinator may have published it).
   */
  #versions(name: string, version?: string): AgentVersion[] | undefined {
    const list = this.#agents.get(name);
    if (!this.#journal.shared || (list?.length && (version === undefined || list.some((v) => v.version === version)))) return list;
    this.#loadAgents(name);
    return this.#agents.get(name);
  }

  #add(v: AgentVersion): void {
    const list = this.#agents.get(v.name) ?? [];
    list.push(v);
    this.#agents.set(v.name, list);
  }

  /**
   * Validates and stores a module as `name@version`. Publishing the same bytes
   * again is a no-op (`created` false); other bytes under a taken version are
   * refused with AGENT_VERSION_EXISTS.
   */
  publish(name: string, version: string, bytes: Uint8Array, config: AgentConfig): { created: boolean; agent: AgentVersion } {
    validateAgentModule(bytes, { imports: config.imports ?? [] });
    const moduleHash = createHash('sha256').update(bytes).digest('hex');
    const existing = this.#versions(name, version)?.find((v) => v.version === version);
    if (existing) {
      if (existing.moduleHash !== moduleHash) {
        throw new AppError(
          'AGENT_VERSION_EXISTS',
          `${name}@${version} exists with module ${existing.moduleHash}; publish the new module under a new version.`,
          { name, version, moduleHash: existing.moduleHash },
        );
      }
      return { created: false, agent: existing };
    }
    const journal = this.#journal;
    journal.db.transaction(() => {
      journal.putModule(moduleHash, bytes);
      journal.putAgentVersion(name, version, moduleHash, config);
      journal.event('agent_published', null, null, { name, version, moduleHash });
    }).immediate();
    const agent: AgentVersion = { name, version, moduleHash, size: bytes.byteLength, config, createdAt: journal.now() };
    this.#add(agent);
    return { created: true, agent };
  }

  /** The version an agent task names, or the newest one; AGENT_NOT_FOUND / AGENT_VERSION_NOT_FOUND otherwise. */
  resolve(name: string, version: string | undefined): AgentVersion {
    const list = this.#versions(name, version);
    if (!list?.length) {
      throw new AppError('AGENT_NOT_FOUND', `No agent is named ${JSON.stringify(name)}; publish it with PUT /v1/agents/${name}/versions/:version first.`, { agent: name });
    }
    if (version === undefined) return list[list.length - 1]!;
    const v = list.find((x) => x.version === version);
    if (!v) {
      throw new AppError('AGENT_VERSION_NOT_FOUND', `Agent ${name} has no version ${JSON.stringify(version)}; known: ${list.map((x) => x.version).join(', ')}.`, {
        agent: name,
        version,
        versions: list.map((x) => x.version),
      });
    }
    return v;
  }

  agents(): Array<{ name: string; latest: string; versions: AgentVersion[] }> {
    if (this.#journal.shared) this.#loadAgents();
    return [...this.#agents.entries()].map(([name, versions]) => ({ name, latest: versions[versions.length - 1]!.version, versions }));
  }

  agent(name: string): { name: string; latest: string; versions: AgentVersion[] } | null {
    if (this.#journal.shared) this.#loadAgents(name);
    const versions = this.#agents.get(name);
    return versions?.length ? { name, latest: versions[versions.length - 1]!.version, versions } : null;
  }

  #freshQuotas(): void {
    const now = Date.now();
    if (this.#journal.shared && (now - this.#quotasAt >= QUOTA_REFRESH_MS || now < this.#quotasAt)) this.#loadQuotas();
  }

  setQuota(tenant: string, quota: Quota): void {
    this.#journal.putQuota(tenant, quota);
    this.#quotas.set(tenant, quota);
  }

  quota(tenant: string | undefined | null): Quota | undefined {
    if (!tenant) return undefined;
    this.#freshQuotas();
    return this.#quotas.get(tenant);
  }

  quotas(): Record<string, Quota> {
    this.#freshQuotas();
    return Object.fromEntries(this.#quotas);
  }
}

/**
 * The limits an agent run gets: the defaults, then the version's config, then
 * the task's own ask, each field capped by the tenant's quota.
 */
export function effectiveLimits(
  version: AgentVersion,
  asked: AgentPayload['limits'],
  tenantCap: Partial<AgentLimits> | null | undefined,
): AgentLimits {
  const out: AgentLimits = { ...DEFAULT_AGENT_LIMITS, ...version.config.limits, ...asked };
  if (tenantCap) {
    for (const key of Object.keys(out) as (keyof AgentLimits)[]) {
      const cap = tenantCap[key];
      if (cap !== undefined && out[key] > cap) out[key] = cap;
    }
  }
  return out;
}
