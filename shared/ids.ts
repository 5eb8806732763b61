import { AppError } from './errors';

declare const brand: unique symbol;
/** A string that has been checked to be an id of one kind; kinds cannot be mixed up. */
export type Brand<T, B extends string> = T & { readonly [brand]: B };

export type TaskId = Brand<string, 'TaskId'>;
export type NodeId = Brand<string, 'NodeId'>;
export type LeaseId = Brand<string, 'LeaseId'>;
/** Lower-case hex SHA-256 of a module's bytes. */
export type ModuleHash = Brand<string, 'ModuleHash'>;

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const SHA256 = /^[0-9a-f]{64}$/;
/** Agent and model names: what a URL path segment carries without escaping. */
export const NAME_PATTERN = '^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$';
const NAME = new RegExp(NAME_PATTERN);

function uuid(): string {
  return globalThis.crypto.randomUUID();
}

export const newTaskId = (): TaskId => uuid() as TaskId;
export const newNodeId = (): NodeId => uuid() as NodeId;
export const newLeaseId = (): LeaseId => uuid() as LeaseId;

function parseWith<T extends string>(re: RegExp, what: string, value: unknown): T {
  if (typeof value !== 'string' || !re.test(value)) {
    throw new AppError('INVALID_ID', `${what} must match ${re.source}; got ${JSON.stringify(value)?.slice(0, 80)}.`);
  }
  return value as T;
}

export const parseTaskId = (v: unknown): TaskId => parseWith<TaskId>(UUID, 'A task id', v);
export const parseNodeId = (v: unknown): NodeId => parseWith<NodeId>(UUID, 'A node id', v);
export const parseLeaseId = (v: unknown): LeaseId => parseWith<LeaseId>(UUID, 'A lease id', v);
export const parseModuleHash = (v: unknown): ModuleHash => parseWith<ModuleHash>(SHA256, 'A module hash', v);
export const parseName = (v: unknown): string => parseWith<string>(NAME, 'A name', v);
