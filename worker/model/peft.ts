/**
 * LoRA adapters in the PEFT layout: `adapter_config.json` and
 * `adapter_model.safetensors` with keys
 * `base_model.model.model.layers.{i}.self_attn.q_proj.lora_A.weight` [r, in] and
 * `…lora_B.weight` [out, r]. The safetensors metadata also records a fingerprint of
 * the base model, so an adapter trained on another base with the same shapes is refused.
 */
import { AppError } from '../../shared';
import { configFingerprint, LINEAR_MODULES, linearShape, type LinearModule, type LlamaConfig } from './config';
import { parseSafetensors, tensorAsFloat32, writeSafetensors, type FloatDtype, type SafetensorsFile, type TensorToWrite } from './safetensors';
import { sha256Hex } from './sha256';

export interface LoraSettings {
  r: number;
  alpha: number;
  dropout: number;
  targetModules: LinearModule[];
}

export interface LoraPair {
  /** [r, in] row-major. */
  a: Float32Array;
  /** [out, r] row-major. */
  b: Float32Array;
}

export interface LoraAdapter {
  settings: LoraSettings;
  /** `base_model_name_or_path` in adapter_config.json. */
  baseModel: string;
  /** `baseModelFingerprint` of the base the adapter was trained on. */
  baseFingerprint: string;
  /** Keyed by `loraKey(layer, module)`. */
  weights: Map<string, LoraPair>;
}

export interface AdapterFiles {
  /** Contents of adapter_config.json. */
  configJson: string;
  /** Contents of adapter_model.safetensors. */
  safetensors: Uint8Array;
}

export const ADAPTER_CONFIG_FILE = 'adapter_config.json';
export const ADAPTER_WEIGHTS_FILE = 'adapter_model.safetensors';

export function loraKey(layer: number, module: LinearModule): string {
  return `${layer}.${module}`;
}

function moduleGroup(module: LinearModule): 'mlp' | 'self_attn' {
  return module === 'gate_proj' || module === 'up_proj' || module === 'down_proj' ? 'mlp' : 'self_attn';
}

export function peftTensorName(layer: number, module: LinearModule, which: 'A' | 'B'): string {
  return `base_model.model.model.layers.${layer}.${moduleGroup(module)}.${module}.lora_${which}.weight`;
}

const PEFT_NAME = /^base_model\.model\.model\.layers\.(\d+)\.(self_attn|mlp)\.([a-z_]+)\.lora_(A|B)\.weight$/;

/**
 * Identifies a base model: its config fingerprint plus, when the weights are
 * given, a sample of each tensor's bytes (start, middle, end), so two bases with
 * equal shapes but different weights differ. Cheap for any model size.
 */
export function baseModelFingerprint(config: LlamaConfig, weights?: SafetensorsFile | readonly SafetensorsFile[]): string {
  const parts: string[] = [configFingerprint(config)];
  const files: readonly SafetensorsFile[] = weights === undefined ? [] : Array.isArray(weights) ? weights : [weights as SafetensorsFile];
  const entries = files.flatMap((f) => [...f.tensors.values()].map((t) => ({ f, t }))).sort((x, y) => (x.t.name < y.t.name ? -1 : 1));
  const SAMPLE = 64;
  for (const { f, t } of entries) {
    const start = f.dataStart + t.begin;
    const len = t.end - t.begin;
    const mid = start + Math.max(0, Math.floor(len / 2) - SAMPLE / 2);
    const sample = [
      f.bytes.subarray(start, start + Math.min(SAMPLE, len)),
      f.bytes.subarray(mid, mid + Math.min(SAMPLE, len)),
      f.bytes.subarray(Math.max(start, start + len - SAMPLE), start + len),
    ];
    parts.push(`${t.name}:${t.dtype}:${t.shape.join('x')}:${sample.map((s) => sha256Hex(s)).join(',')}`);
  }
  return sha256Hex(parts.join('\n'));
}

function adapterInvalid(what: string, details?: Record<string, unknown>): AppError {
  return new AppError('ADAPTER_INVALID', `Invalid LoRA adapter: ${what}. Re-save the adapter in the PEFT layout.`, details);
}

function adapterMismatch(what: string, details?: Record<string, unknown>): AppError {
  return new AppError('ADAPTER_MISMATCH', `The adapter does not fit this base model: ${what}. Load it with the base it was trained on.`, details);
}

