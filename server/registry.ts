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

export class Registry {
  readonly #journal: Journal;
  /** name → versions in publication order (last is newest). */
  readonly #agents = new Map<string, AgentVersion[]>();
  readonly #quotas = new Map<string, Quota>();

  constructor(journal: Journal) {
    this.#journal = journal;
    for (const r of journal.agentVersions()) {
      this.#add({
        name: r.name,
        version: r.version,
        moduleHash: r.module_hash,
        size: r.size,
        config: JSON.parse(r.config) as AgentConfig,
        createdAt: r.created_at,
      });
    }
    for (const q of journal.quotas()) {
      this.#quotas.set(q.tenant, {
        maxQueued: q.max_queued,
        agentLimits: q.agent_limits ? (JSON.parse(q.agent_limits) as Partial<AgentLimits>) : null,
        weight: q.weight,
        maxLeased: q.max_leased,
      });
    }
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
    validateAgentModule(bytes);
    const moduleHash = createHash('sha256').update(bytes).digest('hex');
    const existing = this.#agents.get(name)?.find((v) => v.version === version);
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
    const list = this.#agents.get(name);
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
    return [...this.#agents.entries()].map(([name, versions]) => ({ name, latest: versions[versions.length - 1]!.version, versions }));
  }

  agent(name: string): { name: string; latest: string; versions: AgentVersion[] } | null {
    const versions = this.#agents.get(name);
    return versions?.length ? { name, latest: versions[versions.length - 1]!.version, versions } : null;
  }

  setQuota(tenant: string, quota: Quota): void {
    this.#journal.putQuota(tenant, quota);
    this.#quotas.set(tenant, quota);
  }

  quota(tenant: string | undefined | null): Quota | undefined {
    return tenant ? this.#quotas.get(tenant) : undefined;
  }

  quotas(): Record<string, Quota> {
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
