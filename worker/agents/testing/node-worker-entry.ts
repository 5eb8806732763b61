/** The agent worker's Node home: the same API, served on the worker thread's parent port. */
import { parentPort } from 'node:worker_threads';
import type { Endpoint } from 'comlink';
import { exposeAgentWorker } from '../worker-api';

const port = parentPort;
if (!port) throw new Error('node-worker-entry must run in a worker thread');

const listeners = new Map<EventListenerOrEventListenerObject, (data: unknown) => void>();
const endpoint: Endpoint = {
  postMessage: (message: unknown, transfer?: Transferable[]) => port.postMessage(message, transfer as never),
  addEventListener: (_type: string, l: EventListenerOrEventListenerObject) => {
    const h = (data: unknown) => ('handleEvent' in l ? l.handleEvent({ data } as MessageEvent) : l({ data } as MessageEvent));
    listeners.set(l, h);
    port.on('message', h);
  },
  removeEventListener: (_type: string, l: EventListenerOrEventListenerObject) => {
    const h = listeners.get(l);
    if (h) port.off('message', h);
    listeners.delete(l);
  },
};
exposeAgentWorker(endpoint);
