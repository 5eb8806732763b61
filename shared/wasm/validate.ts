/** Checks that bytes are an agent: a WASI preview1 command module and nothing more. */
import { AppError } from '../errors';
import { LIMITS } from '../limits';
import { SectionId, readSections } from './reader';
import { readFuncType, readStructure, type WasmExport, type WasmImport } from './module';

export const WASI_MODULE = 'wasi_snapshot_preview1';

/**
 * The one host import namespace an agent may use beside WASI: the node's model. A version declares it at upload
 * (config `{ "imports": ["agent_model"] }`); its tasks name the model and run only on nodes with JSPI.
 *
 *   generate(prompt_ptr, prompt_len, out_ptr, out_cap, max_tokens) -> i32
 *     the prompt (UTF-8) goes to the model; the answer's length in bytes comes back and as much of it as fits
 *     is written at out_ptr; negative: MODEL_ERRORS. The agent is suspended while the model works.
 *   last_error(out_ptr, out_cap) -> i32
 *     the last failed call's "CODE: message" (UTF-8), its length back (as much as fits written).
 */
export const MODEL_MODULE = 'agent_model';

const I32 = 0x7f;
/** The functions of MODEL_MODULE and their types (all i32). */
export const MODEL_FUNCTIONS: Readonly<Record<string, { params: number; results: number }>> = {
  generate: { params: 5, results: 1 },
  last_error: { params: 2, results: 1 },
};

/** What `agent_model.generate` answers when it fails: the number, and the codes each stands for. */
export const MODEL_ERRORS = {
  /** The prompt plus max_tokens do not fit the model's context (PROMPT_TOO_LONG). */
  promptTooLong: -1,
  /** Pointers outside memory, a prompt that is not UTF-8, max_tokens out of range (AGENT_MODEL_CALL_INVALID). */
  invalid: -2,
  /** The run made its payload's `modelCalls` calls already (AGENT_MODEL_CALLS_EXHAUSTED). */
  exhausted: -3,
  /** The model failed (its code: MODEL_NOT_FOUND, MODEL_LOAD_FAILED, …). */
  failed: -4,
} as const;

/** Host import namespaces an agent version may declare (config.imports). */
export const HOST_IMPORT_MODULES: readonly string[] = [MODEL_MODULE];

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
export function validateAgentModule(bytes: Uint8Array, opts: { engine?: boolean; imports?: readonly string[] } = {}): AgentModuleInfo {
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
    if (imp.module === MODEL_MODULE) {
      if (!opts.imports?.includes(MODEL_MODULE)) {
        throw new AppError('WASM_FORBIDDEN_IMPORT', `The module imports ${what}; a version that calls the node's model declares it at upload: config {"imports":["${MODEL_MODULE}"]}.`, { import: imp });
      }
      const want = MODEL_FUNCTIONS[imp.name];
      if (!want || imp.kind !== 'func') {
        throw new AppError('WASM_FORBIDDEN_IMPORT', `The module imports ${what}; ${MODEL_MODULE} offers the functions ${Object.keys(MODEL_FUNCTIONS).join(', ')}.`, { import: imp });
      }
      const type = imp.typeIndex === undefined ? null : readFuncType(bytes, sections, imp.typeIndex);
      if (!type || type.params.length !== want.params || type.results.length !== want.results || ![...type.params, ...type.results].every((t) => t === I32)) {
        throw new AppError('WASM_FORBIDDEN_IMPORT', `The module imports ${what} with the wrong type; it takes ${want.params} i32 and returns ${want.results === 1 ? 'an i32' : 'nothing'}.`, { import: imp });
      }
      continue;
    }
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
