/** Writes generated model folders to disk with a manifest of sizes and SHA-256 digests (Node). */
import { createHash } from 'node:crypto';
import { mkdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { MANIFEST_FILE, parseManifest, type ModelManifest } from '../../worker/model';
import { buildTinyModel, DEFAULT_TINY_SIZES, type TinyModelOptions, type TinySizes } from './generate';

/**
 * Bump when the generator's output changes for the same options (init, tokenizer, graph,
 * config fields), so folders written by an older generator are rewritten. generate.test.ts
 * pins tiny-llama's digests and fails until this is bumped with them.
 */
export const GENERATOR_VERSION = 2;

/** What determines a generated folder's bytes; recorded in its manifest.json. */
export interface GeneratorSpec {
  version: number;
  arch: NonNullable<TinyModelOptions['arch']>;
  seed: number;
  sizes: TinySizes;
}

/** manifest.json of a generated folder: the files plus the spec that produced them. */
export interface GeneratedManifest extends ModelManifest {
  generator: GeneratorSpec;
}

export function specOf(options: TinyModelOptions): GeneratorSpec {
  return { version: GENERATOR_VERSION, arch: options.arch ?? 'llama', seed: options.seed, sizes: { ...DEFAULT_TINY_SIZES, ...options.sizes } };
}

export function manifestOf(files: ReadonlyMap<string, Uint8Array>): ModelManifest {
  const entries = [...files.entries()]
    .filter(([path]) => path !== MANIFEST_FILE)
    .map(([path, bytes]) => ({ path, size: bytes.length, sha256: createHash('sha256').update(bytes).digest('hex') }))
    .sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
  return { files: entries };
}

/** Builds the model in memory and writes it to `dir` (replacing what is there), manifest.json last. */
export async function makeTinyModel(options: TinyModelOptions & { dir: string }): Promise<ModelManifest> {
  const model = buildTinyModel(options);
  const manifest = manifestOf(model.files);
  // The manifest goes first as a removal, last as a write: a folder interrupted half-way has none, so it is rebuilt.
  await rm(join(options.dir, MANIFEST_FILE), { force: true });
  for (const [path, bytes] of model.files) {
    const full = join(options.dir, path);
    await mkdir(dirname(full), { recursive: true });
    await writeFile(full, bytes);
  }
  const onDisk: GeneratedManifest = { generator: specOf(options), ...manifest };
  await writeFile(join(options.dir, MANIFEST_FILE), JSON.stringify(onDisk, null, 2) + '\n');
  return manifest;
}

/**
 * The manifest of `dir` if it was written by this generator with these options and every file it
 * lists is there with its size; null otherwise. Cheap (reads one file, stats the rest): the
 * generator is deterministic, so the spec stands for the bytes.
 */
export async function currentManifest(options: TinyModelOptions, dir: string): Promise<ModelManifest | null> {
  const text = await readFile(join(dir, MANIFEST_FILE), 'utf8').catch(() => null);
  if (text === null) return null;
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch {
    return null;
  }
  const generator = (raw as { generator?: unknown } | null)?.generator;
  if (JSON.stringify(generator) !== JSON.stringify(specOf(options))) return null;
  let manifest: ModelManifest;
  try {
    manifest = parseManifest(raw);
  } catch {
    return null;
  }
  for (const f of manifest.files) {
    const st = await stat(join(dir, f.path)).catch(() => null);
    if (!st?.isFile() || st.size !== f.size) return null;
  }
  return manifest;
}
