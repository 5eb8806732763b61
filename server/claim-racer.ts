/**
 * A test's child process (server/coordinators.test.ts): claims ready agent tasks from the PostgreSQL journal
 * named by argv[2] in rounds of argv[3] as a coordinator's dispatch does (one claim: ready reads, then leases),
 * until none is left; prints the task ids it leased as one JSON line.
 */
import { newLeaseId, newNodeId } from '../shared';
import { Journal } from './journal';

const [url, per] = process.argv.slice(2);
const journal = new Journal(url!);
const node = newNodeId();
const leased: string[] = [];
let rounds = 0;
let empty = 0;
// Bounded: stops after 20 rounds in a row that found nothing, or 10 000 rounds.
while (rounds < 10_000 && empty < 20) {
  rounds++;
  const got = journal.claim(() => {
    const rows = journal.ready('agent', Date.now(), Number(per));
    return journal.leaseBatch(rows.map((r) => ({ taskId: r.id, leaseId: newLeaseId(), nodeId: node })), []).leased;
  });
  if (got.size === 0) empty++;
  else empty = 0;
  leased.push(...got);
}
journal.close();
console.log(JSON.stringify({ leased, rounds }));
