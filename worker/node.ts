/**
 * Node-only entry points of `worker/`: the parts that need Node's modules and so
 * stay out of the browser bundles. A GPU through Dawn (the `webgpu` package) for
 * the engine, and agent workers on worker threads for the agent pool.
 */
export { createNodeGpuContext, nodeGpu } from './engine/node-gpu';
export { NodeThreadWorker, sameThreadWorker } from './agents/testing/node-workers';
export { folderSource } from './inference/folder-source';
