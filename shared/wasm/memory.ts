/** Writes a cap into the module's memory section (engines cannot cap memory from outside). */
import { AppError } from '../errors';
import { ByteReader, SectionId, findSection, readSections } from './reader';
import { readLimits } from './module';
import { WASM_PAGE_BYTES } from './validate';
import { ByteWriter, encodeU32 } from './writer';

export const pagesForMB = (memoryMB: number): number => Math.floor((memoryMB * 1024 * 1024) / WASM_PAGE_BYTES);

/**
 * Rewrites every defined memory so its maximum is min(existing maximum, maxPages).
 * Throws AGENT_MEMORY_LIMIT when a memory already starts above the cap.
 */
export function capMemory(bytes: Uint8Array, maxPages: number): Uint8Array {
  if (!Number.isInteger(maxPages) || maxPages < 0 || maxPages > 65536) {
    throw new AppError('AGENT_MEMORY_LIMIT', `A memory cap must be 0..65536 pages; got ${maxPages}.`);
  }
  const sections = readSections(bytes);
  const section = findSection(sections, SectionId.memory);
  if (!section) return bytes;
  const r = new ByteReader(bytes, section.start, section.end);
  const n = r.u32();
  const payload: number[] = [...encodeU32(n)];
  for (let i = 0; i < n; i++) {
    const mem = readLimits(r);
    if (mem.memory64) r.fail('64-bit memories are not supported');
    if (mem.initialPages > maxPages) {
      throw new AppError(
        'AGENT_MEMORY_LIMIT',
        `The module starts with ${mem.initialPages} pages (${(mem.initialPages * WASM_PAGE_BYTES) >> 20} MiB) of memory, above the cap of ${maxPages} pages; raise limits.memoryMB or shrink the module's initial memory (-Wl,--initial-memory).`,
        { initialPages: mem.initialPages, capPages: maxPages },
      );
    }
    const max = mem.maximumPages === null ? maxPages : Math.min(mem.maximumPages, maxPages);
    payload.push(mem.shared ? 0x03 : 0x01, ...encodeU32(mem.initialPages), ...encodeU32(max));
  }
  if (r.pos !== r.end) r.fail('the memory section has trailing bytes');
  return new ByteWriter()
    .bytes(bytes.subarray(0, section.headerStart))
    .section(SectionId.memory, Uint8Array.from(payload))
    .bytes(bytes.subarray(section.end))
    .finish();
}

/** The maximum of memory 0 in pages (null: none), read from the bytes. */
export function memoryMaximumPages(bytes: Uint8Array): number | null {
  const section = findSection(readSections(bytes), SectionId.memory);
  if (!section) return null;
  const r = new ByteReader(bytes, section.start, section.end);
  if (r.u32() === 0) return null;
  return readLimits(r).maximumPages;
}

/** Where a module rewritten by memoryAsImport takes its memory from. */
export const HOST_MEMORY_MODULE = 'agent_host';
export const HOST_MEMORY_NAME = 'memory';

/** The memory a rewritten module imports: what the host must create and pass. */
export interface HostMemoryDescriptor {
  initialPages: number;
  maximumPages: number | null;
  shared: boolean;
}

/**
 * Turns the module's one defined memory into an import of `agent_host.memory` with the same
 * limits, so the host creates the memory and can reuse it across runs (a fresh
 * WebAssembly.Memory per run reserves ~8 GiB of address space until it is collected).
 * Memory index 0 stays the same memory: exports and data segments are unchanged, and
 * active data segments are still written at instantiation. Returns null when the module
 * defines no memory or more than one (it is then run as it is).
 */
export function memoryAsImport(bytes: Uint8Array): { bytes: Uint8Array; memory: HostMemoryDescriptor } | null {
  const sections = readSections(bytes);
  const memSection = findSection(sections, SectionId.memory);
  if (!memSection) return null;
  const r = new ByteReader(bytes, memSection.start, memSection.end);
  if (r.u32() !== 1) return null;
  const limits = readLimits(r);
  if (limits.memory64) return null;
  const entry = [
    ...encodeU32(HOST_MEMORY_MODULE.length),
    ...new TextEncoder().encode(HOST_MEMORY_MODULE),
    ...encodeU32(HOST_MEMORY_NAME.length),
    ...new TextEncoder().encode(HOST_MEMORY_NAME),
    0x02,
    (limits.maximumPages === null ? 0 : 1) | (limits.shared ? 2 : 0),
    ...encodeU32(limits.initialPages),
    ...(limits.maximumPages === null ? [] : encodeU32(limits.maximumPages)),
  ];
  const importSection = findSection(sections, SectionId.import);
  let importPayload: Uint8Array;
  if (importSection) {
    const ir = new ByteReader(bytes, importSection.start, importSection.end);
    const count = ir.u32();
    importPayload = new ByteWriter().bytes(encodeU32(count + 1)).bytes(bytes.subarray(ir.pos, importSection.end)).bytes(entry).finish();
  } else {
    importPayload = new ByteWriter().bytes(encodeU32(1)).bytes(entry).finish();
  }
  const out = new ByteWriter().bytes(bytes.subarray(0, 8));
  let importDone = false;
  for (const s of sections) {
    if (s.id === SectionId.import) {
      out.section(SectionId.import, importPayload);
      importDone = true;
      continue;
    }
    if (s.id === SectionId.memory) continue;
    // No import section: the new one goes right before the first section that must follow it.
    if (!importDone && s.id !== SectionId.custom && s.id !== SectionId.type) {
      out.section(SectionId.import, importPayload);
      importDone = true;
    }
    out.bytes(bytes.subarray(s.headerStart, s.end));
  }
  if (!importDone) out.section(SectionId.import, importPayload);
  return { bytes: out.finish(), memory: { initialPages: limits.initialPages, maximumPages: limits.maximumPages, shared: limits.shared } };
}
