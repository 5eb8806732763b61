// Boots a TypeScript entry inside a Node worker thread (tsx's loader does not follow --import into workers on Node 20).
import { workerData } from 'node:worker_threads';
import { tsImport } from 'tsx/esm/api';

await tsImport(workerData.entry, import.meta.url);
