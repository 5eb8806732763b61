/** The page's public face for Node-side code (launcher, e2e tests, benchmark): types only. */
export type { BenchRequest, ExecNodeHandle } from './handle';
export type { ConnectionState, GpuProbe, NodeStats, PoolBenchResult, RunningTask, TaskEntry } from './node';
