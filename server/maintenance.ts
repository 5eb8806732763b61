/**
 * Maintenance mode: an operator says the pool is under planned work (`PUT /v1/maintenance`), the
 * `coordinator_maintenance` gauge turns 1 and every alert rule is silenced while it is. Kept in
 * memory only: a restarted coordinator starts out of maintenance.
 */
import { Type } from '@sinclair/typebox';

export interface MaintenanceState {
  on: boolean;
  /** What the operator said, or null. */
  reason: string | null;
  /** When the current state began (ms since the epoch): the last change, or the coordinator's start. */
  since: number;
}

export class Maintenance {
  #state: MaintenanceState;

  constructor(now: number) {
    this.#state = { on: false, reason: null, since: now };
  }

  get on(): boolean {
    return this.#state.on;
  }

  /** Sets the mode; `since` moves only when `on` changes (a new reason alone keeps it). */
  set(on: boolean, reason: string | null, now: number): MaintenanceState {
    this.#state = { on, reason, since: on === this.#state.on ? this.#state.since : now };
    return this.view();
  }

  view(): MaintenanceState {
    return { ...this.#state };
  }
}

/** Body of `PUT /v1/maintenance`. */
export const MaintenanceSchema = Type.Object(
  {
    on: Type.Boolean({ description: 'true to enter maintenance mode (alerts silenced), false to leave it' }),
    reason: Type.Optional(Type.String({ maxLength: 500, description: 'a text of at most 500 characters saying why' })),
  },
  { additionalProperties: false },
);
