/** LoRA settings checked against the model before any GPU memory is taken: LORA_SETTINGS_INVALID lists what the model has. */
import { AppError } from '../../shared';
import { LINEAR_MODULES, linearShape, type LinearModule, type LlamaConfig } from '../model';

/**
 * The rank must be a whole number from 1 to the smallest dimension of the modules it adapts
 * (beyond that the low-rank product is no longer low rank, and PEFT refuses it too); every
 * target must be one of the model's linear modules.
 */
export function checkLoraSettings(config: LlamaConfig, lora: { rank: number; targets?: readonly string[] }): LinearModule[] {
  const modules = LINEAR_MODULES as readonly string[];
  const targets = lora.targets ?? LINEAR_MODULES;
  const unknown = targets.filter((t) => !modules.includes(t));
  if (!targets.length || unknown.length) {
    throw new AppError(
      'LORA_SETTINGS_INVALID',
      targets.length
        ? `The model has no module ${unknown.map((u) => JSON.stringify(u)).join(', ')} to adapt; its linear modules are ${LINEAR_MODULES.join(', ')}.`
        : `No target module given; pick from ${LINEAR_MODULES.join(', ')}.`,
      { targets: [...targets], unknown, modules: [...LINEAR_MODULES] },
    );
  }
  const chosen = [...new Set(targets)] as LinearModule[];
  const dims = Object.fromEntries(chosen.map((m) => [m, linearShape(config, m)]));
  const maxRank = Math.min(...chosen.map((m) => Math.min(linearShape(config, m).in, linearShape(config, m).out)));
  if (!Number.isSafeInteger(lora.rank) || lora.rank < 1 || lora.rank > maxRank) {
    throw new AppError(
      'LORA_SETTINGS_INVALID',
      `LoRA rank ${lora.rank} does not fit: it must be a whole number from 1 to ${maxRank}, the smallest dimension of ${chosen.join(', ')} in this model.`,
      { rank: lora.rank, maxRank, dims },
    );
  }
  return chosen;
}
