/**
 * Node side of the Chromium engine checks: writes the tiny model (and a MatMul ONNX) to a temp
 * folder, serves the project with Vite's dev server (COOP/COEP, loopback, the temp folder allowed
 * under /@fs/), opens e2e/engine/engine.html in headless Chromium with a fresh user data folder,
 * and waits for the page's `window.engineE2E`.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium, type BrowserContext, type Page } from 'playwright-core';
import { createServer, type ViteDevServer } from 'vite';
import { CHROMIUM_ARGS, chromiumPath } from '../../scripts/nodes';
import { makeTinyModel } from '../../tools/tiny-model';
import { matmulOnnx } from './matmul-onnx';
import type { EnginePageApi } from './page-api';

const ROOT = join(import.meta.dirname, '..', '..');

export interface EnginePage {
  page: Page;
  /** Served URL of the tiny model folder (ends with '/'). */
  modelUrl: string;
  /** Served URL of the one-node MatMul model. */
  matmulUrl: string;
  matmulSize: number;
  /** Console errors and page errors seen so far. */
  errors: string[];
  close(): Promise<void>;
}

export interface OpenOptions {
  seed?: number;
  matmulSize?: number;
  log?: (line: string) => void;
}

export async function openEnginePage(opts: OpenOptions = {}): Promise<EnginePage> {
  const log = opts.log ?? ((l: string) => process.stderr.write(`${l}\n`));
  const matmulSize = opts.matmulSize ?? 512;
  const dir = await mkdtemp(join(tmpdir(), 'engine-e2e-'));
  let server: ViteDevServer | null = null;
  let context: BrowserContext | null = null;
  const close = async (): Promise<void> => {
    await context?.close().catch(() => undefined);
    await server?.close().catch(() => undefined);
    await rm(dir, { recursive: true, force: true });
  };
  try {
    await makeTinyModel({ seed: opts.seed ?? 1, dir: join(dir, 'model') });
    await writeFile(join(dir, 'matmul.onnx'), matmulOnnx(matmulSize));
    server = await createServer({
      configFile: false,
      root: ROOT,
      logLevel: 'warn',
      appType: 'mpa', // a missing file is a 404, not index.html
      cacheDir: join(dir, 'vite'), // per run: concurrent runs never share optimized deps
      server: {
        port: 0,
        host: '127.0.0.1',
        strictPort: false,
        headers: { 'Cross-Origin-Opener-Policy': 'same-origin', 'Cross-Origin-Embedder-Policy': 'require-corp' },
        fs: { allow: [ROOT, dir] },
        hmr: false,
        watch: null,
      },
      optimizeDeps: {
        entries: ['e2e/engine/engine.html'],
        include: ['comlink', '@huggingface/tokenizers', '@huggingface/jinja'],
        // Served as the package ships it, next to the wasm files its wasmPaths points at.
        exclude: ['onnxruntime-web'],
      },
      worker: { format: 'es' },
    });
    await server.listen();
    const base = server.resolvedUrls?.local[0];
    if (!base) throw new Error('Vite did not report a local URL.');
    context = await chromium.launchPersistentContext(join(dir, 'profile'), {
      executablePath: chromiumPath(log),
      headless: true,
      args: CHROMIUM_ARGS,
    });
    const page = context.pages()[0] ?? (await context.newPage());
    const errors: string[] = [];
    page.on('console', (m) => {
      if (m.type() === 'error') errors.push(m.text());
    });
    page.on('pageerror', (e) => errors.push(e.message));
    await page.goto(new URL('e2e/engine/engine.html', base).href);
    await page.waitForFunction(() => window.engineE2E !== undefined, undefined, { timeout: 60_000 });
    return { page, modelUrl: `/@fs${dir}/model/`, matmulUrl: `/@fs${dir}/matmul.onnx`, matmulSize, errors, close };
  } catch (err) {
    await close();
    throw err;
  }
}

/** Calls one method of the page's API with JSON arguments. */
export async function callPage<K extends keyof EnginePageApi>(page: Page, method: K, ...args: Parameters<EnginePageApi[K]>): Promise<Awaited<ReturnType<EnginePageApi[K]>>> {
  return page.evaluate(
    async ([m, a]) => {
      const api = window.engineE2E as unknown as Record<string, (...x: unknown[]) => Promise<unknown>>;
      return api[m]!(...a);
    },
    [method, args] as [string, unknown[]],
  ) as Promise<Awaited<ReturnType<EnginePageApi[K]>>>;
}
