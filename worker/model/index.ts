/**
 * Model formats for the engine and the tools: safetensors, Llama configs and
 * weights, tokenizer and chat template, conversation datasets, PEFT LoRA adapters.
 * Runs in the browser and in Node: no file access here, callers pass bytes,
 * strings or a `readFile(name)`.
 */
export {
  parseSafetensors,
  tensorAsFloat32,
  tensorShape,
  writeSafetensors,
  safetensorsChunks,
  MAX_HEADER_BYTES,
  type FloatDtype,
  type SafetensorsFile,
  type SafetensorsTensorInfo,
  type TensorToWrite,
} from './safetensors';
export { f16ToF32, f32ToF16, bf16ToF32, f32ToBf16 } from './half';
export {
  parseLlamaConfig,
  checkModelType,
  configFingerprint,
  llamaWeightNames,
  llamaWeightShapes,
  linearWeightName,
  linearShape,
  loadLlamaWeights,
  LINEAR_MODULES,
  SUPPORTED_ARCHITECTURES,
  type LlamaConfig,
  type LlamaArchitecture,
  type LlamaWeightNames,
  type LayerWeightNames,
  type LlamaWeights,
  type WeightTensor,
  type LinearModule,
  type AttentionProj,
  type MlpProj,
} from './config';
export { ChatTemplate, CHATML_TEMPLATE, CHAT_ROLES, type ChatMessage, type ChatRole, type RenderOptions } from './chat';
export { ModelTokenizer, loadTokenizer, type EncodeOptions, type DecodeOptions, type SpecialTokens } from './tokenizer';
export {
  tokenizeConversation,
  tokenizeConversations,
  resolveChatTemplate,
  fitConversation,
  targetCount,
  shuffleExamples,
  splitHeldOut,
  makeBatches,
  OVERFLOW_MODES,
  type ChatTemplateChoice,
  type OverflowMode,
  type FitOutcome,
  type FittedConversation,
  type TokenizeOptions,
  type TokenizedExample,
  type Batch,
  type BatchOptions,
} from './dataset';
export { generationEosIds, mergeEosIds } from './generation';
export {
  saveAdapter,
  loadAdapter,
  baseModelFingerprint,
  loraKey,
  peftTensorName,
  ADAPTER_CONFIG_FILE,
  ADAPTER_WEIGHTS_FILE,
  type LoraAdapter,
  type LoraPair,
  type LoraSettings,
  type AdapterFiles,
} from './peft';
export { loadModelFolder, readSafetensorsFiles, readModelFile, type LoadedModel, type ReadFile } from './folder';
export { parseManifest, MANIFEST_FILE, type ModelManifest, type ManifestEntry } from './manifest';
export { mulberry32, seededShuffle, type Rng } from './prng';
export { sha256, sha256Hex } from './sha256';
