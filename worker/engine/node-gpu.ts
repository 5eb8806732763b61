/**
 * WebGPU in Node: Dawn through the npm package `webgpu`. Only Node code (tests,
 * CLIs, benches) imports this file; the engine itself takes a `GPU` object.
 * Needs libvulkan1 and VK_ICD_FILENAMES pointing at a Vulkan driver
 * (scripts/test.ts sets SwiftShader's).
 */
import { create, globals } from 'webgpu';
import { GpuContext, type GpuContextOptions } from './context';

let gpu: GPU | undefined;

/** The process-wide `GPU` object from Dawn; installs the WebGPU globals (GPUBufferUsage…) once. */
export function nodeGpu(): GPU {
  if (!gpu) {
    Object.assign(globalThis, globals);
    gpu = create([]);
  }
  return gpu;
}

/** A GpuContext on Node's WebGPU. */
export function createNodeGpuContext(options: Omit<GpuContextOptions, 'gpu'> = {}): Promise<GpuContext> {
  return GpuContext.create({ ...options, gpu: nodeGpu() });
}
