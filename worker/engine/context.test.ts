import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { AppError } from '../../shared';
import { GpuContext } from './context';
import { benchGeneration } from './bench';
import { add } from './kernels';
import { LlamaModel } from './llama';
import { benchMatmul, matmul } from './matmul';
import { createNodeGpuContext } from './node-gpu';
import { randomLlamaWeights, tinyLlamaConfig } from './random-weights';

const isCode = (code: string) => (e: unknown) => e instanceof AppError && e.code === code;

describe('GpuContext', () => {
  it('without a GPU object reports WEBGPU_UNAVAILABLE with how to fix it', async () => {
    await assert.rejects(GpuContext.create({}), (e: unknown) => isCode('WEBGPU_UNAVAILABLE')(e) && /enable-unsafe-webgpu/.test((e as Error).message));
  });

  it('asks for the adapter limits, reuses pooled buffers by size class and caches pipelines', async () => {
    const ctx = await createNodeGpuContext();
    try {
      assert.ok(ctx.limits.maxStorageBufferBindingSize > 128 * 1024 * 1024, 'adapter limit requested, not the 128 MiB default');
      const info = ctx.info();
      assert.ok(info.features.includes('timestamp-query') === ctx.hasTimestamps);
      const a = ctx.tensor([1000]);
      const buf = a.buffer;
      a.release();
      const b = ctx.tensor([990]);
      assert.equal(b.buffer, buf, 'same size class reuses the buffer');
      b.release();
      const x = ctx.upload(Float32Array.from([1, 2, 3]), [3]);
      const y = ctx.upload(Float32Array.from([10, 20, 30]), [3]);
      add(ctx, x, y);
      const n = ctx.pipelineCount;
      const z = add(ctx, x, y);
      assert.equal(ctx.pipelineCount, n);
      assert.deepEqual(Array.from(await ctx.read(z)), [11, 22, 33]);
    } finally {
      ctx.destroy();
    }
  });

  it('runs one job at a time: the lock serialises overlapping jobs and is released after a throw', async () => {
    const ctx = await createNodeGpuContext();
    try {
      const events: string[] = [];
      let release!: () => void;
      const gate = new Promise<void>((r) => (release = r));
      const first = ctx.withLock(async () => {
        events.push('a-start');
        await gate;
        events.push('a-end');
      });
      const second = ctx.withLock(async () => {
        events.push('b');
      });
      const failing = ctx.withLock(async () => {
        throw new AppError('INTERNAL', 'boom');
      });
      await Promise.resolve();
      release();
      await first;
      await second;
      await assert.rejects(failing, isCode('INTERNAL'));
      assert.deepEqual(events, ['a-start', 'a-end', 'b']);
      assert.equal(await ctx.withLock(async () => 7), 7);
    } finally {
      ctx.destroy();
    }
  });

  it('device lost: the next op fails with GPU_DEVICE_LOST, reset() gives a working context', async () => {
    const ctx = await createNodeGpuContext();
    const cfg = tinyLlamaConfig();
    const w = randomLlamaWeights(cfg, 2);
    const model = await LlamaModel.load(ctx, cfg, w);
    const before = await model.forward([[1, 2, 3]]);
    ctx.device.destroy();
    await assert.rejects(model.forward([[1, 2, 3]]), isCode('GPU_DEVICE_LOST'));
    await assert.rejects(ctx.withLock(async () => ctx.tensor([4])), isCode('GPU_DEVICE_LOST'));
    await ctx.reset();
    assert.equal(ctx.isLost, false);
    await assert.rejects(model.forward([[1, 2, 3]]), isCode('GPU_DEVICE_LOST'), 'a model from the old device must be reloaded');
    const again = await LlamaModel.load(ctx, cfg, w);
    assert.deepEqual(await again.forward([[1, 2, 3]]), before);
    ctx.destroy();
  });

  it('benchMatmul returns GFLOP/s per tile config', async () => {
    const ctx = await createNodeGpuContext();
    try {
      const r = await benchMatmul(ctx, 64, 64, 64, 1);
      assert.ok(Object.keys(r).length >= 2);
      for (const v of Object.values(r)) assert.ok(Number.isFinite(v) && v > 0);
    } finally {
      ctx.destroy();
    }
  });

  it('time() spans every pass fn records; profile() times each dispatch with its recording function', async () => {
    const ctx = await createNodeGpuContext();
    try {
      if (!ctx.hasTimestamps) return;
      const n = 256;
      const a = ctx.upload(new Float32Array(n * n).fill(0.5), [n, n]);
      const small = ctx.upload(new Float32Array(4).fill(1), [4]);
      const out = ctx.tensor([n, n]);
      const big = (): void => void matmul(ctx, a, a, { transB: true, out });
      await ctx.time(big); // compile
      // A copy ends the compute pass: the matmul sits in the first pass, a trivial add in the second.
      const split = (): void => {
        big();
        ctx.copy(small, 0, out, 0, 4);
        add(ctx, small, small);
      };
      let one = Infinity;
      let both = Infinity;
      for (let i = 0; i < 3; i++) {
        one = Math.min(one, await ctx.time(big));
        both = Math.min(both, await ctx.time(split));
      }
      assert.ok(one > 0 && both >= 0.5 * one, `two passes ${both} ms vs the matmul alone ${one} ms`);
      const prof = await ctx.profile(async () => {
        split();
        await ctx.sync();
      });
      assert.equal(prof.length, 2);
      assert.match(prof[0]!.label, /^matmul/);
      assert.ok(prof.every((p) => p.ms >= 0));
      for (const t of [a, small, out]) t.release();
    } finally {
      ctx.destroy();
    }
  });
});

describe('benchmarks run (no timing assertions)', () => {
  it('benchGeneration returns finite figures', async () => {
    const ctx = await createNodeGpuContext();
    try {
      const g = await benchGeneration(ctx, { promptLen: 4, newTokens: 3 });
      assert.ok(g.tokensPerSecond > 0);
      assert.equal(ctx.liveBuffers, 0, 'the benches free what they allocate');
    } finally {
      ctx.destroy();
    }
  });
});
