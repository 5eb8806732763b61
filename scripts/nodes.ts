/**
 * Headless nodes: Chromium pages (driven by playwright-core) that load the
 * node page from a coordinator and join its pool, so a server without a
 * display can run tasks too.
 *
 *   tsx scripts/nodes.ts --url http://127.0.0.1:8080 --count 2 [--workers 4] [--token JOIN_TOKEN]
 *
 * `--url` may come from COORDINATOR_URL and the token from NODE_TOKEN (a container's environment, e.g.
 * deploy/k8s/nodes.yaml). A coordinator reached over plain http by a name that is not loopback (a Kubernetes
 * Service, `http://coordinator:8080`) is treated as a secure origin for the pages (see `secureOriginArgs`).
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { chromium, type BrowserContext, type Page } from 'playwright-core';
import type { ExecNodeHandle } from '../web';

/** Flags measured to work on machines without a GPU or a display (DESIGN.md, "Browser"). */
export const CHROMIUM_ARGS = [
  '--headless=new',
  '--no-sandbox',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--enable-unsafe-webgpu',
  // Background pages must not be throttled: every page is a node.
  '--disable-background-timer-throttling',
  '--disable-renderer-backgrounding',
  '--disable-backgrounding-occluded-windows',
];

export interface LaunchNodesOptions {
  /** The coordinator that serves the page: `http://host:port`. */
  url: string;
  count: number;
  /** Where the fresh user data directory is made (default: the OS temp dir); removed on close. */
  userDataRoot?: string;
  /** Agent workers per page (`?workers=`); default: the page's choice. */
  workers?: number;
  /** Join token (node role) of a coordinator run with --auth, given to each page as `?token=`. */
  token?: string;
  /** More query parameters for the page (see web/main.ts), e.g. `{ perWorker: '8' }`. */
  query?: Record<string, string>;
  /** Node names are `${namePrefix}-${i}`. */
  namePrefix?: string;
  /** More Chromium flags. */
  args?: string[];
  /** How long each page may take to report `connected`. */
  timeoutMs?: number;
  /** Page console errors and crashes go here (default: stderr). */
  log?: (line: string) => void;
}

export interface LaunchedNodes {
  pages: Page[];
  context: BrowserContext;
  /** Node ids, in page order. */
  nodeIds: string[];
  /** Closes every page and the browser, and removes the user data directory. */
  close(): Promise<void>;
}

const DEFAULT_CHROMIUM = '/usr/bin/chromium';

/**
 * Chromium flags that make the coordinator's origin a secure context when it is plain http on a host that is
 * not loopback: without them the page has no WebGPU, no crypto.subtle and no cross-origin isolation (measured:
 * `isSecureContext` false, `navigator.gpu` undefined on `http://coordinator:8080`). Loopback and https need none.
 */
export function secureOriginArgs(url: string): string[] {
  const u = new URL(url);
  if (u.protocol !== 'http:') return [];
  const host = u.hostname.replace(/^\[|\]$/g, '');
  const loopback = host === 'localhost' || host.endsWith('.localhost') || /^127\./.test(host) || host === '::1';
  return loopback ? [] : [`--unsafely-treat-insecure-origin-as-secure=${u.origin}`];
}

