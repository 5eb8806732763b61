/**
 * Model folders in the Hugging Face layout, served to the nodes (which never
 * reach the internet) with a manifest of sizes and SHA-256 digests so a node
 * can verify and resume what it stores.
 *
 * The store reads several roots in order (the built-in `data/models`, then each
 * `--models DIR`) and never writes into any of them. A root holds model folders
 * (`root/<name>/config.json`…; a folder without config.json is not a model) or is
 * itself one model folder (`root/config.json`, named after the root). When two roots hold the same name, the first root wins
 * and `collisions()` says which folders were shadowed.
 */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { readdir, realpath, stat } from 'node:fs/promises';
import { basename, join, resolve, sep } from 'node:path';
import { AppError, NAME_PATTERN, parseName } from '../shared';

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

/** A model folder the store serves. */
export interface ModelFolder {
  name: string;
  /** Absolute path of the folder. */
  dir: string;
  /** The root it was found under. */
  root: string;
}

/** A name found under more than one root: the first root's folder is served, the others are not. */
export interface ModelCollision {
  name: string;
  served: string;
  shadowed: string[];
}

/** A file inside a served model folder, resolved for the route that sends it. */
export interface ResolvedModelFile {
  /** The model folder (send the file relative to it). */
  dir: string;
  /** `/`-separated path inside the folder. */
  path: string;
  /** Absolute path. */
  file: string;
  size: number;
}

const NAME_RE = new RegExp(NAME_PATTERN);
/** How long weightBytes trusts its count of a model's files. */
const WEIGHT_RECOUNT_MS = 30_000;

export class ModelStore {
  readonly roots: readonly string[];
  readonly #digests = new Map<string, { size: number; mtimeMs: number; sha256: string }>();
  /** Per model, the bytes of its weight files and when they were counted (weightBytes). */
  readonly #weights = new Map<string, { bytes: number; at: number }>();

  /**
   * Models this coordinator can make on first use though no folder holds them yet (adapters merged into their
   * base on another coordinator of a shared journal): their names are listed, and `locate` makes one when asked.
   */
  onDemand: { names(): string[]; make(name: string): Promise<boolean> } | null = null;

  /** `roots` in priority order; missing roots are skipped (they may appear later). */
  constructor(roots: string | readonly string[]) {
    const list = (typeof roots === 'string' ? [roots] : [...roots]).map((r) => resolve(r));
    this.roots = list.filter((r, i) => list.indexOf(r) === i);
  }

  /** Every model folder, first root first; a name already taken by an earlier root is shadowed. */
  async folders(): Promise<{ folders: ModelFolder[]; collisions: ModelCollision[] }> {
    const byName = new Map<string, ModelFolder>();
    const shadowed = new Map<string, string[]>();
    for (const root of this.roots) {
      for (const f of await foldersIn(root)) {
        const first = byName.get(f.name);
        if (!first) byName.set(f.name, f);
        else if (first.dir !== f.dir) shadowed.set(f.name, [...(shadowed.get(f.name) ?? []), f.dir]);
      }
    }
    const folders = [...byName.values()].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    const collisions = [...shadowed].map(([name, dirs]) => ({ name, served: byName.get(name)!.dir, shadowed: dirs }));
    return { folders, collisions };
  }

  async list(): Promise<string[]> {
    const names = (await this.folders()).folders.map((f) => f.name);
    const extra = (this.onDemand?.names() ?? []).filter((n) => !names.includes(n));
    return extra.length ? [...names, ...extra].sort() : names;
  }

  async collisions(): Promise<ModelCollision[]> {
    return (await this.folders()).collisions;
  }

  /** The folder served under `name` (MODEL_NOT_FOUND if none). */
  async locate(rawName: string): Promise<ModelFolder> {
    const name = parseName(rawName);
    let found = (await this.folders()).folders.find((f) => f.name === name);
    if (!found && this.onDemand?.names().includes(name) && (await this.onDemand.make(name))) {
      found = (await this.folders()).folders.find((f) => f.name === name);
    }
    if (!found) throw new AppError('MODEL_NOT_FOUND', `No model folder ${name} under the models directories; GET /v1/models lists them.`, { model: name });
    return found;
  }

  /** Sizes and digests of every file in the folder (digests cached by size and mtime). */
  async manifest(rawName: string): Promise<ModelManifest> {
    const { name, dir } = await this.locate(rawName);
    const files: ModelFile[] = [];
    for (const { abs, rel } of await walk(dir)) {
      const s = await stat(abs);
      const cached = this.#digests.get(abs);
      let sha256 = cached && cached.size === s.size && cached.mtimeMs === s.mtimeMs ? cached.sha256 : null;
      if (!sha256) {
        sha256 = await digest(abs);
        this.#digests.set(abs, { size: s.size, mtimeMs: s.mtimeMs, sha256 });
      }
      files.push({ path: rel, size: s.size, sha256 });
    }
    return { name, files, totalBytes: files.reduce((n, f) => n + f.size, 0) };
  }

