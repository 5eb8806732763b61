/**
 * The page's entry: builds the agent pool, joins the coordinator this page was
 * served from (or `?coordinator=`), and shows the node.
 *
 * Query parameters: `coordinator` (http(s)://host:port; a comma list names other coordinators of the same pool,
 * tried in turn when the connection is lost), `workers` (pool size), `name`,
 * `perWorker` (agent tasks held per worker, running plus queued; see NodeClientOptions.tasksPerWorker),
 * `queueDepth` (agent tasks held beyond those running; overrides perWorker),
 * `flushMs` (how long results gather before they are sent; see ResultBatcher),
 * `inference` (`0`: agent tasks only), `backends` (comma list of engine, wasm, webgpu; default engine,wasm),
 * `sequences` (generate tasks decoded at once), `choose` (`fastest` or `first`), `threads` (onnxruntime-web
 * WASM threads; default 2 when cross-origin isolated), `inferenceMemoryMB` (the
 * budget of loaded models and their KV caches).
 */
import { AgentPool } from '../worker';
import { RemoteInference, type InferenceWorkerConfig } from '../worker/inference';
import './elements/exec-node-app';
import { createHandle } from './handle';
import { NodeClient, coordinatorUrls, indexedDbCheckpoints, probeWebGpu } from './node';

const params = new URLSearchParams(location.search);
const [primary, ...others] = (params.get('coordinator') ?? '').split(',').map((u) => u.trim()).filter(Boolean);
const urls = coordinatorUrls(location.href, primary);
const alsoUrls = others.slice(0, 16).map((u) => coordinatorUrls(location.href, u).httpBase);
const requested = Number(params.get('workers'));
const size =
  Number.isInteger(requested) && requested > 0
    ? Math.min(requested, 64)
    : Math.min(8, Math.max(2, navigator.hardwareConcurrency || 2));

/** The inference runtime in its own worker; null when turned off or when it cannot start (the node still runs agents). */
async function startInference(): Promise<RemoteInference | null> {
  if (params.get('inference') === '0') return null;
  const backends = (params.get('backends') ?? 'engine,wasm').split(',').filter((b): b is 'engine' | 'wasm' | 'webgpu' => b === 'engine' || b === 'wasm' || b === 'webgpu');
  const cfg: InferenceWorkerConfig = { base: urls.httpBase, backends };
  const seq = Number(params.get('sequences'));
  if (Number.isInteger(seq) && seq > 0) cfg.maxSequences = Math.min(seq, 256);
  const threads = Number(params.get('threads'));
  if (Number.isInteger(threads) && threads > 0) cfg.numThreads = Math.min(threads, 16);
  const budget = Number(params.get('inferenceMemoryMB'));
  if (budget > 0) cfg.memoryBudgetBytes = Math.round(budget * 1024 * 1024);
  const choose = params.get('choose');
  if (choose === 'fastest' || choose === 'first') cfg.choose = choose;
  const worker = new Worker(new URL('../worker/inference/inference-worker.ts', import.meta.url), { type: 'module', name: JSON.stringify(cfg) });
  try {
    return await RemoteInference.connect(worker);
  } catch (err) {
    console.error('inference worker failed to start; this node runs agent tasks only', err);
    worker.terminate();
    return null;
  }
}

const pool = new AgentPool({ size });
const inference = await startInference();
const client = new NodeClient({
  url: urls.httpBase,
  alsoUrls,
  runtime: pool,
  ...(inference ? { inference } : {}),
  name: params.get('name') ?? `browser-${navigator.platform || 'node'}`,
  gpu: () => probeWebGpu(),
  tasksPerWorker: Number(params.get('perWorker')) || undefined,
  queueDepth: params.get('queueDepth') ? Number(params.get('queueDepth')) : undefined,
  resultDelayMs: params.has('flushMs') ? Number(params.get('flushMs')) : undefined,
  // The join token (a token with the node role) of a coordinator run with --auth: npm start prints the link.
  token: params.get('token') ?? undefined,
  // Training checkpoints also go to this browser's IndexedDB: a reloaded page resumes without downloading them.
  checkpoints: indexedDbCheckpoints(),
});

const app = document.createElement('exec-node-app');
app.client = client;
app.inference = inference;
document.body.append(app);
window.__execNode = createHandle(client, pool, (n) => new AgentPool({ size: n }), inference);

addEventListener('pagehide', () => client.close());
void client.start();
