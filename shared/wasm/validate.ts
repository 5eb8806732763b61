/** Checks that bytes are an agent: a WASI preview1 command module and nothing more. */
import { AppError } from '../errors';
import { LIMITS } from '../limits';
import { SectionId, readSections } from './reader';
import { readStructure, type WasmExport, type WasmImport } from './module';

export const WASI_MODULE = 'wasi_snapshot_preview1';

/** Every function of WASI preview1; an import of any other name cannot link. */
export const WASI_PREVIEW1_FUNCTIONS: ReadonlySet<string> = new Set([
  'args_get', 'args_sizes_get', 'environ_get', 'environ_sizes_get', 'clock_res_get', 'clock_time_get',
  'fd_advise', 'fd_allocate', 'fd_close', 'fd_datasync', 'fd_fdstat_get', 'fd_fdstat_set_flags',
  'fd_fdstat_set_rights', 'fd_filestat_get', 'fd_filestat_set_size', 'fd_filestat_set_times', 'fd_pread',
  'fd_prestat_get', 'fd_prestat_dir_name', 'fd_pwrite', 'fd_read', 'fd_readdir', 'fd_renumber', 'fd_seek',
  'fd_sync', 'fd_tell', 'fd_write', 'path_create_directory', 'path_filestat_get', 'path_filestat_set_times',
  'path_link', 'path_open', 'path_readlink', 'path_remove_directory', 'path_rename', 'path_symlink',
  'path_unlink_file', 'poll_oneoff', 'proc_exit', 'proc_raise', 'sched_yield', 'random_get', 'sock_accept',
  'sock_recv', 'sock_send', 'sock_shutdown',
]);

/** Export names the runtime adds when it instruments a module. */
export const FUEL_EXPORT = '__fuel';
export const GROW_EXPORT = '__last_grow';
export const RESERVED_EXPORTS: readonly string[] = [FUEL_EXPORT, GROW_EXPORT];

export const WASM_PAGE_BYTES = 65536;

export interface AgentModuleInfo {
  byteLength: number;
  imports: WasmImport[];
  exports: WasmExport[];
  /** Memory 0 (the exported `memory`), in 64 KiB pages. */
  initialPages: number;
  /** null: the module sets no maximum (the runtime's cap applies). */
  maximumPages: number | null;
  functions: number;
}

/**
 * Validates an agent module. Throws AppError WASM_TOO_LARGE, WASM_INVALID,
 * WASM_FORBIDDEN_IMPORT or WASM_MISSING_EXPORT; returns what the module declares.
 */
export function validateAgentModule(bytes: Uint8Array, opts: { engine?: boolean } = {}): AgentModuleInfo {
  if (bytes.length > LIMITS.maxWasmBytes) {
    throw new AppError(
      'WASM_TOO_LARGE',
      `The module is ${bytes.length} bytes; the limit is ${LIMITS.maxWasmBytes}. Strip debug sections (wasm-strip) or build with -O2/-Os.`,
      { bytes: bytes.length, limit: LIMITS.maxWasmBytes },
    );
  }
  const sections = readSections(bytes);
  const s = readStructure(bytes, sections);

  // `engine: false` where the bytes are compiled right after (the node): the compile checks them anyway,
  // and WebAssembly.validate is a full decode (about 0.4 s on a 64 MiB module here).
  if (opts.engine !== false && typeof WebAssembly !== 'undefined' && typeof WebAssembly.validate === 'function' && !WebAssembly.validate(bytes as Uint8Array<ArrayBuffer>)) {
    throw new AppError('WASM_INVALID', 'The engine refuses the module (WebAssembly.validate is false). Rebuild it with a WebAssembly toolchain for wasm32-wasi.');
  }

  for (const imp of s.imports) {
    const what = `${imp.module}.${imp.name} (${imp.kind})`;
    if (imp.module !== WASI_MODULE) {
      throw new AppError('WASM_FORBIDDEN_IMPORT', `The module imports ${what}; agents may import only ${WASI_MODULE} functions. Build for wasm32-wasi without host bindings.`, { import: imp });
    }
    if (imp.kind !== 'func') {
      throw new AppError('WASM_FORBIDDEN_IMPORT', `The module imports ${what}; agents must define their own memory, tables and globals and import only WASI functions.`, { import: imp });
    }
    if (!WASI_PREVIEW1_FUNCTIONS.has(imp.name)) {
      throw new AppError('WASM_FORBIDDEN_IMPORT', `The module imports ${what}, which is not a WASI preview1 function.`, { import: imp });
    }
  }

  const start = s.exports.find((e) => e.name === '_start');
  const memory = s.exports.find((e) => e.name === 'memory');
  if (!start || start.kind !== 'func' || !memory || memory.kind !== 'memory') {
    throw new AppError('WASM_MISSING_EXPORT', 'The module must export a function `_start` and its memory as `memory`: build a WASI command (not a reactor or library).', {
      hasStart: start?.kind === 'func',
      hasMemory: memory?.kind === 'memory',
    });
  }
  for (const name of RESERVED_EXPORTS) {
    if (s.exports.some((e) => e.name === name)) {
      throw new AppError('WASM_INVALID', `The module exports \`${name}\`, a name the runtime reserves; rename that export.`);
    }
  }
  if (sections.some((x) => x.id === SectionId.start)) {
    throw new AppError('WASM_INVALID', 'The module has a start section, which would run before the runtime sets its fuel; agents begin in `_start`.');
  }
  const mem = s.memories[memory.index];
  if (!mem) throw new AppError('WASM_INVALID', 'The exported memory is not defined by the module.');
  if (mem.memory64) throw new AppError('WASM_INVALID', 'The module uses a 64-bit memory; build for wasm32-wasi.');

  return {
    byteLength: bytes.length,
    imports: s.imports,
    exports: s.exports,
    initialPages: mem.initialPages,
    maximumPages: mem.maximumPages,
    functions: s.definedFunctions,
  };
}
