/**
 * ModelStore over real temp folders: several roots in order, the first root winning a name,
 * a root that is itself a model folder, path traversal refused, user folders never written;
 * and the routes that serve manifests and files (with Range) from whichever root holds them.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdir, mkdtemp, readdir, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Fastify, { type FastifyInstance } from 'fastify';
import { AppError } from '../shared';
import { installErrorHandling } from './http';
import { Metrics } from './metrics';
import { ModelStore } from './models';
import { modelRoutes } from './routes/models';

let tmp = '';
let builtin = '';
let user = '';
let single = '';
let app: FastifyInstance;
const sha = (s: string | Uint8Array): string => createHash('sha256').update(s).digest('hex');

async function put(path: string, text: string): Promise<void> {
  await mkdir(join(path, '..'), { recursive: true });
  await writeFile(path, text);
}

/** Every path under `dir` with its size and mtime: what "untouched" means. */
async function snapshot(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(dir, { recursive: true, withFileTypes: true })) {
    const p = join(e.parentPath, e.name);
    const s = await stat(p);
    out.push(`${p} ${e.isDirectory() ? 'dir' : s.size} ${s.mtimeMs}`);
  }
  return out.sort();
}

before(async () => {
  tmp = await mkdtemp(join(tmpdir(), 'model-store-'));
  builtin = join(tmp, 'builtin');
  user = join(tmp, 'user');
  single = join(tmp, 'my-model');
  await put(join(builtin, 'tiny-llama', 'config.json'), '{"built":"in"}');
  await put(join(builtin, 'tiny-llama', 'onnx', 'model.onnx'), 'onnx bytes');
  await put(join(builtin, 'shared-name', 'config.json'), '{"from":"builtin"}');
  // The user's folders: no manifest.json, a hidden cache folder, a linked weights file (as in an HF cache snapshot).
  await put(join(user, 'shared-name', 'config.json'), '{"from":"user"}');
  await put(join(user, 'qwen', 'config.json'), '{"q":1}');
  await put(join(user, 'qwen', '.cache', 'junk'), 'x');
  await put(join(tmp, 'blobs', 'weights'), 'weights bytes');
  await symlink(join(tmp, 'blobs', 'weights'), join(user, 'qwen', 'model.safetensors'));
  await put(join(single, 'config.json'), '{"single":true}');
  await put(join(user, 'not-a-model', 'notes.txt'), 'no config.json here');
  await put(join(tmp, 'secret.txt'), 'do not serve');
  app = Fastify();
  installErrorHandling(app, new Metrics(Date.now()));
  await app.register(modelRoutes(new ModelStore([builtin, user, single, join(tmp, 'missing')])));
  await app.ready();
});
after(async () => {
  await app.close();
  await rm(tmp, { recursive: true, force: true });
});

test('several roots: names from all of them; the first root wins a collision and says so', async () => {
  const store = new ModelStore([builtin, user, single, join(tmp, 'missing')]);
  assert.deepEqual(await store.list(), ['my-model', 'qwen', 'shared-name', 'tiny-llama']);
  assert.deepEqual(await store.collisions(), [{ name: 'shared-name', served: join(builtin, 'shared-name'), shadowed: [join(user, 'shared-name')] }]);
  const m = await store.manifest('shared-name');
  assert.deepEqual(m.files, [{ path: 'config.json', size: 18, sha256: sha('{"from":"builtin"}') }]);
  // The other order, the other winner.
  assert.equal((await new ModelStore([user, builtin]).locate('shared-name')).dir, join(user, 'shared-name'));
  await assert.rejects(store.manifest('nope'), (e: unknown) => e instanceof AppError && e.code === 'MODEL_NOT_FOUND');
  await assert.rejects(store.manifest('../user'), (e: unknown) => e instanceof AppError && e.code === 'INVALID_ID');
});

test("a user's folder without manifest.json: sizes and digests computed, links followed, hidden files skipped, nothing written", async () => {
  const before = await snapshot(user);
  const store = new ModelStore([builtin, user]);
  const m = await store.manifest('qwen');
  assert.deepEqual(m, {
    name: 'qwen',
    files: [
      { path: 'config.json', size: 7, sha256: sha('{"q":1}') },
      { path: 'model.safetensors', size: 13, sha256: sha('weights bytes') },
    ],
    totalBytes: 20,
  });
  assert.deepEqual(await store.manifest('qwen'), m, 'cached digests give the same manifest');
  await store.resolveFile('qwen', 'model.safetensors');
  assert.deepEqual(await snapshot(user), before);
  // A root that is itself a model folder is served under its own name.
  assert.deepEqual((await new ModelStore([single]).manifest('my-model')).files.map((f) => f.path), ['config.json']);
});

test('resolveFile refuses every path that leaves the folder', async () => {
  const store = new ModelStore([builtin, user]);
  const f = await store.resolveFile('tiny-llama', 'onnx/model.onnx');
  assert.deepEqual(f, { dir: join(builtin, 'tiny-llama'), path: 'onnx/model.onnx', file: join(builtin, 'tiny-llama', 'onnx', 'model.onnx'), size: 10 });
  for (const bad of ['../../secret.txt', 'onnx/../../shared-name/config.json', '/etc/passwd', 'onnx//model.onnx', './config.json', '', 'onnx', '.cache/junk', 'a\\..\\b', 'x\0y']) {
    await assert.rejects(store.resolveFile(bad.startsWith('.c') ? 'qwen' : 'tiny-llama', bad), (e: unknown) => e instanceof AppError && e.code === 'NOT_FOUND', bad);
  }
});

test('routes: manifest and files from whichever root holds the model; Range; traversal is a 404', async () => {
  const man = await app.inject({ method: 'GET', url: '/v1/models/qwen/manifest' });
  assert.equal(man.statusCode, 200);
  assert.equal((man.json() as { totalBytes: number }).totalBytes, 20);
  const file = await app.inject({ method: 'GET', url: '/models/qwen/model.safetensors' });
  assert.equal(file.statusCode, 200);
  assert.equal(file.body, 'weights bytes');
  const range = await app.inject({ method: 'GET', url: '/models/qwen/model.safetensors', headers: { range: 'bytes=8-' } });
  assert.equal(range.statusCode, 206);
  assert.equal(range.body, 'bytes');
  assert.equal((await app.inject({ method: 'GET', url: '/models/shared-name/config.json' })).body, '{"from":"builtin"}');
  assert.equal((await app.inject({ method: 'GET', url: '/models/tiny-llama/onnx/model.onnx' })).body, 'onnx bytes');
  for (const url of ['/models/tiny-llama/..%2F..%2Fsecret.txt', '/models/tiny-llama/%2E%2E/%2E%2E/secret.txt', '/models/qwen/.cache/junk', '/models/tiny-llama/nope.bin']) {
    const res = await app.inject({ method: 'GET', url });
    assert.equal(res.statusCode, 404, url);
    assert.ok(!res.body.includes('do not serve'));
  }
  assert.equal((await app.inject({ method: 'GET', url: '/models/nope/config.json' })).statusCode, 404);
});
