/** WASI preview1 for agents: the shim with its gaps filled (see wasi.ts). */
export { AgentWasi, type AgentWasiOptions } from './wasi';
export { Metadata, Symlink, MAX_SYMLINKS, type Times } from './fs';
export { blockingMode } from './block';
export { MountTable, Quota, mountTree, collectFiles, type MountOptions } from './mounts';
