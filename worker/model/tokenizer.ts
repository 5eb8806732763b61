/**
 * The model's tokenizer (`tokenizer.json` + `tokenizer_config.json`) through
 * @huggingface/tokenizers, with its special tokens and chat template.
 */
import { Tokenizer } from '@huggingface/tokenizers';
import { AppError } from '../../shared';
import { CHATML_TEMPLATE, ChatTemplate, type ChatMessage } from './chat';

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function parseJson(what: string, json: string | unknown): Record<string, unknown> {
  let raw = json;
  if (typeof json === 'string') {
    try {
      raw = JSON.parse(json);
    } catch (err) {
      throw new AppError('MODEL_CORRUPT', `${what} is not JSON (${(err as Error).message}).`);
    }
  }
  if (!isRecord(raw)) throw new AppError('MODEL_CORRUPT', `${what} is not a JSON object.`);
  return raw;
}

/** tokenizer_config.json writes a special token as a string or as {content: string, …}. */
function tokenText(v: unknown): string | null {
  if (typeof v === 'string') return v;
  if (isRecord(v) && typeof v.content === 'string') return v.content;
  return null;
}

function templateSource(v: unknown): string | null {
  if (typeof v === 'string') return v;
  if (Array.isArray(v)) {
    const named = v.filter(isRecord);
    const def = named.find((t) => t.name === 'default') ?? named[0];
    return def && typeof def.template === 'string' ? def.template : null;
  }
  return null;
}

export interface EncodeOptions {
  /** Add the tokens the tokenizer's post-processor adds (e.g. BOS). Default false. */
  addSpecialTokens?: boolean;
}

export interface DecodeOptions {
  skipSpecialTokens?: boolean;
}

export interface SpecialTokens {
  bos: string | null;
  eos: string | null;
  pad: string | null;
  unk: string | null;
}

export class ModelTokenizer {
  readonly #tok: Tokenizer;
  readonly special: SpecialTokens;
  readonly bosId: number | null;
  readonly eosId: number | null;
  readonly padId: number | null;
  /**
   * The chat template from tokenizer_config.json, or ChatML when it has none: what inference
   * renders prompts with. Training uses `modelChatTemplate` and refuses a model without one
   * (CHAT_TEMPLATE_MISSING) unless the run names a template.
   */
  readonly chatTemplate: ChatTemplate;
  /** The chat template the model ships, or null. */
  readonly modelChatTemplate: ChatTemplate | null;
  /**
   * Ids the tokenizer puts before one sequence when asked to add special tokens (BOS for most
   * Llamas), as transformers' fast tokenizer does: `add_bos_token` / `add_eos_token` written in
   * tokenizer_config.json rebuild the post-processor (BOS iff add_bos_token); without them it is
   * what tokenizer.json's post-processor adds (TemplateProcessing's tokens before `$A`).
   */
  readonly prefixIds: readonly number[];
  readonly vocabSize: number;

  constructor(tokenizerJson: string | unknown, tokenizerConfigJson: string | unknown) {
    const tj = parseJson('tokenizer.json', tokenizerJson);
    const tc = parseJson('tokenizer_config.json', tokenizerConfigJson);
    try {
      this.#tok = new Tokenizer(tj, tc);
    } catch (err) {
      throw new AppError('MODEL_CORRUPT', `tokenizer.json could not be loaded (${(err as Error).message}).`);
    }
    this.special = {
      bos: tokenText(tc.bos_token),
      eos: tokenText(tc.eos_token),
      pad: tokenText(tc.pad_token),
      unk: tokenText(tc.unk_token),
    };
    this.bosId = this.#idOf(this.special.bos);
    this.eosId = this.#idOf(this.special.eos);
    this.padId = this.#idOf(this.special.pad) ?? this.eosId;
    const own = templateSource(tc.chat_template);
    this.modelChatTemplate = own === null ? null : new ChatTemplate(own);
    this.chatTemplate = this.modelChatTemplate ?? new ChatTemplate(CHATML_TEMPLATE);
    this.vocabSize = this.#tok.get_vocab(true).size;
    const explicit = typeof tc.add_bos_token === 'boolean' || typeof tc.add_eos_token === 'boolean';
    this.prefixIds = explicit ? (tc.add_bos_token === true && this.bosId !== null ? [this.bosId] : []) : this.#postProcessorPrefix();
  }

  /** What the post-processor adds in front of a sequence: encode a probe with and without special tokens. */
  #postProcessorPrefix(): number[] {
    const plain = this.#tok.encode('a', { add_special_tokens: false }).ids;
    const full = this.#tok.encode('a', { add_special_tokens: true }).ids;
    for (let k = 0; k + plain.length <= full.length; k++) {
      if (plain.every((id, i) => full[k + i] === id)) return full.slice(0, k);
    }
    return [];
  }

  #idOf(token: string | null): number | null {
    if (token === null) return null;
    return this.#tok.token_to_id(token) ?? null;
  }

  tokenToId(token: string): number | null {
    return this.#tok.token_to_id(token) ?? null;
  }

  idToToken(id: number): string | null {
    return this.#tok.id_to_token(id) ?? null;
  }

  /**
   * Ids of a templated conversation with `prefixIds` in front unless the template already wrote
   * them: the rule training rows and chat prompts share, so a fine-tuned model sees at inference
   * the start it was trained on.
   */
  withPrefix(ids: number[]): number[] {
    const prefix = this.prefixIds;
    return prefix.length > 0 && !prefix.every((id, k) => ids[k] === id) ? [...prefix, ...ids] : ids;
  }

  encode(text: string, options: EncodeOptions = {}): number[] {
    return this.#tok.encode(text, { add_special_tokens: options.addSpecialTokens ?? false }).ids;
  }

  decode(ids: ArrayLike<number>, options: DecodeOptions = {}): string {
    return this.#tok.decode(Array.from(ids), { skip_special_tokens: options.skipSpecialTokens ?? false });
  }

  /** Renders the conversation with the chat template (BOS/EOS names passed as template variables). */
  applyChatTemplate(messages: readonly ChatMessage[], options: { addGenerationPrompt?: boolean } = {}): string {
    return this.chatTemplate.render(messages, {
      addGenerationPrompt: options.addGenerationPrompt ?? false,
      variables: { bos_token: this.special.bos ?? '', eos_token: this.special.eos ?? '' },
    });
  }
}

/** Loads `tokenizer.json` and `tokenizer_config.json` through the caller's file reader. */
export async function loadTokenizer(readFile: (name: string) => Promise<Uint8Array>): Promise<ModelTokenizer> {
  const dec = new TextDecoder();
  const [tj, tc] = await Promise.all([readFile('tokenizer.json'), readFile('tokenizer_config.json')]);
  return new ModelTokenizer(dec.decode(tj), dec.decode(tc));
}
