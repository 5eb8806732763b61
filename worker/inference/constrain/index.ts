/** Constrained decoding for `response_format`: JSON objects and a JSON Schema subset. */
export { compileResponseFormat, MAX_DEPTH, type CompiledFormat, type SchemaNode } from './schema';
export { JsonConstraint } from './constraint';
export { buildVocabulary, vocabularyFromDecode, type ConstraintVocabulary, type TrieNode } from './vocabulary';
