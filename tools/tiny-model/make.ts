/** Writes the tiny model folder to disk with a manifest of sizes and SHA-256 digests (Node). */
import { createHash } from 'node:crypto';
import { mkdir, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { MANIFEST_FILE, type ModelManifest } from '../../worker/model';
import { buildTinyModel, type TinyModelOptions } from './generate';

export function manifestOf(files: ReadonlyMap<string, Uint8Array>): ModelManifest {
  const entries = [...files.entries()]
    .filter(([path]) => path !== MANIFEST_FILE)
    .map(([path, bytes]) => ({ path, size: bytes.length, sha256: createHash('sha256').update(bytes).digest('hex') }))
    .sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
  return { files: entries };
}

export async function makeTinyModel(options: TinyModelOptions & { dir: string }): Promise<ModelManifest> {
  const model = buildTinyModel(options);
  const manifest = manifestOf(model.files);
  for (const [path, bytes] of model.files) {
    const full = join(options.dir, path);
    await mkdir(dirname(full), { recursive: true });
    await writeFile(full, bytes);
  }
  await writeFile(join(options.dir, MANIFEST_FILE), JSON.stringify(manifest, null, 2) + '\n');
  return manifest;
}
