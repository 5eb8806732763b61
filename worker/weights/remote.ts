/**
 * The coordinator side of the weight store: the manifest of a model folder and byte ranges of its
 * files, each failure turned into a coded error (MODEL_NOT_FOUND, MODEL_DOWNLOAD_FAILED, or a
 * served file that does not have the manifest's size).
 */
import { AppError } from '../../shared';
import type { WeightManifest } from './schema';

const HEX64 = /^[0-9a-f]{64}$/;

/** Raised inside the store when the served bytes cannot be the manifest's file (wrong length, 416). */
export class ServedMismatch extends Error {
  override readonly name = 'ServedMismatch';
}

export function manifestUrl(base: string, model: string): string {
  return `${base}/v1/models/${encodeURIComponent(model)}/manifest`;
}

export function fileUrl(base: string, model: string, path: string): string {
  return `${base}/models/${encodeURIComponent(model)}/${path.split('/').map(encodeURIComponent).join('/')}`;
}

function isAbort(err: unknown, signal: AbortSignal | undefined): boolean {
  return signal?.aborted === true || (err instanceof DOMException && err.name === 'AbortError');
}

export function cancelled(model: string, signal: AbortSignal | undefined): AppError {
  const reason = signal?.reason as unknown;
  return new AppError('CANCELLED', `Download of ${model} was aborted; the chunks already stored are kept and the next ensure() resumes.`, {
    model,
    reason: reason instanceof Error ? reason.message : String(reason ?? 'aborted'),
  });
}

/** Fetches and checks the manifest. Network failures are MODEL_DOWNLOAD_FAILED (callers may fall back to the stored one). */
export async function fetchManifest(base: string, model: string, signal?: AbortSignal): Promise<WeightManifest> {
  let res: Response;
  try {
    res = await fetch(manifestUrl(base, model), { signal, cache: 'no-store' });
  } catch (err) {
    if (isAbort(err, signal)) throw cancelled(model, signal);
    throw new AppError('MODEL_DOWNLOAD_FAILED', `Could not reach the coordinator at ${base} for the manifest of ${model}; check the node's connection.`, { model }, { cause: err });
  }
  if (res.status === 404) {
    const body = (await res.json().catch(() => null)) as { error?: { code?: string } } | null;
    if (body?.error?.code === 'MODEL_NOT_FOUND' || body?.error?.code === 'NOT_FOUND') {
      throw new AppError('MODEL_NOT_FOUND', `The coordinator has no model ${model}; GET /v1/models lists the ones it serves.`, { model });
    }
  }
  if (!res.ok) throw new AppError('MODEL_DOWNLOAD_FAILED', `The manifest of ${model} answered HTTP ${res.status}.`, { model, status: res.status });
  const raw = (await res.json()) as Partial<WeightManifest>;
  return checkManifest(model, raw);
}

export function checkManifest(model: string, raw: Partial<WeightManifest>): WeightManifest {
  if (!Array.isArray(raw.files)) throw new AppError('MODEL_CORRUPT', `The manifest of ${model} has no files list.`, { model });
  const files = raw.files.map((f, i) => {
    const ok = typeof f?.path === 'string' && f.path.length > 0 && !f.path.split('/').some((s) => s === '' || s === '.' || s === '..') && Number.isSafeInteger(f.size) && f.size >= 0 && typeof f.sha256 === 'string' && HEX64.test(f.sha256);
    if (!ok) throw new AppError('MODEL_CORRUPT', `Entry ${i} of the manifest of ${model} is not {path, size, sha256}.`, { model, index: i });
    return { path: f.path, size: f.size, sha256: f.sha256 };
  });
  return { name: model, files, totalBytes: files.reduce((n, f) => n + f.size, 0) };
}

/**
 * Bytes [start, end) of a file. A whole file is asked for without a Range header; a part with one.
 * A body of the wrong length (or 416) is a ServedMismatch: the served file is not the manifest's.
 */
export async function fetchRange(base: string, model: string, path: string, start: number, end: number, fileSize: number, signal?: AbortSignal): Promise<Uint8Array> {
  const whole = start === 0 && end === fileSize;
  let res: Response;
  let body: ArrayBuffer;
  try {
    res = await fetch(fileUrl(base, model, path), {
      signal,
      cache: 'no-store',
      headers: whole ? {} : { range: `bytes=${start}-${end - 1}` },
    });
    if (res.status === 404) {
      throw new AppError('MODEL_FILE_MISSING', `The coordinator lists ${path} in the manifest of ${model} but does not serve it.`, { model, file: path });
    }
    if (res.status === 416) throw new ServedMismatch(`${path}: range ${start}-${end - 1} not satisfiable`);
    if (!res.ok) throw new AppError('MODEL_DOWNLOAD_FAILED', `Fetching ${model}/${path} answered HTTP ${res.status}.`, { model, file: path, status: res.status });
    body = await res.arrayBuffer();
  } catch (err) {
    if (err instanceof AppError || err instanceof ServedMismatch) throw err;
    if (isAbort(err, signal)) throw cancelled(model, signal);
    throw new AppError('MODEL_DOWNLOAD_FAILED', `The download of ${model}/${path} failed (${(err as Error).message}); ensure() again resumes it.`, { model, file: path }, { cause: err });
  }
  let bytes = new Uint8Array(body);
  // A server that ignores Range answers 200 with the whole file.
  if (!whole && res.status === 200) {
    if (bytes.length !== fileSize) throw new ServedMismatch(`${path}: served ${bytes.length} bytes, manifest says ${fileSize}`);
    bytes = bytes.slice(start, end);
  }
  if (bytes.length !== end - start) {
    if (whole) throw new ServedMismatch(`${path}: served ${bytes.length} bytes, manifest says ${fileSize}`);
    const total = Number(/\/(\d+)$/.exec(res.headers.get('content-range') ?? '')?.[1] ?? NaN);
    if (Number.isFinite(total) && total !== fileSize) throw new ServedMismatch(`${path}: served file has ${total} bytes, manifest says ${fileSize}`);
    throw new AppError('MODEL_DOWNLOAD_FAILED', `The download of ${model}/${path} ended early (${bytes.length} of ${end - start} bytes); ensure() again resumes it.`, { model, file: path });
  }
  return bytes;
}
