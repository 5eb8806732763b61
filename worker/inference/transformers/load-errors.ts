/**
 * Load failures as coded errors: files checked before transformers.js sees them (a missing external
 * data file would otherwise crash Node through an unhandled rejection), and the library's own errors
 * mapped to codes.
 */
import { AppError } from '../../../shared';

/** The file-name suffix transformers.js adds for each dtype (`onnx/model<suffix>.onnx`). */
const DTYPE_SUFFIX: Readonly<Record<string, string>> = {
  fp32: '',
  fp16: '_fp16',
  int8: '_int8',
  uint8: '_uint8',
  q8: '_quantized',
  q4: '_q4',
  q4f16: '_q4f16',
  bnb4: '_bnb4',
};

export function dtypeSuffix(dtype: string): string {
  const s = DTYPE_SUFFIX[dtype];
  if (s === undefined) throw new AppError('MODEL_UNSUPPORTED', `dtype ${dtype} is not one of ${Object.keys(DTYPE_SUFFIX).join(', ')}.`, { dtype });
  return s;
}

/** The ONNX files a decoder folder must hold for `dtype`, given its parsed config.json. */
export function requiredOnnxFiles(config: Record<string, unknown>, dtype: string, fileName = 'model'): string[] {
  const base = `${fileName}${dtypeSuffix(dtype)}.onnx`;
  const files = [`onnx/${base}`];
  const tjs = config['transformers.js_config'];
  const ext = typeof tjs === 'object' && tjs !== null ? (tjs as Record<string, unknown>)['use_external_data_format'] : undefined;
  let chunks = 0;
  if (typeof ext === 'object' && ext !== null) {
    const byFile = ext as Record<string, unknown>;
    chunks = Number(byFile[base] ?? byFile[fileName] ?? 0);
  } else if (ext !== undefined) {
    chunks = Number(ext);
  }
  for (let i = 0; i < chunks; i++) files.push(`onnx/${base}_data${i === 0 ? '' : `_${i}`}`);
  return files;
}

/**
 * Node only: checks that config.json parses and every ONNX file is there, before transformers.js loads;
 * returns the ONNX files' total size (the weights).
 */
export async function checkLocalFolder(dir: string, dtype: string): Promise<number> {
  // A variable specifier keeps the browser bundle free of node:fs; this runs only where a local path is given.
  const fsName = 'node:fs/promises';
  const fs = (await import(/* @vite-ignore */ fsName)) as typeof import('node:fs/promises');
  const path = (name: string): string => `${dir.replace(/\/$/, '')}/${name}`;
  let text: string;
  try {
    text = await fs.readFile(path('config.json'), 'utf8');
  } catch {
    throw new AppError('MODEL_FILE_MISSING', `The model folder ${dir} has no config.json.`, { dir, file: 'config.json' });
  }
  let config: Record<string, unknown>;
  try {
    config = JSON.parse(text) as Record<string, unknown>;
  } catch (err) {
    throw new AppError('MODEL_CORRUPT', `config.json in ${dir} is not valid JSON.`, { dir, file: 'config.json' }, { cause: err });
  }
  let bytes = 0;
  for (const file of requiredOnnxFiles(config, dtype)) {
    try {
      bytes += (await fs.stat(path(file))).size;
    } catch {
      throw new AppError('MODEL_FILE_MISSING', `The model folder ${dir} has no ${file} (dtype ${dtype}).`, { dir, file, dtype });
    }
  }
  return bytes;
}

/** Maps an error thrown while transformers.js loads a model to a coded one. */
export function loadError(err: unknown, modelId: string): AppError {
  if (err instanceof AppError) return err;
  const message = err instanceof Error ? err.message : String(err);
  if (/Unsupported model type|Unknown model class|Unsupported (?:layer|device)/i.test(message)) {
    return new AppError('MODEL_UNSUPPORTED', `transformers.js cannot run ${modelId}: ${message}`, { model: modelId }, { cause: err });
  }
  if (/Could not locate file|file was not found|404|ENOENT/i.test(message)) {
    return new AppError('MODEL_FILE_MISSING', `A file of ${modelId} is missing: ${message}`, { model: modelId }, { cause: err });
  }
  if (/protobuf|Failed to load model|parsing|Unexpected token|invalid|corrupt|ModelProto|Load model/i.test(message)) {
    return new AppError('MODEL_CORRUPT', `${modelId} could not be read: ${message}`, { model: modelId }, { cause: err });
  }
  return new AppError('INFERENCE_FAILED', `Loading ${modelId} failed: ${message}`, { model: modelId }, { cause: err });
}
