/**
 * A minimal protobuf encoder for the parts of onnx.proto a plain fp32 model
 * needs: ModelProto, GraphProto, NodeProto, TensorProto, ValueInfoProto,
 * AttributeProto. Field numbers are those of onnx/onnx.proto (proto2; repeated
 * scalars are written unpacked, which every parser accepts).
 */

/** TensorProto.DataType values used here. */
export const DataType = { FLOAT: 1, INT32: 6, INT64: 7, BOOL: 9 } as const;
export type DataTypeCode = (typeof DataType)[keyof typeof DataType];

/** AttributeProto.AttributeType values used here. */
const AttrType = { FLOAT: 1, INT: 2, STRING: 3, TENSOR: 4, FLOATS: 6, INTS: 7 } as const;

class Writer {
  readonly #chunks: Uint8Array[] = [];
  #len = 0;

  #push(b: Uint8Array): void {
    this.#chunks.push(b);
    this.#len += b.length;
  }

  varint(value: number | bigint): this {
    let v = typeof value === 'bigint' ? BigInt.asUintN(64, value) : value < 0 ? BigInt.asUintN(64, BigInt(value)) : value;
    const out: number[] = [];
    if (typeof v === 'number') {
      if (!Number.isSafeInteger(v)) throw new Error(`varint ${v} is not a safe integer`);
      while (v > 0x7f) {
        out.push((v % 128) | 0x80);
        v = Math.floor(v / 128);
      }
      out.push(v);
    } else {
      while (v > 0x7fn) {
        out.push(Number(v & 0x7fn) | 0x80);
        v >>= 7n;
      }
      out.push(Number(v));
    }
    this.#push(Uint8Array.from(out));
    return this;
  }

  tag(field: number, wire: 0 | 1 | 2 | 5): this {
    return this.varint(field * 8 + wire);
  }

  int(field: number, value: number | bigint): this {
    return this.tag(field, 0).varint(value);
  }

  float(field: number, value: number): this {
    const b = new Uint8Array(4);
    new DataView(b.buffer).setFloat32(0, value, true);
    this.tag(field, 5);
    this.#push(b);
    return this;
  }

  bytes(field: number, value: Uint8Array): this {
    this.tag(field, 2).varint(value.length);
    this.#push(value);
    return this;
  }

  string(field: number, value: string): this {
    return this.bytes(field, new TextEncoder().encode(value));
  }

  message(field: number, build: (w: Writer) => void): this {
    const w = new Writer();
    build(w);
    return this.bytes(field, w.finish());
  }

  finish(): Uint8Array {
    const out = new Uint8Array(this.#len);
    let off = 0;
    for (const c of this.#chunks) {
      out.set(c, off);
      off += c.length;
    }
    return out;
  }
}

export interface OnnxTensor {
  name: string;
  dataType: DataTypeCode;
  dims: number[];
  /**
   * Little-endian element bytes, or a function that makes them when the tensor is written (a large weight:
   * made, written and let go one at a time, so a model's initializers are never all in memory twice).
   */
  raw: Uint8Array | (() => Uint8Array);
}

const LITTLE_ENDIAN = new Uint8Array(Uint16Array.of(1).buffer)[0] === 1;

const ELEMENT_BYTES: Record<DataTypeCode, number> = { [DataType.FLOAT]: 4, [DataType.INT32]: 4, [DataType.INT64]: 8, [DataType.BOOL]: 1 };

/** A tensor's raw byte length, from its dims (a lazy tensor is not made for it). */
export function tensorBytes(t: OnnxTensor): number {
  return typeof t.raw === 'function' ? t.dims.reduce((a, b) => a * b, 1) * ELEMENT_BYTES[t.dataType] : t.raw.length;
}

const rawOf = (t: OnnxTensor): Uint8Array => (typeof t.raw === 'function' ? t.raw() : t.raw);

