/**
 * The page's entry: builds the agent pool, joins the coordinator this page was
 * served from (or `?coordinator=`), and shows the node.
 *
 * Query parameters: `coordinator` (http(s)://host:port), `workers` (pool size), `name`,
 * `perWorker` (agent tasks held per worker, running plus queued; see NodeClientOptions.tasksPerWorker),
 * `queueDepth` (agent tasks held beyond those running; overrides perWorker),
 * `flushMs` (how long results gather before they are sent; see ResultBatcher).
 */
import { AgentPool } from '../worker';
import './elements/exec-node-app';
import { createHandle } from './handle';
import { NodeClient, coordinatorUrls, probeWebGpu } from './node';

const params = new URLSearchParams(location.search);
const urls = coordinatorUrls(location.href, params.get('coordinator'));
const requested = Number(params.get('workers'));
const size =
  Number.isInteger(requested) && requested > 0
    ? Math.min(requested, 64)
    : Math.min(8, Math.max(2, navigator.hardwareConcurrency || 2));

const pool = new AgentPool({ size });
const client = new NodeClient({
  url: urls.httpBase,
  runtime: pool,
  name: params.get('name') ?? `browser-${navigator.platform || 'node'}`,
  gpu: () => probeWebGpu(),
  tasksPerWorker: Number(params.get('perWorker')) || undefined,
  queueDepth: params.get('queueDepth') ? Number(params.get('queueDepth')) : undefined,
  resultDelayMs: params.has('flushMs') ? Number(params.get('flushMs')) : undefined,
});

const app = document.createElement('exec-node-app');
app.client = client;
document.body.append(app);
window.__execNode = createHandle(client, pool, (n) => new AgentPool({ size: n }));

addEventListener('pagehide', () => client.close());
void client.start();
