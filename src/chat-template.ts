// Renders chat messages with the model's Jinja chat template (tokenizer_config.json or GGUF metadata).
import { Template } from '@huggingface/jinja';
import { SeedinferError } from './errors.js';
import type { ChatMessage } from '../index.js';

export interface ChatTemplateContext {
  bosToken?: string;
  eosToken?: string;
}

/** Compiles `source` once; the returned function renders messages with it. */
export function compileChatTemplate(source: string, context: ChatTemplateContext) {
  let template: Template;
  try {
    template = new Template(source);
  } catch (error) {
    throw new SeedinferError('INVALID_CHAT_TEMPLATE', `the model's chat template does not parse: ${String(error)}`, {
      cause: error,
    });
  }
  return (messages: ChatMessage[], addGenerationPrompt: boolean, tools?: object[]): string => {
    if (!Array.isArray(messages) || messages.some((m) => typeof m?.role !== 'string' || typeof m?.content !== 'string')) {
      throw new SeedinferError('INVALID_OPTION', 'messages must be an array of { role: string, content: string }');
    }
    if (tools !== undefined && (!Array.isArray(tools) || tools.some((t) => typeof t !== 'object' || t === null))) {
      throw new SeedinferError('INVALID_OPTION', 'tools must be an array of objects (JSON-schema function descriptions)');
    }
    try {
      return template.render({
        messages,
        add_generation_prompt: addGenerationPrompt,
        bos_token: context.bosToken ?? '',
        eos_token: context.eosToken ?? '',
        ...(tools === undefined ? {} : { tools }),
      });
    } catch (error) {
      throw new SeedinferError('INVALID_CHAT_TEMPLATE', `rendering the chat template failed: ${String(error)}`, {
        cause: error,
      });
    }
  };
}
