/**
 * Node side of the weight store checks: a real coordinator serving model folders from a temp
 * folder, Vite's dev server for e2e/weights/weights.html that proxies /v1 and /models to it (so the
 * page fetches from its own origin, as a node page served by the coordinator does) and logs every
 * request that reaches the coordinator, and headless Chromium with a fresh profile.
 */
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import type { IncomingMessage } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium, type BrowserContext, type Page } from 'playwright-core';
import { createServer, type ViteDevServer } from 'vite';
import { CHROMIUM_ARGS, chromiumPath } from '../../scripts/nodes';
import { createCoordinator, type Coordinator } from '../../server';
import type { WeightsPageApi } from './page-api';

const ROOT = join(import.meta.dirname, '..', '..');

export interface Hit {
  method: string;
  url: string;
  range: string | null;
  status: number;
  /** Body bytes the coordinator sent. */
  bytes: number;
}

export interface WeightsPage {
  page: Page;
  /** Folder the coordinator serves model folders from (write models here). */
  modelsDir: string;
  coordinator: Coordinator;
  /** Requests that reached the coordinator through the proxy, in order of their answers. */
  hits: Hit[];
  /** Requests for model files (not manifests) since `from`. */
  weightHits(from?: number): Hit[];
  errors: string[];
  reload(): Promise<void>;
  close(): Promise<void>;
}

export async function openWeightsPage(log: (line: string) => void = (l) => process.stderr.write(`${l}\n`)): Promise<WeightsPage> {
  const dir = await mkdtemp(join(tmpdir(), 'weights-e2e-'));
  const modelsDir = join(dir, 'models');
  let coordinator: Coordinator | null = null;
  let server: ViteDevServer | null = null;
  let context: BrowserContext | null = null;
  const close = async (): Promise<void> => {
    await context?.close().catch(() => undefined);
    await server?.close().catch(() => undefined);
    await coordinator?.close().catch(() => undefined);
    await rm(dir, { recursive: true, force: true });
  };
  try {
    await mkdir(modelsDir);
    coordinator = await createCoordinator({ dbPath: ':memory:', modelsDir });
    const hits: Hit[] = [];
    const proxied = {
      target: coordinator.url,
      configure(proxy: { on(event: string, cb: (...a: never[]) => void): void }) {
        const byReq = new WeakMap<IncomingMessage, Hit>();
        // Counted when the request is sent on to the coordinator; status and bytes filled in as the answer streams back.
        proxy.on('proxyReq', (_out: unknown, req: IncomingMessage) => {
          const hit: Hit = { method: req.method ?? '', url: req.url ?? '', range: (req.headers.range as string | undefined) ?? null, status: 0, bytes: 0 };
          byReq.set(req, hit);
          hits.push(hit);
        });
        proxy.on('proxyRes', (res: IncomingMessage, req: IncomingMessage) => {
          const hit = byReq.get(req);
          if (!hit) return;
          hit.status = res.statusCode ?? 0;
          res.on('data', (c: Buffer) => (hit.bytes += c.length));
        });
      },
    };
    server = await createServer({
      configFile: false,
      root: ROOT,
      logLevel: 'warn',
      appType: 'mpa',
      cacheDir: join(dir, 'vite'),
      server: {
        port: 0,
        host: '127.0.0.1',
        strictPort: false,
        headers: { 'Cross-Origin-Opener-Policy': 'same-origin', 'Cross-Origin-Embedder-Policy': 'require-corp' },
        fs: { allow: [ROOT, dir] },
        hmr: false,
        watch: null,
        proxy: { '/v1': proxied, '/models': proxied },
      },
      optimizeDeps: {
        entries: ['e2e/weights/weights.html'],
        include: ['idb', '@huggingface/tokenizers', '@huggingface/jinja'],
        exclude: ['onnxruntime-web'],
      },
    });
    await server.listen();
    const base = server.resolvedUrls?.local[0];
    if (!base) throw new Error('Vite did not report a local URL.');
    context = await chromium.launchPersistentContext(join(dir, 'profile'), { executablePath: chromiumPath(log), headless: true, args: CHROMIUM_ARGS });
    const page = context.pages()[0] ?? (await context.newPage());
    const errors: string[] = [];
    page.on('console', (m) => {
      if (m.type() === 'error') errors.push(m.text());
    });
    page.on('pageerror', (e) => errors.push(e.message));
    const ready = async (): Promise<void> => {
      await page.waitForFunction(() => window.weightsE2E !== undefined, undefined, { timeout: 60_000 });
    };
    await page.goto(new URL('e2e/weights/weights.html', base).href);
    await ready();
    const c = coordinator;
    return {
      page,
      modelsDir,
      coordinator: c,
      hits,
      weightHits: (from = 0) => hits.slice(from).filter((h) => h.url.startsWith('/models/')),
      errors,
      reload: async () => {
        await page.reload();
        await ready();
      },
      close,
    };
  } catch (err) {
    await close();
    throw err;
  }
}

/** Calls one method of the page's API with JSON arguments. */
export async function callPage<K extends keyof WeightsPageApi>(page: Page, method: K, ...args: Parameters<WeightsPageApi[K]>): Promise<Awaited<ReturnType<WeightsPageApi[K]>>> {
  return page.evaluate(
    async ([m, a]) => {
      const api = window.weightsE2E as unknown as Record<string, (...x: unknown[]) => Promise<unknown>>;
      return api[m]!(...a);
    },
    [method, args] as [string, unknown[]],
  ) as Promise<Awaited<ReturnType<WeightsPageApi[K]>>>;
}
