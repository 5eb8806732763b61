/**
 * The safetensors format: an 8-byte little-endian header length, a JSON header
 * naming each tensor's dtype, shape and byte range, then the tensor bytes.
 * Parsing checks every claim the header makes against the file before any tensor
 * is read; a file that lies is SAFETENSORS_INVALID with what is wrong.
 */
import { AppError } from '../../shared';
import { bf16ToF32, f16ToF32, f32ToBf16, f32ToF16 } from './half';

/** Bytes per element of each dtype the format defines. */
const DTYPE_SIZES: Record<string, number> = {
  BOOL: 1,
  U8: 1,
  I8: 1,
  F8_E4M3: 1,
  F8_E5M2: 1,
  I16: 2,
  U16: 2,
  F16: 2,
  BF16: 2,
  I32: 4,
  U32: 4,
  F32: 4,
  I64: 8,
  U64: 8,
  F64: 8,
};

/** Dtypes `tensorAsFloat32` converts and `writeSafetensors` writes. */
export type FloatDtype = 'F32' | 'F16' | 'BF16';

export interface SafetensorsTensorInfo {
  name: string;
  /** As written in the header; may be a dtype this code cannot read (DTYPE_UNSUPPORTED on read). */
  dtype: string;
  shape: number[];
  /** Byte range inside the data section (after the header). */
  begin: number;
  end: number;
}

export interface SafetensorsFile {
  /** The `__metadata__` map (string to string), empty when absent. */
  metadata: Record<string, string>;
  /** Tensors by name, in header order. */
  tensors: Map<string, SafetensorsTensorInfo>;
  /** The whole file. */
  bytes: Uint8Array;
  /** Offset of the data section in `bytes`. */
  dataStart: number;
}

export interface TensorToWrite {
  name: string;
  dtype: FloatDtype;
  shape: number[];
  /** float32 values; converted to the dtype on write. */
  data: Float32Array;
}

const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/** Header larger than this is refused before it is decoded (real files use a few MB at most). */
export const MAX_HEADER_BYTES = 100 << 20;

function invalid(what: string, details?: Record<string, unknown>): AppError {
  return new AppError('SAFETENSORS_INVALID', `Invalid safetensors file: ${what}. Re-export or re-download the file.`, details);
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

export function parseSafetensors(bytes: Uint8Array): SafetensorsFile {
  if (bytes.length < 8) throw invalid(`file is ${bytes.length} bytes, shorter than the 8-byte header length`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const lenLo = view.getUint32(0, true);
  const lenHi = view.getUint32(4, true);
  const headerLen = lenHi * 2 ** 32 + lenLo;
  if (headerLen > MAX_HEADER_BYTES) throw invalid(`header length ${headerLen} exceeds the ${MAX_HEADER_BYTES}-byte bound`);
  if (8 + headerLen > bytes.length) {
    throw invalid(`header length ${headerLen} runs past the end of the ${bytes.length}-byte file`);
  }
  let header: unknown;
  try {
    header = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes.subarray(8, 8 + headerLen)));
  } catch (err) {
    throw invalid(`header is not UTF-8 JSON (${(err as Error).message})`);
  }
  if (!isRecord(header)) throw invalid('header is not a JSON object');
  const dataStart = 8 + headerLen;
  const dataLen = bytes.length - dataStart;
  const metadata: Record<string, string> = {};
  const tensors = new Map<string, SafetensorsTensorInfo>();
  for (const [name, entry] of Object.entries(header)) {
    if (name === '__metadata__') {
      if (!isRecord(entry)) throw invalid('__metadata__ is not an object');
      for (const [k, v] of Object.entries(entry)) {
        if (typeof v !== 'string') throw invalid(`__metadata__.${k} is not a string`);
        metadata[k] = v;
      }
      continue;
    }
    if (!isRecord(entry)) throw invalid(`entry ${name} is not an object`, { tensor: name });
    const { dtype, shape, data_offsets: offsets } = entry;
    if (typeof dtype !== 'string') throw invalid(`tensor ${name} has no dtype`, { tensor: name });
    if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
      throw invalid(`tensor ${name} shape is not a list of non-negative integers`, { tensor: name });
    }
    if (
      !Array.isArray(offsets) ||
      offsets.length !== 2 ||
      !offsets.every((o) => Number.isSafeInteger(o) && o >= 0) ||
      (offsets[0] as number) > (offsets[1] as number)
    ) {
      throw invalid(`tensor ${name} data_offsets is not [begin, end] with begin <= end`, { tensor: name });
    }
    const [begin, end] = offsets as [number, number];
    if (end > dataLen) {
      throw invalid(`tensor ${name} ends at ${end}, past the ${dataLen}-byte data section`, { tensor: name, end, dataLen });
    }
    const elems = (shape as number[]).reduce((a, b) => a * b, 1);
    const size = DTYPE_SIZES[dtype];
    if (size !== undefined && elems * size !== end - begin) {
      throw invalid(`tensor ${name} has ${end - begin} bytes but shape [${shape.join(', ')}] of ${dtype} needs ${elems * size}`, {
        tensor: name,
      });
    }
    tensors.set(name, { name, dtype, shape: shape as number[], begin, end });
  }
  // Byte ranges must tile the data section: sorted by begin, each starts where the last ended.
  const ranges = [...tensors.values()].sort((a, b) => a.begin - b.begin || a.end - b.end);
  let cursor = 0;
  for (const t of ranges) {
    if (t.begin < cursor) throw invalid(`tensor ${t.name} overlaps the tensor before it (starts at ${t.begin} < ${cursor})`, { tensor: t.name });
    if (t.begin > cursor) throw invalid(`gap before tensor ${t.name} (bytes ${cursor}..${t.begin} belong to no tensor)`, { tensor: t.name });
    cursor = t.end;
  }
  if (cursor !== dataLen) throw invalid(`data section is ${dataLen} bytes but the tensors cover ${cursor}`);
  return { metadata, tensors, bytes, dataStart };
}

