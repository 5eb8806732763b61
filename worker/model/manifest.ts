/**
 * The manifest of a model folder: every file with its size and SHA-256 digest,
 * so a node can verify what it downloaded before it trusts it.
 */
import { AppError } from '../../shared';

export interface ManifestEntry {
  /** Path inside the model folder, `/`-separated (e.g. `onnx/model.onnx`). */
  path: string;
  size: number;
  /** Lower-case hex. */
  sha256: string;
}

export interface ModelManifest {
  files: ManifestEntry[];
}

export const MANIFEST_FILE = 'manifest.json';

export function parseManifest(json: string | unknown): ModelManifest {
  let raw = json;
  if (typeof json === 'string') {
    try {
      raw = JSON.parse(json);
    } catch (err) {
      throw new AppError('MODEL_CORRUPT', `manifest.json is not JSON (${(err as Error).message}); regenerate the model folder's manifest.`);
    }
  }
  const files = (raw as { files?: unknown } | null)?.files;
  if (!Array.isArray(files)) throw new AppError('MODEL_CORRUPT', 'manifest.json has no "files" list; regenerate it.');
  const out: ManifestEntry[] = [];
  const seen = new Set<string>();
  for (const [i, f] of files.entries()) {
    const { path, size, sha256 } = (f ?? {}) as Record<string, unknown>;
    const pathOk = typeof path === 'string' && path.length > 0 && !path.startsWith('/') && !path.split('/').some((p) => p === '..' || p === '' || p === '.');
    if (!pathOk || !Number.isSafeInteger(size) || (size as number) < 0 || typeof sha256 !== 'string' || !/^[0-9a-f]{64}$/.test(sha256)) {
      throw new AppError('MODEL_CORRUPT', `manifest.json entry ${i} is not {path, size, sha256}; regenerate it.`, { index: i });
    }
    if (seen.has(path)) throw new AppError('MODEL_CORRUPT', `manifest.json lists ${path} twice.`, { path });
    seen.add(path);
    out.push({ path, size: size as number, sha256 });
  }
  return { files: out };
}
