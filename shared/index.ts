export * from './errors';
export * from './ids';
export * from './limits';
export * from './protocol';
export * from './wasm';
export * from './pool';
