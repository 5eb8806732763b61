/**
 * Model folders in the Hugging Face layout, served to the nodes (which never
 * reach the internet) with a manifest of sizes and SHA-256 digests so a node
 * can verify and resume what it stores.
 */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { readdir, stat } from 'node:fs/promises';
import { join, relative, sep } from 'node:path';
import { AppError, parseName } from '../shared';

export interface ModelFile {
  path: string;
  size: number;
  sha256: string;
}

export interface ModelManifest {
  name: string;
  files: ModelFile[];
  totalBytes: number;
}

export class ModelStore {
  readonly root: string;
  readonly #digests = new Map<string, { size: number; mtimeMs: number; sha256: string }>();

  constructor(root: string) {
    this.root = root;
  }

  async list(): Promise<string[]> {
    const entries = await readdir(this.root, { withFileTypes: true }).catch(() => []);
    return entries.filter((e) => e.isDirectory() && !e.name.startsWith('.')).map((e) => e.name).sort();
  }

  /** Sizes and digests of every file in the folder (digests cached by size and mtime). */
  async manifest(rawName: string): Promise<ModelManifest> {
    const name = parseName(rawName);
    const dir = join(this.root, name);
    const st = await stat(dir).catch(() => null);
    if (!st?.isDirectory()) throw new AppError('MODEL_NOT_FOUND', `No model folder ${name} under the models directory; GET /v1/models lists them.`, { model: name });
    const files: ModelFile[] = [];
    for (const abs of await walk(dir)) {
      const s = await stat(abs);
      const cached = this.#digests.get(abs);
      let sha256 = cached && cached.size === s.size && cached.mtimeMs === s.mtimeMs ? cached.sha256 : null;
      if (!sha256) {
        sha256 = await digest(abs);
        this.#digests.set(abs, { size: s.size, mtimeMs: s.mtimeMs, sha256 });
      }
      files.push({ path: relative(dir, abs).split(sep).join('/'), size: s.size, sha256 });
    }
    return { name, files, totalBytes: files.reduce((n, f) => n + f.size, 0) };
  }
}

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

function digest(path: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const h = createHash('sha256');
    createReadStream(path)
      .on('data', (chunk) => h.update(chunk))
      .on('end', () => resolve(h.digest('hex')))
      .on('error', reject);
  });
}
