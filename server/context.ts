/** What the routes share: the coordinator's parts. */
import type { Auth } from './auth';
import type { Hub } from './hub';
import type { Clock, Journal } from './journal';
import type { Maintenance } from './maintenance';
import type { Metrics } from './metrics';
import type { ModulePreparer } from './prepare-worker';
import type { Registry } from './registry';
import type { Scheduler } from './scheduler';
import type { Tracing } from './tracing';
import type { TaskWatch } from './watch';
import type { Webhooks } from './webhook';

export interface Context {
  /** Bearer tokens and their roles (Auth.open() when the coordinator runs without --auth). */
  auth: Auth;
  journal: Journal;
  registry: Registry;
  scheduler: Scheduler;
  hub: Hub;
  metrics: Metrics;
  watch: TaskWatch;
  webhooks: Webhooks;
  /** Prepares agent modules for nodes (GET /v1/modules/:sha256?prepared=…) on a worker thread. */
  preparer: ModulePreparer;
  clock: Clock;
  heartbeatIntervalMs: number;
  /** Spans (server/tracing.ts); null when tracing is off: every call site checks. */
  tracing: Tracing | null;
  /** Maintenance mode (PUT /v1/maintenance): in memory, sets coordinator_maintenance. */
  maintenance: Maintenance;
  /** True once close() began: new tasks are refused with SHUTTING_DOWN. */
  shuttingDown(): boolean;
}
