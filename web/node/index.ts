export { NodeClient, type NodeClientOptions, type NodeStats, type SocketLike } from './client';
export type { ConnectionState, NodeEvent, NodeListener, RunningTask, TaskEntry, TrainingCurve } from './events';
export { probeWebGpu, type GpuProbe } from './gpu';
export { ModuleLoader, type FetchLike } from './modules';
export { BlobCache, configureBlobs, fetchBlob, blobHex, DEFAULT_MAX_BLOB_CACHE_BYTES, type BlobCacheOptions } from './blobs';
export { ResultBatcher, type ResultBatcherOptions } from './result-batcher';
export { backoffDelay, DEFAULT_BACKOFF, type BackoffOptions } from './backoff';
export { coordinatorUrls, NODE_SOCKET_PATH, type CoordinatorUrls } from './url';
export { benchPool, type PoolBenchOptions, type PoolBenchResult } from './pool-bench';
