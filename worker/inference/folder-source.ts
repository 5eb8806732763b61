/**
 * A model source over folders on disk (Node: tests, the CLI and the benchmark): `<root>/<model>/…`.
 * Node-only (node:fs); exported from worker/node.ts, never from the browser bundles.
 */
import { readdir, readFile, stat } from 'node:fs/promises';
import { join, relative, sep } from 'node:path';
import { AppError, parseName } from '../../shared';
import type { ModelFiles, ModelSource } from './service';

async function walk(dir: string): Promise<string[]> {
  const out: string[] = [];
  const stack = [dir];
  while (stack.length) {
    const d = stack.pop()!;
    for (const e of await readdir(d, { withFileTypes: true })) {
      if (e.name.startsWith('.')) continue;
      const p = join(d, e.name);
      if (e.isDirectory()) stack.push(p);
      else if (e.isFile()) out.push(p);
    }
  }
  return out.sort();
}

export function folderSource(root: string): ModelSource {
  return {
    async list() {
      const entries = await readdir(root, { withFileTypes: true }).catch(() => []);
      return entries.filter((e) => e.isDirectory() && !e.name.startsWith('.')).map((e) => e.name).sort();
    },
    async ensure(model): Promise<ModelFiles> {
      const name = parseName(model);
      const dir = join(root, name);
      const st = await stat(dir).catch(() => null);
      if (!st?.isDirectory()) throw new AppError('MODEL_NOT_FOUND', `No model folder ${name} under ${root}.`, { model: name });
      const files = await walk(dir);
      let totalBytes = 0;
      for (const f of files) totalBytes += (await stat(f)).size;
      return {
        paths: files.map((f) => relative(dir, f).split(sep).join('/')),
        totalBytes,
        async readFile(path) {
          try {
            return new Uint8Array(await readFile(join(dir, ...path.split('/'))));
          } catch (err) {
            throw new AppError('MODEL_FILE_MISSING', `${name} has no readable ${path}.`, { model: name, file: path }, { cause: err });
          }
        },
      };
    },
  };
}
