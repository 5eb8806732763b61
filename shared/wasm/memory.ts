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
