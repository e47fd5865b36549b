// Tool calls: how a model's chat format offers functions and writes calls to them, and reading calls back from its
// output. Three families:
// - `hermes`: the template renders `tools` and the model answers `<tool_call>\n{"name": …, "arguments": {…}}\n
//   </tool_call>` (Qwen2.5/Qwen3, Hermes 2/3, SmolLM3);
// - `llama3`: the template renders `tools` and the model answers `{"name": …, "parameters": {…}}`, possibly after
//   `<|python_tag|>` (Llama 3.1/3.2);
// - `injected`: the template knows no tools (SmolLM2 and other plain ChatML templates): the tools and the
//   `hermes` call format are described in the system message, and assistant calls are written back as that text.
// `required` and a named function are enforced by a grammar (the engine's `tagged_json` format: the call's JSON
// schema between the family's tags), so their arguments always parse and validate.
import { randomUUID } from 'node:crypto';
import { SeedinferError } from './errors.js';
import type { ChatMessage, ToolCall, ToolChoice, ToolDefinition } from '../index.js';
import type { NativeResponseFormat } from './native.js';

export type ToolFormat = 'hermes' | 'llama3' | 'injected';

const HERMES_OPEN = '<tool_call>\n';
const HERMES_CLOSE = '\n</tool_call>';
const PYTHON_TAG = '<|python_tag|>';

/** The family of a chat template (its Jinja source). */
export function toolFormatOf(template: string | undefined): ToolFormat {
  if (!template || !/\btools\b/.test(template)) return 'injected';
  if (template.includes('<tool_call>')) return 'hermes';
  if (template.includes(PYTHON_TAG) || template.includes('"parameters": dictionary')) return 'llama3';
  return 'injected';
}

/** Checks `tools` and `toolChoice`; returns the tools a call may name. */
export function checkTools(tools: unknown, toolChoice: unknown): { tools: ToolDefinition[]; choice: ToolChoice } {
  if (!Array.isArray(tools) || tools.length === 0) {
    throw new SeedinferError('INVALID_OPTION', 'option tools must be a non-empty array of { type: "function", function: { name, parameters } }');
  }
  const names = new Set<string>();
  for (const [i, tool] of tools.entries()) {
    const fn = (tool as ToolDefinition | null)?.function;
    if ((tool as ToolDefinition | null)?.type !== 'function' || typeof fn?.name !== 'string' || !/^[A-Za-z0-9_.-]{1,64}$/.test(fn.name)) {
      throw new SeedinferError('INVALID_OPTION', `option tools[${i}] must be { type: "function", function: { name (letters, digits, _ . -), description?, parameters? } }`);
    }
    if (fn.parameters !== undefined && (typeof fn.parameters !== 'object' || fn.parameters === null || Array.isArray(fn.parameters))) {
      throw new SeedinferError('INVALID_OPTION', `option tools[${i}].function.parameters must be a JSON Schema object`);
    }
    if (names.has(fn.name)) throw new SeedinferError('INVALID_OPTION', `option tools names '${fn.name}' twice`);
    names.add(fn.name);
  }
  const choice = (toolChoice ?? 'auto') as ToolChoice;
  if (typeof choice === 'string') {
    if (!['auto', 'required', 'none'].includes(choice)) {
      throw new SeedinferError('INVALID_OPTION', `option toolChoice must be 'auto', 'required', 'none' or { name }, got '${choice}'`);
    }
  } else if (typeof choice !== 'object' || choice === null || typeof choice.name !== 'string' || !names.has(choice.name)) {
    throw new SeedinferError('INVALID_OPTION', `option toolChoice.name must name one of the tools (${[...names].join(', ')})`);
  }
  return { tools: tools as ToolDefinition[], choice };
}

const parametersOf = (tool: ToolDefinition) => tool.function.parameters ?? { type: 'object', properties: {} };

/** The system text that offers `tools` to a model whose template knows none (the `hermes` call format). */
function injectedToolsText(tools: ToolDefinition[]): string {
  const list = tools.map((t) => JSON.stringify({ type: 'function', function: t.function })).join('\n');
  return (
    'You may call one or more functions to assist with the user query.\n\n' +
    `You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n${list}\n</tools>\n\n` +
    'For each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n' +
    '<tool_call>\n{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call>'
  );
}

/** A call as JSON text in the family's format. */
function callText(format: ToolFormat, call: ToolCall): string {
  if (format === 'llama3') return JSON.stringify({ name: call.name, parameters: call.arguments });
  return `${HERMES_OPEN}${JSON.stringify({ name: call.name, arguments: call.arguments })}${HERMES_CLOSE}`;
}

/**
 * `messages` as the template takes them: calls and results as transformers passes them (`tool_calls` with
 * `function: { name, arguments }`, `tool_call_id`), or, for `injected`, as text in the call format with the tools
 * in the system message.
 */
export function templateMessages(format: ToolFormat, messages: ChatMessage[], tools: ToolDefinition[] | undefined): object[] {
  const out: object[] = messages.map((m) => {
    if (m.role === 'assistant' && m.toolCalls?.length) {
      if (format === 'injected') {
        const calls = m.toolCalls.map((c) => callText(format, c)).join('\n');
        return { role: 'assistant', content: m.content ? `${m.content}\n${calls}` : calls };
      }
      return {
        role: 'assistant',
        content: m.content ?? '',
        tool_calls: m.toolCalls.map((c) => ({ id: c.id, type: 'function', function: { name: c.name, arguments: c.arguments } })),
      };
    }
    if (m.role === 'tool') {
      return { role: 'tool', content: m.content ?? '', ...(m.toolCallId ? { tool_call_id: m.toolCallId } : {}), ...(m.name ? { name: m.name } : {}) };
    }
    return { role: m.role, content: m.content ?? '' };
  });
  if (format === 'injected' && tools) {
    const text = injectedToolsText(tools);
    const first = out[0] as { role: string; content: string } | undefined;
    if (first?.role === 'system') out[0] = { role: 'system', content: `${first.content}\n\n${text}` };
    else out.unshift({ role: 'system', content: text });
  }
  return out;
}

