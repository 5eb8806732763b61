/**
 * GpuContext: one WebGPU device and everything the kernels share on it — limits
 * and features, a buffer pool, a pipeline cache, a uniform arena, the command
 * encoder that ops record into, error scopes, device-lost handling and a lock.
 *
 * Ops record dispatches into one open compute pass; `flush()` submits. Reading a
 * tensor back flushes first. Buffers released to the pool can be reused by later
 * commands at once: the queue runs commands in order.
 */
import { AppError } from '../../shared';

/** Element types: f16 only for weights on devices with shader-f16 (two per 32-bit word). */
export type DType = 'f32' | 'u32' | 'f16';

/** A matmul tiling: `register` = a TM×TN block per thread, no workgroup memory; `tiled` = BM×BN tiles staged through workgroup memory. */
export interface MatmulConfig {
  name: string;
  kind: 'register' | 'tiled';
  /** Threads per workgroup along N (x) and M (y). */
  wgX: number;
  wgY: number;
  /** Outputs per thread along M and N. */
  tm: number;
  tn: number;
  /** K step staged in workgroup memory (tiled only). */
  bk: number;
}

export const MATMUL_CONFIGS: readonly MatmulConfig[] = [
  { name: 'reg4x4-8x8', kind: 'register', wgX: 8, wgY: 8, tm: 4, tn: 4, bk: 0 },
  { name: 'reg4x4-16x16', kind: 'register', wgX: 16, wgY: 16, tm: 4, tn: 4, bk: 0 },
  { name: 'tiled64-bk16', kind: 'tiled', wgX: 16, wgY: 16, tm: 4, tn: 4, bk: 16 },
  { name: 'tiled32-bk16', kind: 'tiled', wgX: 8, wgY: 8, tm: 4, tn: 4, bk: 16 },
];

export interface GpuContextOptions {
  /** `navigator.gpu` in a browser, `nodeGpu()` from node-gpu.ts in Node. */
  gpu?: GPU;
  powerPreference?: GPUPowerPreference;
  /** Force a matmul config by name; otherwise chosen per adapter (fallback adapters get a register-blocked one). */
  matmulConfig?: string;
  /** Row reductions (norms, softmax, loss): 'serial' on CPU adapters, 'workgroup' on GPUs unless forced. */
  rowMode?: 'workgroup' | 'serial';
}

export interface GpuInfo {
  vendor: string;
  architecture: string;
  description: string;
  isFallbackAdapter: boolean;
  features: string[];
  maxStorageBufferBindingSize: number;
  maxBufferSize: number;
  maxComputeWorkgroupStorageSize: number;
  maxComputeInvocationsPerWorkgroup: number;
  matmulConfig: string;
  rowMode: 'workgroup' | 'serial';
}