function info(file: SafetensorsFile, name: string): SafetensorsTensorInfo {
  const t = file.tensors.get(name);
  if (!t) throw new AppError('MODEL_FILE_MISSING', `The safetensors file has no tensor ${name}.`, { tensor: name });
  return t;
}

export function tensorShape(file: SafetensorsFile, name: string): number[] {
  return info(file, name).shape.slice();
}

/** The tensor's values as float32, converted from F32, F16 or BF16. */
export function tensorAsFloat32(file: SafetensorsFile, name: string): Float32Array {
  const t = info(file, name);
  const start = file.dataStart + t.begin;
  const n = t.shape.reduce((a, b) => a * b, 1);
  const view = new DataView(file.bytes.buffer, file.bytes.byteOffset + start, t.end - t.begin);
  const out = new Float32Array(n);
  switch (t.dtype) {
    case 'F32':
      if (LITTLE_ENDIAN) {
        new Uint8Array(out.buffer).set(file.bytes.subarray(start, start + n * 4));
        return out;
      }
      for (let i = 0; i < n; i++) out[i] = view.getFloat32(i * 4, true);
      return out;
    case 'F16':
      for (let i = 0; i < n; i++) out[i] = f16ToF32(view.getUint16(i * 2, true));
      return out;
    case 'BF16':
      for (let i = 0; i < n; i++) out[i] = bf16ToF32(view.getUint16(i * 2, true));
      return out;
    default:
      throw new AppError('DTYPE_UNSUPPORTED', `Tensor ${name} is ${t.dtype}; only F32, F16 and BF16 are read. Convert the weights.`, {
        tensor: name,
        dtype: t.dtype,
      });
  }
}

/**
 * Writes a safetensors file deterministically: tensors sorted by name, data in the
 * same order, header padded with spaces so the data starts at a multiple of 8.
 */
export function writeSafetensors(tensors: readonly TensorToWrite[], metadata?: Record<string, string>): Uint8Array {
  const parts = [...safetensorsChunks(tensors, metadata)];
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let pos = 0;
  for (const p of parts) {
    out.set(p, pos);
    pos += p.length;
  }
  return out;
}

/**
 * writeSafetensors as its pieces: the length and header first, then each tensor's bytes (converted when reached),
 * so a large file can be streamed to disk without ever being whole in memory.
 */
export function* safetensorsChunks(tensors: readonly TensorToWrite[], metadata?: Record<string, string>): Generator<Uint8Array> {
  const sorted = tensors.slice().sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  const header: Record<string, unknown> = {};
  if (metadata && Object.keys(metadata).length) {
    header.__metadata__ = Object.fromEntries(Object.keys(metadata).sort().map((k) => [k, metadata[k]]));
  }
  let offset = 0;
  for (const [i, t] of sorted.entries()) {
    if (i > 0 && sorted[i - 1]?.name === t.name) throw new AppError('INTERNAL', `Duplicate tensor name ${t.name}.`);
    const elems = t.shape.reduce((a, b) => a * b, 1);
    if (elems !== t.data.length) {
      throw new AppError('SHAPE_MISMATCH', `Tensor ${t.name} has ${t.data.length} values but shape [${t.shape.join(', ')}].`);
    }
    const size = elems * (t.dtype === 'F32' ? 4 : 2);
    header[t.name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + size] };
    offset += size;
  }
  let json = JSON.stringify(header);
  const enc = new TextEncoder();
  let headerBytes = enc.encode(json);
  const pad = (8 - (headerBytes.length % 8)) % 8;
  json += ' '.repeat(pad);
  headerBytes = enc.encode(json);
  const head = new Uint8Array(8 + headerBytes.length);
  const hv = new DataView(head.buffer);
  hv.setUint32(0, headerBytes.length, true);
  hv.setUint32(4, 0, true);
  head.set(headerBytes, 8);
  yield head;
  for (const t of sorted) {
    const n = t.data.length;
    const out = new Uint8Array(n * (t.dtype === 'F32' ? 4 : 2));
    const view = new DataView(out.buffer);
    if (t.dtype === 'F32') {
      if (LITTLE_ENDIAN) out.set(new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength));
      else for (let i = 0; i < n; i++) view.setFloat32(i * 4, t.data[i] as number, true);
    } else {
      const conv = t.dtype === 'F16' ? f32ToF16 : f32ToBf16;
      for (let i = 0; i < n; i++) view.setUint16(i * 2, conv(t.data[i] as number), true);
    }
    yield out;
  }
}