/** The grammar that makes the output one call to one of `tools` (the engine's `tagged_json` format). */
export function toolCallFormat(format: ToolFormat, tools: ToolDefinition[], choice: ToolChoice): NativeResponseFormat | undefined {
  if (choice === 'auto' || choice === 'none') return undefined;
  const allowed = typeof choice === 'object' ? tools.filter((t) => t.function.name === choice.name) : tools;
  const key = format === 'llama3' ? 'parameters' : 'arguments';
  const calls = allowed.map((t) => ({
    type: 'object',
    properties: { name: { const: t.function.name }, [key]: parametersOf(t) },
    required: ['name', key],
    additionalProperties: false,
  }));
  const schema = calls.length === 1 ? calls[0] : { anyOf: calls };
  return format === 'llama3'
    ? { type: 'tagged_json', schema: JSON.stringify(schema), prefix: '', suffix: '' }
    : { type: 'tagged_json', schema: JSON.stringify(schema), prefix: HERMES_OPEN, suffix: HERMES_CLOSE };
}

const newCallId = () => `call_${randomUUID().replace(/-/g, '').slice(0, 24)}`;

/** A parsed call, if `value` is `{ name, arguments | parameters }` naming one of `names`. */
function asCall(value: unknown, names: Set<string>): ToolCall | undefined {
  if (typeof value !== 'object' || value === null) return undefined;
  const v = value as { name?: unknown; arguments?: unknown; parameters?: unknown };
  let args = v.arguments ?? v.parameters ?? {};
  if (typeof args === 'string') {
    try {
      args = JSON.parse(args);
    } catch {
      return undefined;
    }
  }
  if (typeof v.name !== 'string' || !names.has(v.name) || typeof args !== 'object' || args === null || Array.isArray(args)) return undefined;
  return { id: newCallId(), name: v.name, arguments: args as Record<string, unknown> };
}

function parseJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

/** The answer's text and the calls in it (text that only looks like a call stays text). */
export function parseToolCalls(format: ToolFormat, text: string, tools: ToolDefinition[]): { content: string | null; toolCalls: ToolCall[] } {
  const names = new Set(tools.map((t) => t.function.name));
  if (format === 'llama3') {
    const body = text.startsWith(PYTHON_TAG) ? text.slice(PYTHON_TAG.length) : text;
    const parsed = body.trim().startsWith('{') ? parseJson(body.trim()) : undefined;
    const calls = (Array.isArray(parsed) ? parsed : [parsed]).map((v) => asCall(v, names));
    if (parsed !== undefined && calls.every((c) => c !== undefined)) return { content: null, toolCalls: calls as ToolCall[] };
    return { content: text, toolCalls: [] };
  }
  const toolCalls: ToolCall[] = [];
  const blocks = /<tool_call>\s*([\s\S]*?)\s*(?:<\/tool_call>|$)/g;
  let first = -1;
  for (let m = blocks.exec(text); m !== null; m = blocks.exec(text)) {
    const parsed = parseJson(m[1]);
    const calls = (Array.isArray(parsed) ? parsed : [parsed]).map((v) => asCall(v, names));
    if (parsed === undefined || calls.some((c) => c === undefined)) continue;
    if (first < 0) first = m.index;
    toolCalls.push(...(calls as ToolCall[]));
  }
  if (toolCalls.length === 0) return { content: text, toolCalls };
  const content = text.slice(0, first).trim();
  return { content: content || null, toolCalls };
}

/**
 * Streams an answer's text while it may still turn into a call: text that could begin one (`<tool_call>` in the
 * hermes formats; for llama3, an answer opening with `{` or `<|python_tag|>`) is held back.
 */
export class ToolCallStream {
  private text = '';
  private emitted = 0;
  private holding = false;

  constructor(private readonly format: ToolFormat) {}

  /** Adds generated text; returns the text now safe to show as content. */
  push(chunk: string): string {
    this.text += chunk;
    if (this.holding) return '';
    if (this.format === 'llama3') {
      const start = this.text.trimStart();
      if (start.startsWith('{') || start.startsWith(PYTHON_TAG) || (start.length > 0 && PYTHON_TAG.startsWith(start))) {
        this.holding = start.startsWith('{') || start.startsWith(PYTHON_TAG);
        return '';
      }
    } else {
      const at = this.text.indexOf('<tool_call>', this.emitted);
      if (at >= 0) {
        this.holding = true;
        return this.take(at);
      }
      // A tail that could still become `<tool_call>`.
      for (let keep = Math.min('<tool_call>'.length - 1, this.text.length - this.emitted); keep > 0; keep--) {
        if ('<tool_call>'.startsWith(this.text.slice(this.text.length - keep))) return this.take(this.text.length - keep);
      }
    }
    return this.take(this.text.length);
  }

  /** At the end: the text still held back, when the answer held no call after all. */
  finish(hasCalls: boolean): string {
    return hasCalls ? '' : this.take(this.text.length);
  }

  private take(end: number): string {
    const out = this.text.slice(this.emitted, end);
    this.emitted = Math.max(this.emitted, end);
    return out;
  }
}