/** Where an initializer's bytes went: a file beside the model (its name relative to the model's folder), at an offset. */
interface ExternalRef {
  location: string;
  offset: number;
  length: number;
}

export type OnnxAttribute =
  | { name: string; type: 'int'; value: number }
  | { name: string; type: 'ints'; value: number[] }
  | { name: string; type: 'float'; value: number }
  | { name: string; type: 'floats'; value: number[] }
  | { name: string; type: 'string'; value: string }
  | { name: string; type: 'tensor'; value: OnnxTensor };

export interface OnnxNode {
  opType: string;
  name: string;
  inputs: string[];
  outputs: string[];
  attributes: OnnxAttribute[];
}

/** A dimension: a fixed size or a symbolic name such as `batch_size`. */
export type OnnxDim = number | string;

export interface OnnxValueInfo {
  name: string;
  elemType: DataTypeCode;
  shape: OnnxDim[];
}

export interface OnnxGraph {
  name: string;
  nodes: OnnxNode[];
  initializers: OnnxTensor[];
  inputs: OnnxValueInfo[];
  outputs: OnnxValueInfo[];
}

export interface OnnxModel {
  irVersion: number;
  opsetVersion: number;
  producerName: string;
  producerVersion: string;
  docString?: string;
  graph: OnnxGraph;
}

function writeTensor(w: Writer, t: OnnxTensor, external?: ExternalRef): void {
  for (const d of t.dims) w.int(1, d);
  w.int(2, t.dataType);
  w.string(8, t.name);
  if (!external) {
    w.bytes(9, rawOf(t));
    return;
  }
  // TensorProto.external_data (13: StringStringEntryProto key 1, value 2) and data_location (14) = EXTERNAL (1).
  for (const [key, value] of [['location', external.location], ['offset', String(external.offset)], ['length', String(external.length)]] as const) {
    w.message(13, (e) => e.string(1, key).string(2, value));
  }
  w.int(14, 1);
}

function writeAttribute(w: Writer, a: OnnxAttribute): void {
  w.string(1, a.name);
  switch (a.type) {
    case 'float':
      w.float(2, a.value).int(20, AttrType.FLOAT);
      return;
    case 'int':
      w.int(3, a.value).int(20, AttrType.INT);
      return;
    case 'string':
      w.string(4, a.value).int(20, AttrType.STRING);
      return;
    case 'tensor':
      w.message(5, (m) => writeTensor(m, a.value)).int(20, AttrType.TENSOR);
      return;
    case 'floats':
      for (const f of a.value) w.float(7, f);
      w.int(20, AttrType.FLOATS);
      return;
    case 'ints':
      for (const i of a.value) w.int(8, i);
      w.int(20, AttrType.INTS);
      return;
    default: {
      const never: never = a;
      throw new Error(`unknown attribute ${JSON.stringify(never)}`);
    }
  }
}

function writeValueInfo(w: Writer, v: OnnxValueInfo): void {
  w.string(1, v.name);
  w.message(2, (type) =>
    type.message(1, (tensor) => {
      tensor.int(1, v.elemType);
      tensor.message(2, (shape) => {
        for (const d of v.shape) {
          shape.message(1, (dim) => (typeof d === 'number' ? dim.int(1, d) : dim.string(2, d)));
        }
      });
    }),
  );
}

function writeNode(w: Writer, n: OnnxNode): void {
  for (const i of n.inputs) w.string(1, i);
  for (const o of n.outputs) w.string(2, o);
  w.string(3, n.name);
  w.string(4, n.opType);
  for (const a of n.attributes) w.message(5, (m) => writeAttribute(m, a));
}

export function encodeModel(model: OnnxModel): Uint8Array {
  return encode(model, new Map());
}

/** One file of external data: its name (beside model.onnx) and the initializers it holds, in order. */
export interface ExternalDataFile {
  name: string;
  tensors: OnnxTensor[];
  bytes: number;
}

