export { ByteReader, readSections, findSection, SectionId, type Section } from './reader';
export { readStructure, readFuncType, type FuncType, type ExternKind, type WasmImport, type WasmExport, type MemoryLimits, type ModuleStructure } from './module';
export {
  validateAgentModule,
  WASI_MODULE,
  WASI_PREVIEW1_FUNCTIONS,
  MODEL_MODULE,
  MODEL_FUNCTIONS,
  MODEL_ERRORS,
  HOST_IMPORT_MODULES,
  FUEL_EXPORT,
  GROW_EXPORT,
  WASM_PAGE_BYTES,
  type AgentModuleInfo,
} from './validate';
export {
  capMemory,
  memoryMaximumPages,
  pagesForMB,
  memoryAsImport,
  HOST_MEMORY_MODULE,
  HOST_MEMORY_NAME,
  type HostMemoryDescriptor,
} from './memory';
export { instrumentFuel, type FuelOptions } from './fuel';
export { readInstruction } from './opcodes';
export * from './prepared';
