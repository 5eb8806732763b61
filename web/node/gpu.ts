/** Probes WebGPU once, for the node's capabilities and the page. */
import type { WebGpuInfo } from '../../shared';

export interface GpuProbe {
  /** What the coordinator is told; null when there is no adapter. */
  info: WebGpuInfo | null;
  /** Every numeric adapter limit, for the page. */
  limits: Record<string, number>;
  /** Why there is no adapter, said so a person can fix it. */
  reason: string | null;
}

const NO_API =
  'This browser exposes no navigator.gpu. Use a recent Chromium; headless Chromium needs --enable-unsafe-webgpu.';
const NO_ADAPTER =
  'navigator.gpu.requestAdapter() returned null. In Chromium pass --enable-unsafe-webgpu (and check chrome://gpu).';

/** `gpu` is injectable so Node code can pass the `webgpu` package's GPU. */
export async function probeWebGpu(gpu: GPU | undefined = globalThis.navigator?.gpu): Promise<GpuProbe> {
  if (!gpu) return { info: null, limits: {}, reason: NO_API };
  let adapter: GPUAdapter | null;
  try {
    adapter = await gpu.requestAdapter();
  } catch (err) {
    return { info: null, limits: {}, reason: `requestAdapter() failed: ${err instanceof Error ? err.message : String(err)}` };
  }
  if (!adapter) return { info: null, limits: {}, reason: NO_ADAPTER };
  const limits: Record<string, number> = {};
  // GPUSupportedLimits keeps its values as prototype getters, so walk the prototype.
  for (const key in adapter.limits) {
    const v = (adapter.limits as unknown as Record<string, unknown>)[key];
    if (typeof v === 'number') limits[key] = v;
  }
  const ai = adapter.info as GPUAdapterInfo & { isFallbackAdapter?: boolean };
  const legacy = adapter as GPUAdapter & { isFallbackAdapter?: boolean };
  const info: WebGpuInfo = {
    vendor: ai?.vendor ?? '',
    architecture: ai?.architecture ?? '',
    description: ai?.description || ai?.device || '',
    isFallbackAdapter: Boolean(ai?.isFallbackAdapter ?? legacy.isFallbackAdapter),
    features: [...adapter.features].map(String).sort(),
    maxBufferSize: adapter.limits.maxBufferSize,
    maxStorageBufferBindingSize: adapter.limits.maxStorageBufferBindingSize,
  };
  return { info, limits, reason: null };
}