function checkSettings(s: LoraSettings): void {
  if (!Number.isSafeInteger(s.r) || s.r <= 0) throw adapterInvalid(`r must be a positive integer (got ${s.r})`);
  if (typeof s.alpha !== 'number' || !(s.alpha > 0)) throw adapterInvalid(`lora_alpha must be positive (got ${s.alpha})`);
  if (typeof s.dropout !== 'number' || !(s.dropout >= 0 && s.dropout < 1)) throw adapterInvalid(`lora_dropout must be in [0, 1)`);
  if (!s.targetModules.length) throw adapterInvalid('target_modules is empty');
  for (const m of s.targetModules) {
    if (!LINEAR_MODULES.includes(m)) throw adapterInvalid(`target module ${String(m)} is not one of ${LINEAR_MODULES.join(', ')}`);
  }
}

/** Checks that every (layer, target module) pair is present with the shapes the base implies. */
function checkWeights(adapter: LoraAdapter, base: LlamaConfig): void {
  const { r, targetModules } = adapter.settings;
  const expected = new Set<string>();
  for (let i = 0; i < base.numLayers; i++) {
    for (const m of targetModules) {
      const key = loraKey(i, m);
      expected.add(key);
      const pair = adapter.weights.get(key);
      if (!pair) throw adapterInvalid(`no LoRA weights for layer ${i} ${m}`, { layer: i, module: m });
      const s = linearShape(base, m);
      if (pair.a.length !== r * s.in || pair.b.length !== s.out * r) {
        throw adapterMismatch(`layer ${i} ${m} wants A [${r}, ${s.in}] and B [${s.out}, ${r}]`, { layer: i, module: m });
      }
    }
  }
  for (const key of adapter.weights.keys()) {
    if (!expected.has(key)) throw adapterMismatch(`weights for ${key} are not among the base's target layers`, { key });
  }
}

export function saveAdapter(adapter: LoraAdapter, base: LlamaConfig, dtype: FloatDtype = 'F32'): AdapterFiles {
  checkSettings(adapter.settings);
  checkWeights(adapter, base);
  const { r, alpha, dropout, targetModules } = adapter.settings;
  const config = {
    alpha_pattern: {},
    base_model_name_or_path: adapter.baseModel,
    bias: 'none',
    fan_in_fan_out: false,
    inference_mode: true,
    init_lora_weights: true,
    lora_alpha: alpha,
    lora_dropout: dropout,
    modules_to_save: null,
    peft_type: 'LORA',
    r,
    rank_pattern: {},
    target_modules: targetModules.slice().sort(),
    task_type: 'CAUSAL_LM',
    use_dora: false,
    use_rslora: false,
  };
  const tensors: TensorToWrite[] = [];
  for (let i = 0; i < base.numLayers; i++) {
    for (const m of targetModules) {
      const pair = adapter.weights.get(loraKey(i, m)) as LoraPair;
      const s = linearShape(base, m);
      tensors.push({ name: peftTensorName(i, m, 'A'), dtype, shape: [r, s.in], data: pair.a });
      tensors.push({ name: peftTensorName(i, m, 'B'), dtype, shape: [s.out, r], data: pair.b });
    }
  }
  const metadata = {
    format: 'pt',
    base_fingerprint: adapter.baseFingerprint,
    base_config_fingerprint: configFingerprint(base),
    hidden_size: String(base.hiddenSize),
    num_hidden_layers: String(base.numLayers),
  };
  return { configJson: JSON.stringify(config, null, 2) + '\n', safetensors: writeSafetensors(tensors, metadata) };
}

function parseAdapterConfig(json: string): { settings: LoraSettings; baseModel: string } {
  let raw: unknown;
  try {
    raw = JSON.parse(json);
  } catch (err) {
    throw adapterInvalid(`adapter_config.json is not JSON (${(err as Error).message})`);
  }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw adapterInvalid('adapter_config.json is not an object');
  const c = raw as Record<string, unknown>;
  if (c.peft_type !== 'LORA') throw adapterInvalid(`peft_type is ${JSON.stringify(c.peft_type)}, not "LORA"`);
  if (c.task_type !== undefined && c.task_type !== 'CAUSAL_LM') throw adapterInvalid(`task_type is ${JSON.stringify(c.task_type)}, not "CAUSAL_LM"`);
  if (c.bias !== undefined && c.bias !== 'none') throw adapterInvalid('bias must be "none"');
  if (c.fan_in_fan_out === true) throw adapterInvalid('fan_in_fan_out adapters are not supported');
  if (c.use_dora === true) throw adapterInvalid('DoRA adapters are not supported');
  const tm = c.target_modules;
  if (!Array.isArray(tm) || !tm.every((m) => typeof m === 'string')) throw adapterInvalid('target_modules must be a list of module names');
  const settings: LoraSettings = {
    r: c.r as number,
    alpha: c.lora_alpha as number,
    dropout: (c.lora_dropout ?? 0) as number,
    targetModules: tm as LinearModule[],
  };
  checkSettings(settings);
  return { settings, baseModel: typeof c.base_model_name_or_path === 'string' ? c.base_model_name_or_path : '' };
}

