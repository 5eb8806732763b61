/**
 * The coordinator suites whose behaviour lives in the journal (replicas and reputation, fair scheduling and
 * quotas, datasets, blobs, paging, the task API, a restart), run again with every coordinator journaling to a
 * throwaway PostgreSQL cluster (server/postgres-testing.ts testDb). The same files run on SQLite on their own.
 */
import { after } from 'node:test';
import { JOURNAL_TEST_PG, startPostgres } from './postgres-testing';

const pg = await startPostgres();
process.env[JOURNAL_TEST_PG] = pg.url;

await import('./api.test');
await import('./paging.test');
await import('./quorum.test');
await import('./fair-scheduling.test');
await import('./datasets.test');
await import('./blobs.test');
await import('./crash.test');

// Registered after the suites' own hooks, so their coordinators close before the cluster stops.
after(() => pg.close());
