/**
 * The commands README.md and docs/api.md tell people to run, run as written. A command block is marked
 * `<!-- command: NAME -->` on the line before its ```sh fence; NAME says how it is run here:
 * - `coordinator`: each `npx tsx server/main.ts …` line, from the repository root, with its --db (and --auth) moved
 *   into a temp dir and --port 0; it must print "coordinator listening on", answer /healthz, serve the page from
 *   a relative --static, and stop cleanly on SIGTERM. Every flag must be one server/main.ts declares.
 * - `tokens`: deploy/k8s/base/secrets/generate.sh, into a temp dir instead of the checkout.
 * Not run here, and why: `npm start` and `npm test` (they install packages; CI runs `npm test` itself), the
 * "Try it" curl lines (they need `npm start`'s agents and node), `npm run bench` and `finetune` (minutes),
 * `docker build` (no Docker engine here), `kubectl apply`/`scale` (no cluster; deploy.test.ts renders the
 * manifests with kubectl kustomize instead), `npx tsx scripts/audit.ts` (the registry here refuses the audit
 * endpoint; deploy/audit.test.ts checks its logic).
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { before, test } from 'node:test';
import assert from 'node:assert/strict';
import { ensurePageBuilt } from '../scripts/page-build';
import { declaredFlags, parseFlags, ROOT, startCoordinator, withFlags } from './testing';

interface Block { file: string; name: string; lines: string[] }

const KNOWN = new Set(['coordinator', 'tokens']);

/** The marked ```sh blocks of a Markdown file, with backslash continuations joined and comments dropped. */
function commandBlocks(file: string): Block[] {
  const text = readFileSync(join(ROOT, file), 'utf8');
  const blocks: Block[] = [];
  for (const m of text.matchAll(/<!-- command: ([a-z-]+) -->\s*\n```(?:sh|bash)\n([\s\S]*?)\n```/g)) {
    const lines = m[2]!.replace(/\\\n\s*/g, ' ').split('\n').map((l) => l.replace(/\s+#.*$/, '').trim()).filter((l) => l && !l.startsWith('#'));
    blocks.push({ file, name: m[1]!, lines });
  }
  const markers = [...text.matchAll(/<!-- command: ([^ ]+) -->/g)].length;
  assert.equal(blocks.length, markers, `${file}: every command marker is followed by a sh block`);
  return blocks;
}

const blocks = [...commandBlocks('README.md'), ...commandBlocks('docs/api.md')];
const mainFlags = declaredFlags('server/main.ts');

// The start lines serve the page from a relative --static dist: a fresh clone has none until it is built.
before(async () => {
  await ensurePageBuilt();
});

test('the documented commands are marked, and each marker is one this test runs', () => {
  for (const b of blocks) assert.ok(KNOWN.has(b.name), `${b.file}: unknown command marker ${b.name}`);
  assert.ok(blocks.some((b) => b.file === 'docs/api.md' && b.name === 'coordinator'), "docs/api.md's start line is marked");
  assert.ok(blocks.some((b) => b.file === 'README.md' && b.name === 'coordinator'), "README's coordinator line is marked");
  assert.ok(blocks.some((b) => b.file === 'README.md' && b.name === 'tokens'), "README's token line is marked");
});

for (const b of blocks.filter((x) => x.name === 'coordinator')) {
  for (const line of b.lines) {
    test(`${b.file}: ${line}`, async () => {
      const words = line.split(/\s+/);
      assert.deepEqual(words.slice(0, 3), ['npx', 'tsx', 'server/main.ts'], 'a coordinator start line');
      const flags = parseFlags(words.slice(3), mainFlags);
      const tmp = mkdtempSync(join(tmpdir(), 'doc-command-'));
      try {
        const subst: Record<string, string> = { port: '0', db: join(tmp, 'coordinator.db') };
        if (flags.has('auth')) {
          const gen = spawnSync('bash', [join(ROOT, 'deploy/k8s/base/secrets/generate.sh'), join(tmp, 'secrets')], { encoding: 'utf8' });
          assert.equal(gen.status, 0, gen.stderr);
          subst.auth = join(tmp, 'secrets', 'auth.json');
        }
        const c = await startCoordinator(withFlags(words.slice(3), subst));
        try {
          const health = await fetch(`${c.url}/healthz`);
          assert.equal(health.status, 200);
          assert.equal(((await health.json()) as { status: string }).status, 'ok');
          if (flags.has('static')) {
            const page = await fetch(`${c.url}/`);
            assert.equal(page.status, 200, `--static ${flags.get('static')![0]} (relative to the working directory) serves the page`);
            assert.match(await page.text(), /<html/i);
          }
        } finally {
          assert.equal(await c.stop(), 0, `stops cleanly on SIGTERM; output:\n${c.output()}`);
        }
      } finally {
        rmSync(tmp, { recursive: true, force: true });
      }
    });
  }
}

for (const b of blocks.filter((x) => x.name === 'tokens')) {
  test(`${b.file}: ${b.lines.join('; ')}`, () => {
    const tmp = mkdtempSync(join(tmpdir(), 'doc-tokens-'));
    try {
      for (const line of b.lines) {
        assert.equal(line, 'bash deploy/k8s/base/secrets/generate.sh', 'the token command');
        const res = spawnSync('bash', [...line.split(/\s+/).slice(1), tmp], { cwd: ROOT, encoding: 'utf8' });
        assert.equal(res.status, 0, res.stderr);
        for (const f of ['auth.json', 'node-token', 'refiner-token', 'admin-token']) assert.match(readFileSync(join(tmp, f), 'utf8'), /\S/, f);
        // Run again, it refuses to overwrite tokens in use.
        assert.equal(spawnSync('bash', [...line.split(/\s+/).slice(1), tmp], { cwd: ROOT }).status, 1);
      }
    } finally {
      rmSync(tmp, { recursive: true, force: true });
    }
  });
}
