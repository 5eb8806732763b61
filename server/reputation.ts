/**
 * Node reputation in memory, backed by the journal's `node_reputation` table
 * (keyed by node id, so it survives a coordinator restart): marks from quorums
 * (agreed, outvoted) and Layer 3 verdicts (pass, fail). The router reads
 * `weight` on every dispatch, so it is a cached number, not a computation.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import type { NodeId } from '../shared';
import type { Journal } from './journal';
import type { NodeSession } from './node';
import { reputationScore, type ReputationCounts } from './quorum';

export type Mark = keyof ReputationCounts;

export class NodeReputation implements ReputationCounts {
  agreed = 0;
  outvoted = 0;
  pass = 0;
  fail = 0;
  #score = 1;
  #threshold: number;

  constructor(counts: ReputationCounts | null, threshold: number) {
    this.#threshold = threshold;
    if (counts) this.set(counts);
  }

  set(c: ReputationCounts): void {
    this.agreed = c.agreed;
    this.outvoted = c.outvoted;
    this.pass = c.pass;
    this.fail = c.fail;
    this.#score = reputationScore(this);
  }

  /** In (0, 1]: (good + 1) / (good + bad + 1). */
  get score(): number {
    return this.#score;
  }

  /** Below the threshold the node gets no new work. */
  get excluded(): boolean {
    return this.#score < this.#threshold;
  }

  /** Share of its room the router gives the node: its score, or 0 when excluded. */
  get weight(): number {
    return this.excluded ? 0 : this.#score;
  }

  toJSON(): ReputationCounts & { score: number; excluded: boolean } {
    return { agreed: this.agreed, outvoted: this.outvoted, pass: this.pass, fail: this.fail, score: Math.round(this.#score * 1000) / 1000, excluded: this.excluded };
  }
}

export class Reputations {
  readonly #journal: Journal;
  readonly #byNode = new Map<string, NodeReputation>();
  readonly threshold: number;

  constructor(journal: Journal, threshold: number) {
    this.#journal = journal;
    this.threshold = threshold;
  }

  /** The node's reputation (from the journal the first time it is asked for). */
  of(nodeId: NodeId | string): NodeReputation {
    let rep = this.#byNode.get(nodeId);
    if (!rep) {
      rep = new NodeReputation(this.#journal.reputation(nodeId), this.threshold);
      this.#byNode.set(nodeId, rep);
    }
    return rep;
  }

  /**
   * A node session joined (new or resumed): it gets its journaled reputation, and the digest of its
   * resume secret is journaled so that after a coordinator restart the same node resumes the same id.
   */
  attach(node: NodeSession): void {
    node.reputation = this.of(node.id);
    this.#journal.rememberNode(node.id, sha256(node.secret()));
  }

  /** Whether `secret` resumes `nodeId`, a node this coordinator (or one before it on this journal) welcomed. */
  recognizes(nodeId: string, secret: string | undefined): boolean {
    if (typeof secret !== 'string' || secret.length === 0) return false;
    const known = this.#journal.nodeSecretSha256(nodeId);
    if (known === null) return false;
    return timingSafeEqual(Buffer.from(known, 'hex'), Buffer.from(sha256(secret), 'hex'));
  }

  /** Marks already written to the journal (in the transaction that decided them): mirror them here. */
  applied(marks: ReadonlyArray<{ nodeId: string; mark: Mark; delta: number }>): void {
    for (const m of marks) {
      const rep = this.#byNode.get(m.nodeId);
      if (!rep) continue; // read from the journal when the node is next asked for
      rep[m.mark] += m.delta;
      rep.set(rep);
    }
  }
}

function sha256(text: string): string {
  return createHash('sha256').update(text, 'utf8').digest('hex');
}