/** A GPU buffer with a shape. `release()` gives pooled buffers back for reuse. */
export class Tensor {
  readonly size: number;
  #released = false;
  constructor(
    readonly ctx: GpuContext,
    readonly buffer: GPUBuffer,
    readonly shape: readonly number[],
    readonly dtype: DType,
    readonly pooled: boolean,
    readonly generation: number,
  ) {
    this.size = shape.reduce((a, b) => a * b, 1);
  }
  get bytes(): number {
    return this.dtype === 'f16' ? Math.ceil((this.size * 2) / 4) * 4 : this.size * 4;
  }
  get released(): boolean {
    return this.#released;
  }
  release(): void {
    if (this.#released) return;
    this.#released = true;
    this.ctx.releaseBuffer(this.buffer, this.pooled, this.generation);
  }
}

const UNIFORM_ALIGN = 256;
const ARENA_BYTES = 64 * 1024;
const MIN_POOL_BYTES = 256;

/** Pool size class: powers of two split in quarters, so at most 25 % waste. */
function sizeClass(bytes: number): number {
  const b = Math.max(MIN_POOL_BYTES, bytes);
  const p = 2 ** Math.floor(Math.log2(b));
  if (p === b) return b;
  const q = p / 4;
  return Math.ceil(b / q) * q;
}

interface Arena {
  buffer: GPUBuffer;
  data: Uint8Array;
  used: number;
}

/** "kernel < caller < caller's caller" from the stack (profiling only). */
function callerLabel(): string {
  const lines = (new Error().stack ?? '').split('\n').slice(3, 7);
  const names = lines.map((l) => /at (?:async )?([^\s(]+)/.exec(l.trim())?.[1] ?? '?').filter((n) => !n.startsWith('file:') && n !== 'new');
  return names.slice(0, 3).join(' < ');
}

/** A promise-chain mutex: one job on the device at a time. */
class Lock {
  #tail: Promise<void> = Promise.resolve();
  async run<T>(fn: () => Promise<T>): Promise<T> {
    let release!: () => void;
    const next = new Promise<void>((r) => (release = r));
    const prev = this.#tail;
    this.#tail = prev.then(() => next);
    await prev;
    try {
      return await fn();
    } finally {
      release();
    }
  }
}

export class GpuContext {
  #gpu: GPU;
  #options: GpuContextOptions;
  #adapter!: GPUAdapter;
  #device!: GPUDevice;
  #generation = 0;
  #lost: GPUDeviceLostInfo | null = null;
  #destroyedByUs = false;
  #pool = new Map<number, GPUBuffer[]>();
  #pipelines = new Map<string, GPUComputePipeline>();
  #arenas: Arena[] = [];
  #arenaIndex = 0;
  #encoder: GPUCommandEncoder | null = null;
  #pass: GPUComputePassEncoder | null = null;
  #timing: { querySet: GPUQuerySet; resolve: GPUBuffer; read: GPUBuffer; begun: boolean } | null = null;
  #profile: { querySet: GPUQuerySet; capacity: number; labels: string[]; workgroups: number[][] } | null = null;
  #lock = new Lock();
  #matmul!: MatmulConfig;
  /** How row kernels reduce; see kernels.ts RowMode. */
  rowMode: 'workgroup' | 'serial' = 'workgroup';
  #uncaptured: string | null = null;
  #pendingDestroy: GPUBuffer[] = [];
  /** Called when the device is lost (not when destroy() was called): show it, then `reset()` and reload. */
  onLost: ((info: GPUDeviceLostInfo) => void) | null = null;
  /** Buffers in use (not in the pool), for tests and leak checks. */
  liveBuffers = 0;

  private constructor(gpu: GPU, options: GpuContextOptions) {
    this.#gpu = gpu;
    this.#options = options;
  }

  static async create(options: GpuContextOptions = {}): Promise<GpuContext> {
    const gpu = options.gpu ?? (typeof navigator !== 'undefined' ? navigator.gpu : undefined);
    if (!gpu) {
      throw new AppError(
        'WEBGPU_UNAVAILABLE',
        'WebGPU is not available here. In Chromium pass --enable-unsafe-webgpu (or use a browser with WebGPU); in Node import node-gpu.ts and set VK_ICD_FILENAMES to a Vulkan driver (e.g. /usr/lib/chromium/vk_swiftshader_icd.json).',
      );
    }
    const ctx = new GpuContext(gpu, options);
    await ctx.#acquire();
    return ctx;
  }

  async #acquire(): Promise<void> {
    const adapter = await this.#gpu.requestAdapter(
      this.#options.powerPreference ? { powerPreference: this.#options.powerPreference } : undefined,
    );
    if (!adapter) {
      throw new AppError(
        'WEBGPU_UNAVAILABLE',
        'No WebGPU adapter was found. In Chromium pass --enable-unsafe-webgpu; in Node set VK_ICD_FILENAMES to a Vulkan driver (e.g. /usr/lib/chromium/vk_swiftshader_icd.json) and install libvulkan1.',
      );
    }
    const wanted: GPUFeatureName[] = ['timestamp-query', 'shader-f16'];
    const requiredFeatures = wanted.filter((f) => adapter.features.has(f));
    const l = adapter.limits;
    const requiredLimits: Record<string, number> = {
      maxStorageBufferBindingSize: l.maxStorageBufferBindingSize,
      maxBufferSize: l.maxBufferSize,
      maxComputeWorkgroupStorageSize: l.maxComputeWorkgroupStorageSize,
      maxComputeInvocationsPerWorkgroup: l.maxComputeInvocationsPerWorkgroup,
      maxComputeWorkgroupSizeX: l.maxComputeWorkgroupSizeX,
      maxComputeWorkgroupSizeY: l.maxComputeWorkgroupSizeY,
      maxStorageBuffersPerShaderStage: l.maxStorageBuffersPerShaderStage,
      maxComputeWorkgroupsPerDimension: l.maxComputeWorkgroupsPerDimension,
    };
    let device: GPUDevice;
    try {
      device = await adapter.requestDevice({ requiredFeatures, requiredLimits });
    } catch (err) {
      throw new AppError('WEBGPU_UNAVAILABLE', `The WebGPU adapter refused a device: ${String(err)}. Close other GPU tabs or restart the browser.`, undefined, { cause: err });
    }
    this.#adapter = adapter;
    this.#device = device;
    this.#generation++;
    this.#lost = null;
    this.#destroyedByUs = false;
    this.#uncaptured = null;
    const gen = this.#generation;
    void device.lost.then((info) => {
      if (gen !== this.#generation) return;
      this.#lost = info;
      if (!this.#destroyedByUs) this.onLost?.(info);
    });
    device.onuncapturederror = (ev: GPUUncapturedErrorEvent) => {
      this.#uncaptured = ev.error.message;
    };
    const forced = this.#options.matmulConfig ? MATMUL_CONFIGS.find((c) => c.name === this.#options.matmulConfig) : undefined;
    // On CPU adapters register blocking without workgroup memory measured fastest, and barriers are
    // dear; real GPUs want tiles and workgroup reductions.
    const cpu = this.isCpuAdapter;
    this.#matmul = forced ?? MATMUL_CONFIGS[cpu ? 0 : 2]!;
    this.rowMode = this.#options.rowMode ?? (cpu ? 'serial' : 'workgroup');
  }

  /** SwiftShader, llvmpipe and other software adapters. */
  get isCpuAdapter(): boolean {
    const info = this.#adapter.info as GPUAdapterInfo & { isFallbackAdapter?: boolean };
    return info.isFallbackAdapter === true || /swiftshader|llvmpipe|lavapipe/i.test(`${info.description} ${info.vendor} ${info.architecture}`);
  }

  get device(): GPUDevice {
    this.checkAlive();
    return this.#device;
  }
  get generation(): number {
    return this.#generation;
  }
  get limits(): GPUSupportedLimits {
    return this.#device.limits;
  }
  get features(): ReadonlySet<string> {
    return this.#device.features;
  }
  get hasF16(): boolean {
    return this.#device.features.has('shader-f16');
  }
  get hasTimestamps(): boolean {
    return this.#device.features.has('timestamp-query');
  }
  get matmulConfig(): MatmulConfig {
    return this.#matmul;
  }
  set matmulConfig(c: MatmulConfig) {
    this.#matmul = c;
  }
  /** Largest tensor (bytes) one binding can hold on this device. */
  get maxTensorBytes(): number {
    return Math.min(this.#device.limits.maxStorageBufferBindingSize, this.#device.limits.maxBufferSize);
  }

  info(): GpuInfo {
    const i = this.#adapter.info as GPUAdapterInfo & { isFallbackAdapter?: boolean };
    const l = this.#device.limits;
    return {
      vendor: i.vendor,
      architecture: i.architecture,
      description: i.description,
      isFallbackAdapter: i.isFallbackAdapter === true,
      features: [...this.#device.features].map(String).sort(),
      maxStorageBufferBindingSize: l.maxStorageBufferBindingSize,
      maxBufferSize: l.maxBufferSize,
      maxComputeWorkgroupStorageSize: l.maxComputeWorkgroupStorageSize,
      maxComputeInvocationsPerWorkgroup: l.maxComputeInvocationsPerWorkgroup,
      matmulConfig: this.#matmul.name,
      rowMode: this.rowMode,
    };
  }

  /** Throws GPU_DEVICE_LOST when the device is gone (lost or destroyed); `reset()` gets a new one. */
  checkAlive(): void {
    if (this.#lost || this.#destroyedByUs) {
      const reason = this.#lost ? `${this.#lost.reason}: ${this.#lost.message}` : 'destroyed';
      throw new AppError('GPU_DEVICE_LOST', `The GPU device was lost (${reason}). Call reset() on the GPU context, then load the model again.`, {
        reason: this.#lost?.reason ?? 'destroyed',
      });
    }
  }

  get isLost(): boolean {
    return this.#lost !== null || this.#destroyedByUs;
  }

  /** Drops everything tied to the old device and acquires a new adapter and device. */
  async reset(): Promise<void> {
    this.#dropDeviceState();
    this.#destroyedByUs = true; // the old device's lost promise is ours, not news
    try {
      this.#device.destroy();
    } catch {
      // already gone
    }
    await this.#acquire();
  }

  /** Frees the device for good. */
  destroy(): void {
    this.#dropDeviceState();
    this.#destroyedByUs = true;
    this.#device.destroy();
  }

  #dropDeviceState(): void {
    this.#pass = null;
    this.#encoder = null;
    this.#timing = null;
    for (const list of this.#pool.values()) for (const b of list) b.destroy();
    this.#pool.clear();
    this.#pipelines.clear();
    for (const a of this.#arenas) a.buffer.destroy();
    this.#arenas = [];
    this.#arenaIndex = 0;
    this.#pendingDestroy = [];
    this.liveBuffers = 0;
  }

  /** Runs one job with the device to itself; GPU OOM and validation errors inside it become typed errors. */
  withLock<T>(fn: () => Promise<T>): Promise<T> {
    return this.#lock.run(async () => {
      this.checkAlive();
      const device = this.#device;
      device.pushErrorScope('validation');
      device.pushErrorScope('out-of-memory');
      let result: T;
      try {
        result = await fn();
      } catch (err) {
        // Drop half-recorded work, unwind the scopes, and prefer a device-lost error over what the op threw.
        this.#discardRecorded();
        await device.popErrorScope().catch(() => null);
        await device.popErrorScope().catch(() => null);
        if (!(err instanceof AppError) && !this.isLost) await this.#lostSoon(device);
        if (this.isLost) this.checkAlive();
        throw err;
      }
      const oom = await device.popErrorScope().catch(() => null);
      const invalid = await device.popErrorScope().catch(() => null);
      this.checkAlive();
      if (oom) throw new AppError('GPU_OUT_OF_MEMORY', `The GPU ran out of memory: ${oom.message}. Use a smaller batch, sequence length or model.`);
      if (invalid) throw new AppError('INTERNAL', `WebGPU validation error: ${invalid.message}`);
      return result;
    });
  }

  /** A raw WebGPU failure often means the device just died; its lost promise may lag a little. */
  async #lostSoon(device: GPUDevice): Promise<void> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([device.lost, new Promise<void>((r) => (timer = setTimeout(r, 500)))]);
    clearTimeout(timer);
  }

  #discardRecorded(): void {
    this.#pass = null;
    this.#encoder = null;
    this.#timing = null;
    for (const b of this.#pendingDestroy) b.destroy();
    this.#pendingDestroy = [];
    for (const a of this.#arenas) a.used = 0;
    this.#arenaIndex = 0;
  }

  // ---- buffers ----

  #createBuffer(bytes: number, usage: number): GPUBuffer {
    this.checkAlive();
    if (bytes > this.maxTensorBytes) {
      throw new AppError('MODEL_TOO_LARGE', `A tensor of ${bytes} bytes exceeds this GPU's limit of ${this.maxTensorBytes} bytes per buffer. Use a smaller model or shorter sequences.`, {
        bytes,
        limit: this.maxTensorBytes,
      });
    }
    return this.#device.createBuffer({ size: bytes, usage });
  }

  static readonly STORAGE_USAGE = 0x80 | 0x04 | 0x08; // STORAGE | COPY_SRC | COPY_DST

  /** An uninitialised tensor (pooled by default: contents are whatever the last user left). */
  tensor(shape: readonly number[], dtype: DType = 'f32', pooled = true): Tensor {
    const size = shape.reduce((a, b) => a * b, 1);
    const bytes = Math.max(4, dtype === 'f16' ? Math.ceil((size * 2) / 4) * 4 : size * 4);
    let buffer: GPUBuffer | undefined;
    if (pooled) {
      const cls = sizeClass(bytes);
      buffer = this.#pool.get(cls)?.pop() ?? this.#createBuffer(cls, GpuContext.STORAGE_USAGE);
    } else {
      buffer = this.#createBuffer(Math.ceil(bytes / 4) * 4, GpuContext.STORAGE_USAGE);
    }
    this.liveBuffers++;
    return new Tensor(this, buffer, shape, dtype, pooled, this.#generation);
  }

  /** A tensor filled with zeros. */
  zeros(shape: readonly number[], dtype: DType = 'f32', pooled = true): Tensor {
    const t = this.tensor(shape, dtype, pooled);
    this.#endPass();
    this.#enc().clearBuffer(t.buffer, 0, t.bytes);
    return t;
  }

  /** Uploads data; weights should pass pooled=false (exact-size buffers that live as long as the model). */
  upload(data: Float32Array | Uint32Array | Int32Array | Uint16Array, shape: readonly number[], pooled = true): Tensor {
    const size = shape.reduce((a, b) => a * b, 1);
    if (size !== data.length) throw new AppError('SHAPE_MISMATCH', `upload: shape [${shape.join(',')}] holds ${size} values, data has ${data.length}.`);
    const dtype: DType = data instanceof Float32Array ? 'f32' : data instanceof Uint16Array ? 'f16' : 'u32';
    if (dtype === 'f16' && !this.hasF16) throw new AppError('MODEL_UNSUPPORTED', 'This GPU has no shader-f16; upload float32 weights.');
    const t = this.tensor(shape, dtype, pooled);
    // A pooled buffer may still be read by recorded, unsubmitted commands; writeBuffer would overtake them.
    if (pooled && this.#encoder) this.flush();
    if (data.length > 0) {
      // writeBuffer needs a multiple of 4 bytes: pad an odd-length f16 array.
      const src = data.byteLength % 4 === 0 ? data : Uint16Array.from({ length: data.length + 1 }, (_, i) => (i < data.length ? data[i]! : 0));
      this.#device.queue.writeBuffer(t.buffer, 0, src.buffer, src.byteOffset, src.byteLength);
    }
    return t;
  }

  /** Overwrites a tensor's contents (queued in order with submitted work). */
  write(t: Tensor, data: Float32Array | Uint32Array | Int32Array, offsetElems = 0): void {
    this.checkAlive();
    this.flush();
    this.#device.queue.writeBuffer(t.buffer, offsetElems * 4, data.buffer, data.byteOffset, data.byteLength);
  }

  releaseBuffer(buffer: GPUBuffer, pooled: boolean, generation: number): void {
    if (generation !== this.#generation) return; // the old device took it with it
    this.liveBuffers--;
    if (!pooled) {
      // Commands recorded but not yet submitted may still use it: destroy after the next submit.
      if (this.#encoder) this.#pendingDestroy.push(buffer);
      else buffer.destroy();
      return;
    }
    const list = this.#pool.get(buffer.size);
    if (list) list.push(buffer);
    else this.#pool.set(buffer.size, [buffer]);
  }

  /** Frees pooled buffers nobody uses. */
  trimPool(): void {
    for (const list of this.#pool.values()) for (const b of list) b.destroy();
    this.#pool.clear();
  }

  async read(t: Tensor): Promise<Float32Array> {
    if (t.dtype === 'f16') throw new AppError('INTERNAL', 'read() returns float32; f16 tensors are weights only.');
    const bytes = await this.readBytes(t.buffer, 0, t.size * 4);
    return new Float32Array(bytes);
  }

  async readU32(t: Tensor): Promise<Uint32Array> {
    return new Uint32Array(await this.readBytes(t.buffer, 0, t.size * 4));
  }

  async readBytes(buffer: GPUBuffer, offset: number, bytes: number): Promise<ArrayBuffer> {
    this.checkAlive();
    const size = Math.max(4, Math.ceil(bytes / 4) * 4);
    const staging = this.#device.createBuffer({ size, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
    this.#endPass();
    this.#enc().copyBufferToBuffer(buffer, offset, staging, 0, size);
    this.flush();
    try {
      await staging.mapAsync(GPUMapMode.READ);
    } catch (err) {
      staging.destroy();
      this.checkAlive();
      throw err;
    }
    const out = staging.getMappedRange().slice(0, bytes);
    staging.unmap();
    staging.destroy();
    this.checkAlive();
    return out;
  }

  // ---- pipelines and dispatch ----

  pipeline(code: string, constants?: Record<string, number>): GPUComputePipeline {
    this.checkAlive();
    const key = constants ? `${code}\n//${JSON.stringify(constants)}` : code;
    let p = this.#pipelines.get(key);
    if (!p) {
      const module = this.#device.createShaderModule({ code });
      p = this.#device.createComputePipeline({
        layout: 'auto',
        compute: constants ? { module, entryPoint: 'main', constants } : { module, entryPoint: 'main' },
      });
      this.#pipelines.set(key, p);
    }
    return p;
  }

  get pipelineCount(): number {
    return this.#pipelines.size;
  }

  #enc(): GPUCommandEncoder {
    this.checkAlive();
    if (!this.#encoder) this.#encoder = this.#device.createCommandEncoder();
    return this.#encoder;
  }

  #endPass(): void {
    if (this.#pass) {
      this.#pass.end();
      this.#pass = null;
    }
  }

  #uniform(data: ArrayBuffer): { buffer: GPUBuffer; offset: number; size: number } {
    const size = Math.max(16, Math.ceil(data.byteLength / 16) * 16);
    let arena = this.#arenas[this.#arenaIndex];
    if (arena && arena.used + size > ARENA_BYTES) {
      this.#arenaIndex++;
      arena = this.#arenas[this.#arenaIndex];
    }
    if (!arena) {
      arena = {
        buffer: this.#device.createBuffer({ size: ARENA_BYTES, usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST }),
        data: new Uint8Array(ARENA_BYTES),
        used: 0,
      };
      this.#arenas.push(arena);
    }
    const offset = arena.used;
    arena.data.set(new Uint8Array(data), offset);
    arena.used = Math.ceil((offset + size) / UNIFORM_ALIGN) * UNIFORM_ALIGN;
    return { buffer: arena.buffer, offset, size };
  }

  /**
   * Records one dispatch. Binding 0 is the uniform block `params`; bindings 1.. are the storage
   * buffers in order. Workgroup counts over the per-dimension limit are the caller's job (see `grid`).
   */
  dispatch(pipeline: GPUComputePipeline, params: ArrayBuffer, buffers: readonly (Tensor | GPUBuffer)[], workgroups: readonly [number, number?, number?]): void {
    const u = this.#uniform(params);
    const entries: GPUBindGroupEntry[] = [{ binding: 0, resource: { buffer: u.buffer, offset: u.offset, size: u.size } }];
    buffers.forEach((b, i) => {
      const buffer = b instanceof Tensor ? b.buffer : b;
      if (b instanceof Tensor && b.released) throw new AppError('INTERNAL', 'A released tensor was passed to a kernel.');
      entries.push({ binding: i + 1, resource: { buffer } });
    });
    const bindGroup = this.#device.createBindGroup({ layout: pipeline.getBindGroupLayout(0), entries });
    const prof = this.#profile;
    if (prof && prof.labels.length < prof.capacity) {
      // One pass per dispatch, timestamps around it; labelled by the calling functions.
      this.#endPass();
      const i = prof.labels.length;
      prof.labels.push(callerLabel());
      prof.workgroups.push([...workgroups].map((w) => w ?? 1));
      this.#pass = this.#enc().beginComputePass({ timestampWrites: { querySet: prof.querySet, beginningOfPassWriteIndex: 2 * i, endOfPassWriteIndex: 2 * i + 1 } });
    } else if (!this.#pass) {
      const enc = this.#enc();
      const tm = this.#timing;
      // ctx.time: the first pass writes the start, every pass (over)writes the end, so the span covers
      // all the passes fn records (copies and clears between dispatches split passes).
      this.#pass = tm
        ? enc.beginComputePass({ timestampWrites: tm.begun ? { querySet: tm.querySet, endOfPassWriteIndex: 1 } : { querySet: tm.querySet, beginningOfPassWriteIndex: 0, endOfPassWriteIndex: 1 } })
        : enc.beginComputePass();
      if (tm) tm.begun = true;
    }
    this.#pass.setPipeline(pipeline);
    this.#pass.setBindGroup(0, bindGroup);
    const [x, y = 1, z = 1] = workgroups;
    if (x > 0 && y > 0 && z > 0) this.#pass.dispatchWorkgroups(x, y, z);
    if (prof) this.#endPass();
  }

  /** Splits a 1-D workgroup count over x and y so it stays under the per-dimension limit. */
  grid(workgroups: number): [number, number] {
    const max = this.#device.limits.maxComputeWorkgroupsPerDimension;
    if (workgroups <= max) return [workgroups, 1];
    const y = Math.ceil(workgroups / max);
    return [Math.ceil(workgroups / y), y];
  }

  copy(src: Tensor, srcOffsetElems: number, dst: Tensor, dstOffsetElems: number, elems: number): void {
    if (elems <= 0) return;
    this.#endPass();
    this.#enc().copyBufferToBuffer(src.buffer, srcOffsetElems * 4, dst.buffer, dstOffsetElems * 4, elems * 4);
  }

  /** Submits everything recorded so far. */
  flush(): void {
    this.#endPass();
    if (!this.#encoder) return;
    this.checkAlive();
    const cmd = this.#encoder.finish();
    this.#encoder = null;
    for (let i = 0; i <= this.#arenaIndex && i < this.#arenas.length; i++) {
      const a = this.#arenas[i]!;
      if (a.used > 0) this.#device.queue.writeBuffer(a.buffer, 0, a.data.buffer, 0, a.used);
      a.used = 0;
    }
    this.#arenaIndex = 0;
    this.#device.queue.submit([cmd]);
    for (const b of this.#pendingDestroy) b.destroy();
    this.#pendingDestroy = [];
  }

  /** Resolves when the GPU has finished all submitted work. */
  async sync(): Promise<void> {
    this.flush();
    await this.#device.queue.onSubmittedWorkDone();
    this.checkAlive();
  }

  /**
   * Times the dispatches `fn` records, in milliseconds: with timestamp queries where the device has
   * them (from the start of the first compute pass fn records to the end of the last), otherwise
   * wall-clock around submit and completion. Timestamps cover GPU execution only: not submission,
   * uniform uploads or the wait for completion, so on SwiftShader (and for short work anywhere)
   * wall clock reads lower throughput. Note on the old bench discrepancy (timestamps 2-3 GFLOP/s,
   * wall clock ~0.6): the two timed different kernels — benchMatmul A·Bᵀ (vec4 loads), the wall-clock
   * probe A·B, which then had only a scalar kernel; with vec4 A·B both agree within ~10 %.
   */
  async time(fn: () => void): Promise<number> {
    await this.sync();
    if (!this.hasTimestamps) {
      const t0 = performance.now();
      fn();
      await this.sync();
      return performance.now() - t0;
    }
    const querySet = this.#device.createQuerySet({ type: 'timestamp', count: 2 });
    const resolve = this.#device.createBuffer({ size: 16, usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC });
    const read = this.#device.createBuffer({ size: 16, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
    this.#endPass();
    this.#timing = { querySet, resolve, read, begun: false };
    try {
      fn();
    } finally {
      this.#endPass();
      this.#timing = null;
    }
    const enc = this.#enc();
    enc.resolveQuerySet(querySet, 0, 2, resolve, 0);
    enc.copyBufferToBuffer(resolve, 0, read, 0, 16);
    this.flush();
    await read.mapAsync(GPUMapMode.READ);
    const [t0, t1] = new BigInt64Array(read.getMappedRange());
    const ms = Number(t1! - t0!) / 1e6;
    read.unmap();
    read.destroy();
    resolve.destroy();
    querySet.destroy();
    return ms;
  }

  /**
   * Diagnostics: runs `fn` (which may record, submit and await, e.g. a whole training step) with
   * every dispatch in its own compute pass between two timestamp writes, and returns each dispatch's
   * GPU time in order, labelled by the functions that recorded it. Separate passes cost a little
   * extra; use it to see where time goes, not for headline figures. Needs timestamp-query.
   */
  async profile(fn: () => Promise<void>, capacity = 2048): Promise<{ label: string; workgroups: number[]; ms: number }[]> {
    if (!this.hasTimestamps) throw new AppError('WEBGPU_UNAVAILABLE', 'profile() needs the timestamp-query feature.');
    await this.sync();
    const querySet = this.#device.createQuerySet({ type: 'timestamp', count: 2 * capacity });
    const prof = { querySet, capacity, labels: [] as string[], workgroups: [] as number[][] };
    this.#profile = prof;
    try {
      await fn();
    } finally {
      this.#endPass();
      this.#profile = null;
    }
    const n = prof.labels.length;
    const out: { label: string; workgroups: number[]; ms: number }[] = [];
    if (n > 0) {
      const resolve = this.#device.createBuffer({ size: 16 * n, usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC });
      const enc = this.#enc();
      enc.resolveQuerySet(querySet, 0, 2 * n, resolve, 0);
      const bytes = await this.readBytes(resolve, 0, 16 * n);
      resolve.destroy();
      const ts = new BigInt64Array(bytes);
      for (let i = 0; i < n; i++) out.push({ label: prof.labels[i]!, workgroups: prof.workgroups[i]!, ms: Number(ts[2 * i + 1]! - ts[2 * i]!) / 1e6 });
    }
    querySet.destroy();
    return out;
  }

  /** Last uncaptured WebGPU error message, for diagnostics. */
  get lastUncapturedError(): string | null {
    return this.#uncaptured;
  }
}
