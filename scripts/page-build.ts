/**
 * Builds the node page (`vite build` → dist/) when dist/ is missing or older
 * than any source the page is made from. Used by `npm start`, the e2e tests and
 * the benchmark, so each stays fast when nothing changed.
 */
import { existsSync, mkdirSync, readdirSync, rmSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';

export const ROOT = join(import.meta.dirname, '..');
export const DIST = join(ROOT, 'dist');

/** What the page is built from. */
const SOURCES = ['index.html', 'ops.html', 'vite.config.ts', 'package.json', 'web', 'worker', 'shared'];

function newest(path: string): number {
  let st;
  try {
    st = statSync(path);
  } catch {
    return 0;
  }
  if (!st.isDirectory()) return path.endsWith('.test.ts') ? 0 : st.mtimeMs;
  let m = 0;
  for (const name of readdirSync(path)) {
    if (name === 'node_modules' || name.startsWith('.')) continue;
    m = Math.max(m, newest(join(path, name)));
  }
  return m;
}

/** True when dist/index.html is missing or older than a source file. */
export function pageIsStale(): boolean {
  const built = join(DIST, 'index.html');
  if (!existsSync(built) || !existsSync(join(DIST, 'ops.html'))) return true;
  const builtAt = statSync(built).mtimeMs;
  return SOURCES.some((s) => newest(join(ROOT, s)) > builtAt);
}

const LOCK = join(ROOT, '.cache', 'page-build.lock');
const LOCK_STALE_MS = 120_000;

/**
 * Runs `vite build` in this process if the page is stale; returns whether it built.
 * A lock directory keeps two processes (a test and `npm start`, say) from building into dist/ at once.
 */
export async function ensurePageBuilt(log: (line: string) => void = (l) => process.stderr.write(`${l}\n`)): Promise<boolean> {
  if (!pageIsStale()) return false;
  mkdirSync(dirname(LOCK), { recursive: true });
  for (let i = 0; ; i++) {
    try {
      mkdirSync(LOCK);
      break;
    } catch {
      // Held by another build: wait for it (bounded), taking over a lock left by a crashed one.
      const age = Date.now() - (statSync(LOCK, { throwIfNoEntry: false })?.mtimeMs ?? Date.now());
      if (age > LOCK_STALE_MS || i > 600) rmSync(LOCK, { recursive: true, force: true });
      else await new Promise((r) => setTimeout(r, 100));
    }
  }
  try {
    if (!pageIsStale()) return false; // the other process built it
    log('Building the node page (vite build → dist/)…');
    const t0 = performance.now();
    const { build } = await import('vite');
    await build({ root: ROOT, configFile: join(ROOT, 'vite.config.ts'), logLevel: 'warn' });
    log(`Built the page in ${((performance.now() - t0) / 1000).toFixed(1)} s.`);
    return true;
  } finally {
    rmSync(LOCK, { recursive: true, force: true });
  }
}
