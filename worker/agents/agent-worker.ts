/**
 * The Web Worker entry of the agent runtime (the pool starts it with
 * `new Worker(new URL('./agent-worker.ts', import.meta.url), { type: 'module' })`).
 * Import ./worker-api, never this file: importing it serves the API on the current worker.
 */
import type { Endpoint } from 'comlink';
import { exposeAgentWorker } from './worker-api';

exposeAgentWorker(globalThis as unknown as Endpoint);
