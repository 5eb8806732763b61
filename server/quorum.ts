/**
 * Replication for untrusted nodes, BOINC's way: a task may run as `replicas`
 * copies on distinct nodes; the output that `quorum` of them agree on
 * (compared as canonical JSON) is the task's result. Where they disagree,
 * replicas are added one at a time up to `maxReplicas`, then the task fails
 * QUORUM_FAILED. Pure functions only: the journal applies the decisions.
 *
 * Node reputation: good marks (agreeing with a quorum, pass verdicts) and bad
 * marks (outvoted, fail verdicts) give a score in (0, 1]; the router gives a
 * node that share of its window, and none below a threshold.
 */
import { createHash } from 'node:crypto';
import { AppError, MAX_REPLICAS, type ErrorInfo, type TaskKind, type TaskSpec } from '../shared';

/** How a task is replicated; stored with the task (null: it runs once). */
export interface Replication {
  replicas: number;
  quorum: number;
  maxReplicas: number;
  /** Added by the coordinator's spot checks rather than asked for by the caller. */
  spotCheck?: boolean;
}

/** What a replica ended with: a result, or an error that another attempt cannot change. */
export type ReplicaOutcome = { ok: true; result: unknown } | { ok: false; error: ErrorInfo };

export type ReplicaState = 'queued' | 'leased' | 'done' | 'dead' | 'cancelled';

export interface ReplicaRow {
  idx: number;
  state: ReplicaState;
  nodeId: string | null;
  digest: string | null;
}

export type Decision =
  | { kind: 'wait' }
  /** `digest` reached the quorum: these replicas agreed, the other done ones are outvoted. */
  | { kind: 'agreed'; digest: string; agreed: number[]; outvoted: number[] }
  /** No quorum is reachable with the replicas there are: add one. */
  | { kind: 'add' }
  /** maxReplicas ran and no quorum. */
  | { kind: 'failed' }
  /** Every replica ran out of attempts without an output. */
  | { kind: 'dead' };

/** A spot check: the task runs on two nodes that must agree; a mismatch runs a third to decide. */
export const SPOT_CHECK: Readonly<Replication> = { replicas: 2, quorum: 2, maxReplicas: 3, spotCheck: true };

/**
 * The replication a spec asks for (null: it runs once), with the defaults filled in: quorum a
 * majority of replicas, maxReplicas replicas + 2 (at most MAX_REPLICAS). SCHEMA_VIOLATION when
 * the numbers do not fit together (quorum ≤ replicas ≤ maxReplicas) or the kind is train.
 */
export function replicationOf(spec: TaskSpec, path: string): Replication | null {
  const asked = spec as { replicas?: number; quorum?: number; maxReplicas?: number };
  if (asked.replicas === undefined && asked.quorum === undefined && asked.maxReplicas === undefined) return null;
  const refuse = (field: string, message: string): never => {
    throw new AppError('SCHEMA_VIOLATION', `${path}/${field}: ${message}`, { errors: [{ path: `${path}/${field}`, message }] });
  };
  if (spec.kind === 'train') refuse('replicas', 'train tasks cannot be replicated (each run writes the adapter).');
  const replicas = asked.replicas ?? 1;
  const quorum = asked.quorum ?? majority(replicas);
  const maxReplicas = asked.maxReplicas ?? Math.min(MAX_REPLICAS, Math.max(replicas, replicas + 2));
  if (quorum > replicas) refuse('quorum', `must be at most replicas (${replicas}).`);
  if (maxReplicas < replicas) refuse('maxReplicas', `must be at least replicas (${replicas}).`);
  if (replicas === 1 && quorum === 1 && maxReplicas === 1) return null;
  return { replicas, quorum, maxReplicas };
}

/** Majority of k: the default quorum. */
export function majority(k: number): number {
  return Math.floor(k / 2) + 1;
}

/** JSON with object keys sorted and no whitespace; numbers as JSON prints them. */
export function canonicalJson(value: unknown): string {
  if (value === null || typeof value !== 'object') return JSON.stringify(value) ?? 'null';
  if (Array.isArray(value)) return `[${value.map((v) => (v === undefined ? 'null' : canonicalJson(v))).join(',')}]`;
  const obj = value as Record<string, unknown>;
  const keys = Object.keys(obj).filter((k) => obj[k] !== undefined).sort();
  return `{${keys.map((k) => `${JSON.stringify(k)}:${canonicalJson(obj[k])}`).join(',')}}`;
}

/**
 * The part of an outcome replicas must agree on: for agents the exit code,
 * output and writable mounts' files (not timings, fuel or memory, which vary by node); for generate the
 * text, tokens and finish reason; for an error its code.
 */
export function comparable(kind: TaskKind, outcome: ReplicaOutcome): unknown {
  if (!outcome.ok) return { error: outcome.error.code };
  const r = (outcome.result ?? null) as Record<string, unknown> | null;
  if (r === null || typeof r !== 'object') return { result: r };
  if (kind === 'agent') {
    // Output is stdout as the payload asked for it (JSON, text or base64); files of writable mounts, when any, count too.
    const c: Record<string, unknown> = { exitCode: r.exitCode ?? null, output: r.output ?? null };
    if (r.files !== undefined) c.files = r.files;
    return c;
  }
  if (kind === 'generate') return { text: r.text ?? null, tokens: r.tokens ?? null, finishReason: r.finishReason ?? null };
  return { result: r };
}

/** SHA-256 of the comparable part's canonical JSON, hex. */
export function outcomeDigest(kind: TaskKind, outcome: ReplicaOutcome): string {
  return createHash('sha256').update(canonicalJson(comparable(kind, outcome))).digest('hex');
}

/** What to do with a replicated task given its replicas now. */
export function decide(rows: readonly ReplicaRow[], r: Replication): Decision {
  const votes = new Map<string, number[]>();
  let pending = 0;
  for (const row of rows) {
    if (row.state === 'queued' || row.state === 'leased') pending++;
    else if (row.state === 'done' && row.digest !== null) {
      let list = votes.get(row.digest);
      if (!list) votes.set(row.digest, (list = []));
      list.push(row.idx);
    }
  }
  let best = 0;
  for (const [digest, idxs] of votes) {
    if (idxs.length >= r.quorum) {
      const outvoted = rows.filter((x) => x.state === 'done' && x.digest !== digest).map((x) => x.idx);
      return { kind: 'agreed', digest, agreed: idxs, outvoted };
    }
    best = Math.max(best, idxs.length);
  }
  if (best + pending >= r.quorum) return { kind: 'wait' };
  if (pending > 0) return { kind: 'wait' }; // one at a time: let the running ones end first
  if (rows.length < r.maxReplicas) return { kind: 'add' };
  return votes.size === 0 ? { kind: 'dead' } : { kind: 'failed' };
}

/** Reputation marks of one node, kept in the journal. */
export interface ReputationCounts {
  agreed: number;
  outvoted: number;
  pass: number;
  fail: number;
}

/**
 * Laplace-smoothed share of good marks: (good + 1) / (good + bad + 1). A new
 * node scores 1; each bad mark without good ones lowers it: 1/2, 1/3, 1/4, 1/5…
 */
export function reputationScore(c: ReputationCounts): number {
  const good = Math.max(0, c.agreed + c.pass);
  const bad = Math.max(0, c.outvoted + c.fail);
  return (good + 1) / (good + bad + 1);
}