/**
 * Loads and validates an adapter against a base. `baseFingerprint`, when given,
 * must equal the fingerprint stored with the adapter (ADAPTER_MISMATCH otherwise).
 */
export function loadAdapter(files: AdapterFiles, base: LlamaConfig, baseFingerprint?: string): LoraAdapter {
  const { settings, baseModel } = parseAdapterConfig(files.configJson);
  let st: SafetensorsFile;
  try {
    st = parseSafetensors(files.safetensors);
  } catch (err) {
    throw adapterInvalid(`adapter_model.safetensors: ${(err as Error).message}`);
  }
  const md = st.metadata;
  if (md.hidden_size !== undefined && Number(md.hidden_size) !== base.hiddenSize) {
    throw adapterMismatch(`it was made for hidden size ${md.hidden_size}, the base has ${base.hiddenSize}`);
  }
  if (md.num_hidden_layers !== undefined && Number(md.num_hidden_layers) !== base.numLayers) {
    throw adapterMismatch(`it was made for ${md.num_hidden_layers} layers, the base has ${base.numLayers}`);
  }
  if (md.base_config_fingerprint !== undefined && md.base_config_fingerprint !== configFingerprint(base)) {
    throw adapterMismatch("its base config fingerprint differs from this base's config");
  }
  if (baseFingerprint !== undefined && md.base_fingerprint !== undefined && md.base_fingerprint !== baseFingerprint) {
    throw adapterMismatch('it was trained on a different base model (fingerprint differs)', {
      expected: baseFingerprint,
      actual: md.base_fingerprint,
    });
  }
  const weights = new Map<string, LoraPair>();
  const halves = new Map<string, { a?: Float32Array; b?: Float32Array }>();
  for (const t of st.tensors.values()) {
    const m = PEFT_NAME.exec(t.name);
    if (!m) throw adapterInvalid(`tensor ${t.name} is not a PEFT LoRA weight name`, { tensor: t.name });
    const layer = Number(m[1]);
    const module = m[3] as LinearModule;
    if (!LINEAR_MODULES.includes(module) || moduleGroup(module) !== m[2]) throw adapterInvalid(`tensor ${t.name} names an unknown module`);
    if (layer >= base.numLayers) throw adapterMismatch(`tensor ${t.name} is for layer ${layer}, the base has ${base.numLayers}`);
    if (!settings.targetModules.includes(module)) throw adapterInvalid(`tensor ${t.name} is for ${module}, not in target_modules`);
    const s = linearShape(base, module);
    const want = m[4] === 'A' ? [settings.r, s.in] : [s.out, settings.r];
    if (t.shape.length !== 2 || t.shape[0] !== want[0] || t.shape[1] !== want[1]) {
      const rankWrong = m[4] === 'A' ? t.shape[0] !== settings.r : t.shape[1] !== settings.r;
      const what = `tensor ${t.name} is [${t.shape.join(', ')}], expected [${want.join(', ')}]`;
      throw rankWrong ? adapterInvalid(what, { tensor: t.name }) : adapterMismatch(what, { tensor: t.name });
    }
    const key = loraKey(layer, module);
    const h = halves.get(key) ?? {};
    if (m[4] === 'A') h.a = tensorAsFloat32(st, t.name);
    else h.b = tensorAsFloat32(st, t.name);
    halves.set(key, h);
  }
  for (const [key, h] of halves) {
    if (!h.a || !h.b) throw adapterInvalid(`LoRA ${key} has only lora_${h.a ? 'A' : 'B'}`);
    weights.set(key, { a: h.a, b: h.b });
  }
  const adapter: LoraAdapter = { settings, baseModel, baseFingerprint: md.base_fingerprint ?? '', weights };
  checkWeights(adapter, base);
  return adapter;
}
