/** The page script of engine.html: the engine in a Web Worker (comlink), onnxruntime-web here. */
import { wrap } from 'comlink';
import type { EngineProbe } from './engine-probe';
import { configureOrt, OrtProbe } from './ort-probe';
import type { EnginePageApi } from './page-api';

configureOrt('/node_modules/onnxruntime-web/dist/');
const engine = wrap<EngineProbe>(new Worker(new URL('./engine-worker.ts', import.meta.url), { type: 'module' }));
const ortProbe = new OrtProbe();

const api: EnginePageApi = {
  load: (modelUrl) => engine.init(new URL(modelUrl, location.href).href),
  async loadOrt(modelUrl, ep) {
    const base = new URL(modelUrl, location.href);
    const config = (await (await fetch(new URL('config.json', base))).json()) as Record<string, number>;
    const info = { numLayers: config.num_hidden_layers!, numKvHeads: config.num_key_value_heads!, headDim: config.head_dim! };
    const got = await ortProbe.load(new URL('onnx/model.onnx', base).href, info, ep);
    return { ep: got, fallbackReason: ortProbe.fallbackReason };
  },
  async compareLogits(ids) {
    const [mine, ref] = await Promise.all([engine.logits(ids), ortProbe.logits(ids)]);
    if (mine.length !== ref.length) throw new Error(`engine gave ${mine.length} logits, onnxruntime-web ${ref.length}`);
    let d = 0;
    let finite = true;
    for (let i = 0; i < mine.length; i++) {
      if (!Number.isFinite(mine[i]!)) finite = false;
      d = Math.max(d, Math.abs(mine[i]! - ref[i]!));
    }
    return { maxAbsDiff: d, size: mine.length, engineFinite: finite };
  },
  prompt: (question) => engine.prompt(question),
  train: (req) => engine.train(req),
  async bench({ matmulUrl, size, rows, seqLen, runs }) {
    const engineMatmul = await engine.benchMatmul(size, runs);
    const ortMatmul = await ortProbe.benchMatmul(new URL(matmulUrl, location.href).href, size, runs);
    const engineModel = await engine.benchModel(rows, seqLen, runs);
    const ids = await engine.benchInput(rows, seqLen);
    const ortForward = { ...(await ortProbe.benchForward(ids, runs)), ep: ortProbe.ep };
    return { engineMatmul, ortMatmul, engineModel, ortForward };
  },
};
window.engineE2E = api;