/**
 * The model with its initializers of `minBytes` or more in external data files, as ONNX Runtime and transformers.js
 * read them: `<modelName>_data`, `<modelName>_data_1`, … (transformers.js' chunk names, `use_external_data_format`
 * = the number of files), each at most `chunkBytes` (a tensor larger than that gets a file of its own). Answers the
 * graph's bytes and the files' layout; write each file with `externalDataChunks` (the tensors' bytes are made then).
 */
export function encodeModelExternal(model: OnnxModel, opts: { modelName: string; minBytes?: number; chunkBytes?: number }): { model: Uint8Array; files: ExternalDataFile[] } {
  const minBytes = opts.minBytes ?? 1024;
  const chunkBytes = opts.chunkBytes ?? 1 << 30;
  const files: ExternalDataFile[] = [];
  const refs = new Map<OnnxTensor, ExternalRef>();
  for (const t of model.graph.initializers) {
    const length = tensorBytes(t);
    if (length < minBytes) continue;
    let file = files[files.length - 1];
    if (!file || (file.bytes > 0 && file.bytes + length > chunkBytes)) {
      file = { name: `${opts.modelName}_data${files.length === 0 ? '' : `_${files.length}`}`, tensors: [], bytes: 0 };
      files.push(file);
    }
    refs.set(t, { location: file.name, offset: file.bytes, length });
    file.tensors.push(t);
    file.bytes += length;
  }
  return { model: encode(model, refs), files };
}

/** The bytes of one external data file, tensor by tensor (each made when reached, never all at once). */
export function* externalDataChunks(file: ExternalDataFile): Generator<Uint8Array> {
  for (const t of file.tensors) {
    const raw = rawOf(t);
    if (raw.length !== tensorBytes(t)) throw new Error(`initializer ${t.name} made ${raw.length} bytes where its dims say ${tensorBytes(t)}`);
    yield raw;
  }
}

function encode(model: OnnxModel, external: ReadonlyMap<OnnxTensor, ExternalRef>): Uint8Array {
  const w = new Writer();
  w.int(1, model.irVersion);
  w.string(2, model.producerName);
  w.string(3, model.producerVersion);
  if (model.docString) w.string(6, model.docString);
  w.message(7, (g) => {
    for (const n of model.graph.nodes) g.message(1, (m) => writeNode(m, n));
    g.string(2, model.graph.name);
    for (const t of model.graph.initializers) g.message(5, (m) => writeTensor(m, t, external.get(t)));
    for (const v of model.graph.inputs) g.message(11, (m) => writeValueInfo(m, v));
    for (const v of model.graph.outputs) g.message(12, (m) => writeValueInfo(m, v));
  });
  w.message(8, (op) => op.string(1, '').int(2, model.opsetVersion));
  return w.finish();
}

/** A float32 initializer; `data` may be a function making the values when the tensor is written. */
export function floatTensor(name: string, dims: number[], data: Float32Array | (() => Float32Array)): OnnxTensor {
  const bytes = (d: Float32Array): Uint8Array => {
    // Little-endian hosts (all of them in practice) copy the values as they are.
    if (LITTLE_ENDIAN) return new Uint8Array(d.buffer.slice(d.byteOffset, d.byteOffset + d.byteLength));
    const raw = new Uint8Array(d.length * 4);
    const view = new DataView(raw.buffer);
    for (let i = 0; i < d.length; i++) view.setFloat32(i * 4, d[i] as number, true);
    return raw;
  };
  return { name, dataType: DataType.FLOAT, dims, raw: typeof data === 'function' ? () => bytes(data()) : bytes(data) };
}

export function int64Tensor(name: string, dims: number[], data: readonly number[]): OnnxTensor {
  const raw = new Uint8Array(data.length * 8);
  const view = new DataView(raw.buffer);
  for (const [i, v] of data.entries()) view.setBigInt64(i * 8, BigInt(v), true);
  return { name, dataType: DataType.INT64, dims, raw };
}
