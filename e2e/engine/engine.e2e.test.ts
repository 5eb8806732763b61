/**
 * The engine in a Web Worker in headless Chromium (SwiftShader WebGPU) against onnxruntime-web on
 * the same ONNX in the same page: logits agree within 1e-4 with the WASM EP (fp32 reference) and
 * within 1e-3 with the WebGPU EP when it runs here; a few LoRA steps in the worker lower the loss.
 */
import assert from 'node:assert/strict';
import { after, before, it } from 'node:test';
import { DEMO_QA, qaJsonl } from '../../tools/finetune';
import { callPage, openEnginePage, type EnginePage } from './harness';

let ep: EnginePage;

before(async () => {
  ep = await openEnginePage({ seed: 5, matmulSize: 64 });
  await callPage(ep.page, 'load', ep.modelUrl);
});

after(async () => {
  await ep?.close();
});

const ROWS = [
  [1, 40, 41, 300, 7, 99, 2, 383, 12, 64],
  [3, 5, 6, 7, 8, 9, 10, 11, 200, 201],
];

it('engine logits (worker) equal onnxruntime-web WASM EP logits (page) within 1e-4', async () => {
  const prompt = await callPage(ep.page, 'prompt', 'What colour is the robot?');
  const ort = await callPage(ep.page, 'loadOrt', ep.modelUrl, 'wasm');
  assert.equal(ort.ep, 'wasm');
  for (const ids of [ROWS, [prompt]]) {
    const c = await callPage(ep.page, 'compareLogits', ids);
    assert.ok(c.engineFinite);
    assert.equal(c.size, ids.length * ids[0]!.length * 384);
    assert.ok(c.maxAbsDiff <= 1e-4, `max |Δ| ${c.maxAbsDiff}`);
  }
});

it('and onnxruntime-web WebGPU EP logits within 1e-3 (its kernels round differently), when that EP runs here', async (t) => {
  const ort = await callPage(ep.page, 'loadOrt', ep.modelUrl, 'webgpu');
  if (ort.ep !== 'webgpu') {
    t.skip(`onnxruntime-web WebGPU EP failed here: ${ort.fallbackReason}`);
    return;
  }
  const c = await callPage(ep.page, 'compareLogits', ROWS);
  assert.ok(c.maxAbsDiff <= 1e-3, `max |Δ| ${c.maxAbsDiff}`);
});

it('a few LoRA training steps inside the worker lower the loss', async () => {
  const r = await callPage(ep.page, 'train', {
    jsonl: qaJsonl([0, 2, 5, 7, 8, 9].map((i) => DEMO_QA[i]!)),
    steps: 6,
    lr: 1e-2,
    seq: 36,
    batch: 6,
    rank: 8,
    alpha: 16,
    targets: ['q_proj', 'v_proj', 'o_proj', 'down_proj'],
  });
  assert.equal(r.stepLosses.length, 6);
  assert.ok(r.stepLosses.every(Number.isFinite));
  assert.ok(r.lossAfter < 0.9 * r.lossBefore, `loss ${r.lossBefore} → ${r.lossAfter}`);
  assert.ok(r.stepLosses[5]! < r.stepLosses[0]!, `step losses ${r.stepLosses.join(', ')}`);
  assert.deepEqual(ep.errors, []);
});
