/** Chat messages and the model's chat template, rendered with @huggingface/jinja. */
import { Template } from '@huggingface/jinja';
import { AppError } from '../../shared';

export type ChatRole = 'system' | 'user' | 'assistant';
export const CHAT_ROLES: readonly ChatRole[] = ['system', 'user', 'assistant'];

export interface ChatMessage {
  role: ChatRole;
  content: string;
}

/** ChatML, the template the tiny model ships and the fallback for models without one. */
export const CHATML_TEMPLATE =
  "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}" +
  "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

export interface RenderOptions {
  addGenerationPrompt?: boolean;
  /** Extra template variables (bos_token, eos_token, …). */
  variables?: Record<string, unknown>;
}

/** A compiled chat template; compile once, render many times. */
export class ChatTemplate {
  readonly #template: Template;
  readonly source: string;

  constructor(source: string) {
    this.source = source;
    try {
      this.#template = new Template(source);
    } catch (err) {
      throw new AppError('MODEL_CORRUPT', `The chat template does not parse (${(err as Error).message}); fix tokenizer_config.json.`);
    }
  }

  render(messages: readonly ChatMessage[], options: RenderOptions = {}): string {
    try {
      return this.#template.render({
        ...options.variables,
        messages: messages.map((m) => ({ role: m.role, content: m.content })),
        add_generation_prompt: options.addGenerationPrompt ?? false,
      });
    } catch (err) {
      throw new AppError('MODEL_CORRUPT', `The chat template failed to render (${(err as Error).message}).`);
    }
  }
}