/** The Chromium to drive: CHROMIUM_PATH, else /usr/bin/chromium (installed with apt-get when root). */
export function chromiumPath(log: (line: string) => void = (l) => process.stderr.write(`${l}\n`)): string {
  const fromEnv = process.env.CHROMIUM_PATH;
  if (fromEnv) {
    if (!existsSync(fromEnv)) throw new Error(`CHROMIUM_PATH=${fromEnv} does not exist. Point it at a Chromium binary.`);
    return fromEnv;
  }
  if (existsSync(DEFAULT_CHROMIUM)) return DEFAULT_CHROMIUM;
  const root = process.getuid?.() === 0;
  if (root && existsSync('/usr/bin/apt-get')) {
    const apt = (...args: string[]): boolean => {
      log(`${DEFAULT_CHROMIUM} is missing: running "apt-get ${args.join(' ')}"…`);
      return spawnSync('apt-get', args, { stdio: ['ignore', 2, 2], env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' } }).status === 0;
    };
    // Package lists may be empty on a fresh machine: update once if the first try fails.
    if ((apt('install', '-y', 'chromium') || (apt('update') && apt('install', '-y', 'chromium'))) && existsSync(DEFAULT_CHROMIUM)) {
      return DEFAULT_CHROMIUM;
    }
    throw new Error('"apt-get install -y chromium" failed; install Chromium (Debian package chromium) or set CHROMIUM_PATH.');
  }
  throw new Error(
    `No Chromium at ${DEFAULT_CHROMIUM}. Install it with "sudo apt-get install -y chromium" or set CHROMIUM_PATH to a Chromium binary.`,
  );
}

/** Opens `count` headless node pages on `url` and waits until each one reports `connected`. */
export async function launchNodes(opts: LaunchNodesOptions): Promise<LaunchedNodes> {
  const log = opts.log ?? ((l: string) => process.stderr.write(`${l}\n`));
  const executablePath = chromiumPath(log);
  const root = resolve(opts.userDataRoot ?? tmpdir());
  mkdirSync(root, { recursive: true });
  const userDataDir = mkdtempSync(join(root, 'exec-node-'));
  let context: BrowserContext;
  try {
    context = await chromium.launchPersistentContext(userDataDir, {
      executablePath,
      headless: true,
      args: [...CHROMIUM_ARGS, ...secureOriginArgs(opts.url), ...(opts.args ?? [])],
      // The callers own the signals and close the nodes in order (Playwright would kill the browser first).
      handleSIGINT: false,
      handleSIGTERM: false,
      handleSIGHUP: false,
    });
  } catch (err) {
    rmSync(userDataDir, { recursive: true, force: true });
    throw err;
  }
  const close = async (): Promise<void> => {
    await context.close().catch(() => undefined);
    rmSync(userDataDir, { recursive: true, force: true });
  };
  try {
    const base = opts.url.replace(/\/$/, '');
    const pages: Page[] = [];
    for (let i = 0; i < opts.count; i++) {
      const page = i === 0 && context.pages().length > 0 ? context.pages()[0]! : await context.newPage();
      const name = `${opts.namePrefix ?? 'headless'}-${i + 1}`;
      page.on('pageerror', (err) => log(`[${name}] page error: ${err.message}`));
      page.on('crash', () => log(`[${name}] page crashed`));
      page.on('console', (msg) => {
        if (msg.type() === 'error') log(`[${name}] ${msg.text()}`);
      });
      const q = new URLSearchParams({ ...opts.query, name });
      if (opts.workers) q.set('workers', String(opts.workers));
      if (opts.token) q.set('token', opts.token);
      await page.goto(`${base}/?${q}`);
      pages.push(page);
    }
    const timeout = opts.timeoutMs ?? 30_000;
    const nodeIds = await Promise.all(pages.map((p) => waitConnected(p, timeout)));
    return { pages, context, nodeIds, close };
  } catch (err) {
    await close();
    throw err;
  }
}

/** Waits until the page's node reports `connected`; returns its node id. */
export async function waitConnected(page: Page, timeoutMs = 30_000): Promise<string> {
  await page.waitForFunction(() => window.__execNode?.state === 'connected', undefined, { timeout: timeoutMs, polling: 50 });
  return page.evaluate(() => (window.__execNode as ExecNodeHandle).nodeId ?? '');
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      url: { type: 'string' },
      count: { type: 'string', default: '1' },
      workers: { type: 'string' },
      'user-data-root': { type: 'string' },
      // The join token; NODE_TOKEN in the environment keeps it out of the process list.
      token: { type: 'string' },
    },
  });
  const url = values.url ?? process.env.COORDINATOR_URL;
  if (!url) throw new Error('Usage: tsx scripts/nodes.ts --url http://127.0.0.1:8080 [--count N] [--workers W] [--token JOIN_TOKEN] (or COORDINATOR_URL and NODE_TOKEN in the environment)');
  const count = Number(values.count);
  if (!Number.isInteger(count) || count < 1 || count > 64) throw new Error('--count must be an integer from 1 to 64.');
  const nodes = await launchNodes({
    url,
    count,
    workers: values.workers ? Number(values.workers) : undefined,
    userDataRoot: values['user-data-root'],
    token: values.token ?? process.env.NODE_TOKEN,
  });
  for (const [i, id] of nodes.nodeIds.entries()) console.log(`node ${i + 1}: ${id} connected to ${url}`);
  console.log('Press Ctrl-C to stop.');
  await new Promise<void>((done) => {
    process.once('SIGINT', done);
    process.once('SIGTERM', done);
  });
  await nodes.close();
  console.log('Nodes closed.');
}

if (import.meta.url === `file://${process.argv[1]}` || process.argv[1]?.endsWith('scripts/nodes.ts')) {
  main().catch((err: unknown) => {
    process.stderr.write(`${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(1);
  });
}
