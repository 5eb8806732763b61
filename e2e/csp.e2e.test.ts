/**
 * The page under its Content-Security-Policy, for real: the built page in headless Chromium joins a
 * coordinator, runs an agent task and a generate task (onnxruntime-web on WASM in its worker), and no
 * CSP violation is reported (securitypolicyviolation events and console). A deliberate violation (an
 * injected inline script; eval cannot serve, DevTools evaluation is exempt from the policy) proves the
 * policy is enforced and the listener hears it; a page on another origin cannot frame the node page.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { chromium, type BrowserContext } from 'playwright-core';
import { AGENTS } from '../agents';
import { createCoordinator, type Coordinator } from '../server';
import { PAGE_CSP } from '../server/headers';
import type { TaskRecord } from '../shared';
import { CHROMIUM_ARGS, chromiumPath, waitConnected } from '../scripts/nodes';
import { DIST, ensurePageBuilt } from '../scripts/page-build';
import { registerSampleAgents } from '../scripts/register-agents';
import { makeTinyModel } from '../tools/tiny-model';

interface Violation {
  directive: string;
  blocked: string;
  source: string;
  sample: string;
}

declare global {
  interface Window {
    __csp?: Violation[];
  }
}

/** Well-behaved sample agents, one per language. */
const GOOD = ['c', 'rust', 'assemblyscript', 'wat'].flatMap((lang) => AGENTS.filter((a) => !a.hostile && a.language === lang).slice(0, 1));

let dir = '';
let coordinator: Coordinator;
let context: BrowserContext;
let url = '';

before(async () => {
  await ensurePageBuilt();
  dir = mkdtempSync(join(tmpdir(), 'e2e-csp-'));
  const modelsDir = join(dir, 'models');
  await makeTinyModel({ seed: 1, dir: join(modelsDir, 'tiny-llama') });
  coordinator = await createCoordinator({ dbPath: join(dir, 'coordinator.db'), port: 0, staticDir: DIST, modelsDir });
  url = coordinator.url.replace(/\/$/, '');
  await registerSampleAgents(url, GOOD);
  context = await chromium.launchPersistentContext(join(dir, 'profile'), { executablePath: chromiumPath(), headless: true, args: CHROMIUM_ARGS });
  await context.addInitScript(() => {
    window.__csp = [];
    document.addEventListener(
      'securitypolicyviolation',
      (e) => window.__csp!.push({ directive: e.effectiveDirective, blocked: e.blockedURI, source: e.sourceFile, sample: e.sample }),
      true,
    );
  });
});

after(async () => {
  await context?.close().catch(() => undefined);
  await coordinator?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

async function run(spec: unknown): Promise<TaskRecord> {
  const res = await fetch(`${url}/v1/tasks`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(spec) });
  const { id } = (await res.json()) as { id: string };
  assert.equal(res.status, 202);
  return (await (await fetch(`${url}/v1/tasks/${id}/wait?timeoutMs=60000`)).json()) as TaskRecord;
}

test('the node page works under its CSP and reports no violation; an injected inline script is blocked', async () => {
  const page = context.pages()[0] ?? (await context.newPage());
  const cspConsole: string[] = [];
  const errors: string[] = [];
  page.on('console', (msg) => {
    if (/Content Security Policy/i.test(msg.text())) cspConsole.push(msg.text());
  });
  page.on('pageerror', (err) => errors.push(err.message));
  const res = await page.goto(`${url}/?name=csp-node&workers=1&backends=wasm`);
  assert.equal(res?.headers()['content-security-policy'], PAGE_CSP);
  await waitConnected(page, 60_000);

  assert.ok(GOOD.length >= 2);
  for (const a of GOOD) {
    const rec = await run({ kind: 'agent', payload: { agent: a.name, input: a.input, ...(a.files ? { files: a.files } : {}), ...(a.limits ? { limits: a.limits } : {}) } });
    assert.equal(rec.state, 'succeeded', `${a.name}: ${JSON.stringify(rec.error)}`);
  }
  const gen = await run({ kind: 'generate', payload: { model: 'tiny-llama', prompt: 'hello', maxNewTokens: 4 } });
  assert.equal(gen.state, 'succeeded', JSON.stringify(gen.error));
  await page.locator('exec-node-app').waitFor();

  const clean = await page.evaluate(() => window.__csp ?? []);
  assert.deepEqual(clean, [], `violations while the page worked: ${JSON.stringify(clean)}`);
  assert.deepEqual(cspConsole, []);
  assert.deepEqual(errors, []);

  // The policy is enforced, and the listener above would have heard a violation.
  const outcome = await page.evaluate(() => {
    const s = document.createElement('script');
    s.textContent = 'window.__inlineRan = true;';
    document.head.append(s);
    return { inlineRan: (window as unknown as { __inlineRan?: boolean }).__inlineRan === true };
  });
  assert.equal(outcome.inlineRan, false);
  const deliberate = await page.waitForFunction(() => ((window.__csp ?? []).length >= 1 ? window.__csp : null), undefined, { timeout: 5_000, polling: 50 });
  const directives = ((await deliberate.jsonValue()) as Violation[]).map((v) => v.directive);
  assert.deepEqual(directives, ['script-src-elem']);
});

test('a page on another origin cannot frame the node page (frame-ancestors none)', async () => {
  const framer = await context.newPage();
  await framer.goto('about:blank');
  await framer.setContent(`<iframe src="${url}/?name=framed&inference=0"></iframe>`);
  // Chromium replaces a frame its CSP refuses with its error page (and reports nothing to the framing page).
  const end = Date.now() + 15_000;
  let urls: string[] = [];
  while (Date.now() < end) {
    urls = framer.frames().slice(1).map((f) => f.url());
    if (urls.some((u) => u.startsWith('chrome-error://'))) break;
    await new Promise((r) => setTimeout(r, 50));
  }
  assert.deepEqual(urls, ['chrome-error://chromewebdata/'], 'the framed node page was refused');
  await framer.close();
});
