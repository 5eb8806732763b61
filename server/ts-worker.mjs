// Boots a TypeScript entry (workerData.entry, a file URL) inside a Node worker thread: tsx's loader does not
// follow --import into worker threads on Node 20. Used by server/otlp-worker.ts.
import { workerData } from 'node:worker_threads';
import { tsImport } from 'tsx/esm/api';

await tsImport(workerData.entry, import.meta.url);
