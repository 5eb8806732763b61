/** Reads the parts of a module's structure the agent runtime cares about. */
import { ByteReader, SectionId, findSection, type Section } from './reader';

export type ExternKind = 'func' | 'table' | 'memory' | 'global' | 'tag';
const KINDS: readonly ExternKind[] = ['func', 'table', 'memory', 'global', 'tag'];

export interface WasmImport {
  module: string;
  name: string;
  kind: ExternKind;
  /** A function import's type index (into the type section). */
  typeIndex?: number;
}

/** A function type: value type bytes of its params and results (0x7f i32, 0x7e i64, 0x7d f32, 0x7c f64, …). */
export interface FuncType {
  params: number[];
  results: number[];
}

export interface WasmExport {
  name: string;
  kind: ExternKind;
  index: number;
}

export interface MemoryLimits {
  initialPages: number;
  /** null: the module sets no maximum. */
  maximumPages: number | null;
  shared: boolean;
  memory64: boolean;
}

export interface ModuleStructure {
  sections: Section[];
  imports: WasmImport[];
  exports: WasmExport[];
  /** Memories defined by the module (not imported), in index order. */
  memories: MemoryLimits[];
  /** Globals defined by the module (not imported). */
  definedGlobals: number;
  definedFunctions: number;
}

function readKind(r: ByteReader): ExternKind {
  const k = r.u8();
  const kind = KINDS[k];
  if (!kind) r.fail(`unknown extern kind ${k}`);
  return kind;
}

/** Limits of a memory or table: flags, min, max?. */
export function readLimits(r: ByteReader): MemoryLimits {
  const flags = r.u8();
  if (flags > 7) r.fail(`unknown limits flags ${flags}`);
  const memory64 = (flags & 4) !== 0;
  const initialPages = memory64 ? r.u64() : r.u32();
  const maximumPages = flags & 1 ? (memory64 ? r.u64() : r.u32()) : null;
  return { initialPages, maximumPages, shared: (flags & 2) !== 0, memory64 };
}

function skipValType(r: ByteReader): void {
  const b = r.u8();
  if (b === 0x63 || b === 0x64) r.s33();
}

/** Reads an import's descriptor; a function's type index is returned (other kinds: undefined). */
function readImportDesc(r: ByteReader, kind: ExternKind): number | undefined {
  switch (kind) {
    case 'func':
      return r.u32();
    case 'table':
      skipValType(r);
      readLimits(r);
      return;
    case 'memory':
      readLimits(r);
      return;
    case 'global':
      skipValType(r);
      r.u8();
      return;
    case 'tag':
      r.u8();
      r.u32();
      return;
  }
}

function readerFor(bytes: Uint8Array, s: Section): ByteReader {
  return new ByteReader(bytes, s.start, s.end);
}

function expectEnd(r: ByteReader, what: string): void {
  if (r.pos !== r.end) r.fail(`the ${what} section has trailing bytes`);
}

/** Reads a section that is one vector of items (none when the section is absent), checking it ends there. */
function readVector<T>(bytes: Uint8Array, sections: Section[], id: number, what: string, item: (r: ByteReader) => T): T[] {
  const section = findSection(sections, id);
  if (!section) return [];
  const r = readerFor(bytes, section);
  const n = r.u32();
  const out: T[] = [];
  for (let i = 0; i < n; i++) out.push(item(r));
  expectEnd(r, what);
  return out;
}

/** Parses imports, exports, memories and counts; `sections` from readSections. */
export function readStructure(bytes: Uint8Array, sections: Section[]): ModuleStructure {
  const imports = readVector<WasmImport>(bytes, sections, SectionId.import, 'import', (r) => {
    const module = r.name();
    const name = r.name();
    const kind = readKind(r);
    const typeIndex = readImportDesc(r, kind);
    return typeIndex === undefined ? { module, name, kind } : { module, name, kind, typeIndex };
  });
  const exports = readVector<WasmExport>(bytes, sections, SectionId.export, 'export', (r) => {
    const name = r.name();
    const kind = readKind(r);
    return { name, kind, index: r.u32() };
  });
  const memories = readVector(bytes, sections, SectionId.memory, 'memory', readLimits);

  const countOf = (id: number): number => {
    const s = findSection(sections, id);
    return s ? readerFor(bytes, s).u32() : 0;
  };

  return {
    sections,
    imports,
    exports,
    memories,
    definedGlobals: countOf(SectionId.global),
    definedFunctions: countOf(SectionId.function),
  };
}

/**
 * The function type at `index` of the type section; null when there is none or it is not a plain function type
 * (a GC recursion group, say). Reads the section only up to that entry.
 */
export function readFuncType(bytes: Uint8Array, sections: Section[], index: number): FuncType | null {
  const section = findSection(sections, SectionId.type);
  if (!section) return null;
  const r = readerFor(bytes, section);
  const n = r.u32();
  if (index >= n) return null;
  const vec = (): number[] => {
    const count = r.u32();
    const out: number[] = [];
    for (let i = 0; i < count; i++) {
      const b = r.u8();
      if (b === 0x63 || b === 0x64) r.s33();
      out.push(b);
    }
    return out;
  };
  for (let i = 0; i <= index; i++) {
    if (r.u8() !== 0x60) return null; // only plain function types are read; a module using others gets no match
    const params = vec();
    const results = vec();
    if (i === index) return { params, results };
  }
  return null;
}