  /**
   * Bytes of a model's weights: its safetensors files, else its ONNX files (with external data), else any
   * .bin or .gguf (adapters/ not counted). Counted with stat only, again after WEIGHT_RECOUNT_MS; null when no
   * root serves the model. The router compares it with what a node can hold (server/scheduler.ts).
   */
  async weightBytes(rawName: string, now = Date.now()): Promise<number | null> {
    const known = this.#weights.get(rawName);
    if (known && now - known.at < WEIGHT_RECOUNT_MS) return known.bytes;
    const folder = await this.locate(rawName).catch(() => null);
    if (!folder) return null;
    const sums = { safetensors: 0, onnx: 0, other: 0 };
    for (const { abs, rel } of await walk(folder.dir)) {
      if (rel.startsWith('adapters/')) continue;
      const kind = /\.safetensors$/.test(rel) ? 'safetensors' : /\.onnx(_data)?$|\.onnx\.data$/.test(rel) ? 'onnx' : /\.(bin|gguf)$/.test(rel) ? 'other' : null;
      if (kind) sums[kind] += (await stat(abs)).size;
    }
    const bytes = sums.safetensors || sums.onnx || sums.other;
    this.#weights.set(folder.name, { bytes, at: now });
    return bytes;
  }

  /** What weightBytes last counted for a model (null: not counted yet); synchronous, for the router. */
  knownWeightBytes(name: string): number | null {
    return this.#weights.get(name)?.bytes ?? null;
  }

  /**
   * Resolves `/models/:name/<path>` to a file in whichever root serves `name`. The path must be
   * `/`-separated segments with no `.`, `..`, empty or hidden segment and no backslash or NUL,
   * and name a regular file (links inside the user's folder are followed, as in a Hugging Face
   * cache snapshot). Anything else is NOT_FOUND, so nothing outside the served folders is reachable.
   */
  async resolveFile(rawName: string, rawPath: string): Promise<ResolvedModelFile> {
    const folder = await this.locate(rawName);
    const segments = rawPath.split('/');
    const notFound = (why: string): AppError =>
      new AppError('NOT_FOUND', `Model ${folder.name} has no file ${JSON.stringify(rawPath.slice(0, 200))} (${why}); its manifest lists its files.`, {
        model: folder.name,
        path: rawPath.slice(0, 200),
      });
    if (!rawPath || segments.some((s) => s === '' || s === '.' || s === '..' || s.startsWith('.') || /[\\\0]/.test(s))) {
      throw notFound('not a plain path inside the folder');
    }
    const file = join(folder.dir, ...segments);
    if (!file.startsWith(folder.dir + sep)) throw notFound('outside the folder');
    const st = await stat(file).catch(() => null);
    if (!st?.isFile()) throw notFound('no such file');
    return { dir: folder.dir, path: segments.join('/'), file, size: st.size };
  }
}

/** The model folders (those with a config.json) directly under `root`, or `root` itself when it is one. */
async function foldersIn(root: string): Promise<ModelFolder[]> {
  const entries = await readdir(root, { withFileTypes: true }).catch(() => null);
  if (!entries) return [];
  if (entries.some((e) => e.name === 'config.json' && (e.isFile() || e.isSymbolicLink()))) {
    const name = basename(root);
    return NAME_RE.test(name) ? [{ name, dir: root, root }] : [];
  }
  const out: ModelFolder[] = [];
  for (const e of entries) {
    if (e.name.startsWith('.') || !NAME_RE.test(e.name)) continue;
    const dir = join(root, e.name);
    const isDir = e.isDirectory() || (e.isSymbolicLink() && (await stat(dir).catch(() => null))?.isDirectory());
    if (isDir && (await stat(join(dir, 'config.json')).catch(() => null))?.isFile()) out.push({ name: e.name, dir, root });
  }
  return out;
}

/** Regular files under `dir` (hidden entries skipped; links followed, each real directory once), sorted by path. */
export async function walk(dir: string): Promise<{ abs: string; rel: string }[]> {
  const out: { abs: string; rel: string }[] = [];
  const seen = new Set<string>();
  const stack: { abs: string; rel: string }[] = [{ abs: dir, rel: '' }];
  while (stack.length) {
    const d = stack.pop()!;
    const real = await realpath(d.abs).catch(() => null);
    if (!real || seen.has(real)) continue;
    seen.add(real);
    for (const e of await readdir(d.abs, { withFileTypes: true })) {
      if (e.name.startsWith('.')) continue;
      const abs = join(d.abs, e.name);
      const rel = d.rel ? `${d.rel}/${e.name}` : e.name;
      const st = e.isSymbolicLink() ? await stat(abs).catch(() => null) : null;
      if (e.isDirectory() || st?.isDirectory()) stack.push({ abs, rel });
      else if (e.isFile() || st?.isFile()) out.push({ abs, rel });
    }
  }
  return out.sort((a, b) => (a.rel < b.rel ? -1 : a.rel > b.rel ? 1 : 0));
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
