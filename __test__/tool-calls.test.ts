// Tool calls: the chat-format families (src/tool-calls.ts) read and stream calls as each family writes them, and on
// the default model (SmolLM2-135M-Instruct, whose ChatML template knows no tools: the tools go into the system
// message) `required` and a named function give calls whose arguments validate, `auto` gives text or calls, and a
// conversation continues after the calls with their results. Real Qwen and Llama 3 templates: real-tokenizers.test.ts.
import test from 'ava';
import { Ajv2020 } from 'ajv/dist/2020.js';
import { Model, SeedinferError, ensureDefaultModel } from '../src/index.js';
import { ToolCallStream, parseToolCalls, toolCallFormat, toolFormatOf } from '../src/tool-calls.js';
import type { ChatMessage, ToolDefinition } from '../index.js';

export const TOOLS: ToolDefinition[] = [
  {
    type: 'function',
    function: {
      name: 'get_weather',
      description: 'The current weather in a city',
      parameters: {
        type: 'object',
        properties: { city: { type: 'string', maxLength: 30 }, unit: { enum: ['celsius', 'fahrenheit'] } },
        required: ['city', 'unit'],
      },
    },
  },
  {
    type: 'function',
    function: {
      name: 'add',
      description: 'Adds two integers',
      parameters: {
        type: 'object',
        properties: { a: { type: 'integer', minimum: -1000, maximum: 1000 }, b: { type: 'integer', minimum: -1000, maximum: 1000 } },
        required: ['a', 'b'],
      },
    },
  },
];

const ajv = new Ajv2020({ strict: false });
const validates = (name: string, args: unknown) => ajv.validate(TOOLS.find((t) => t.function.name === name)?.function.parameters ?? {}, args);

test('families: the template says how calls are written', (t) => {
  t.is(toolFormatOf('{% for m in messages %}{{ m.content }}{% endfor %}'), 'injected');
  t.is(toolFormatOf(undefined), 'injected');
  t.is(toolFormatOf('{% if tools %}<tools>{{ tools }}</tools> ... <tool_call>{% endif %}'), 'hermes');
  t.is(toolFormatOf('{% if tools %}{"name": function name, "parameters": dictionary of argument name{% endif %} <|python_tag|>'), 'llama3');
});

test('parsing: hermes blocks, llama3 JSON, text around them, things that only look like calls', (t) => {
  const hermes = parseToolCalls('hermes', 'Let me check.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}\n</tool_call>\n<tool_call>\n{"name": "add", "arguments": "{\\"a\\": 1, \\"b\\": 2}"}\n</tool_call>', TOOLS);
  t.is(hermes.content, 'Let me check.');
  t.deepEqual(
    hermes.toolCalls.map((c) => [c.name, c.arguments]),
    [
      ['get_weather', { city: 'Paris', unit: 'celsius' }],
      ['add', { a: 1, b: 2 }],
    ],
  );
  t.regex(hermes.toolCalls[0].id, /^call_[0-9a-f]{24}$/);
  t.not(hermes.toolCalls[0].id, hermes.toolCalls[1].id);
  t.deepEqual(parseToolCalls('injected', '<tool_call>{"name": "nope", "arguments": {}}</tool_call>', TOOLS), {
    content: '<tool_call>{"name": "nope", "arguments": {}}</tool_call>',
    toolCalls: [],
  });
  t.deepEqual(parseToolCalls('hermes', 'Just text.', TOOLS), { content: 'Just text.', toolCalls: [] });
  const llama = parseToolCalls('llama3', '<|python_tag|>{"name": "add", "parameters": {"a": 3, "b": 4}}', TOOLS);
  t.is(llama.content, null);
  t.deepEqual(llama.toolCalls.map((c) => [c.name, c.arguments]), [['add', { a: 3, b: 4 }]]);
  t.deepEqual(parseToolCalls('llama3', '{"not": "a call"}', TOOLS).toolCalls, []);
});

test('streaming holds back what may become a call', (t) => {
  const hermes = new ToolCallStream('hermes');
  t.is(hermes.push('Sure'), 'Sure');
  t.is(hermes.push(', <tool'), ', ');
  t.is(hermes.push('_call>\n{"name"'), '');
  t.is(hermes.push(': "add"}'), '');
  t.is(hermes.finish(true), '');
  const notACall = new ToolCallStream('hermes');
  t.is(notACall.push('a <tool'), 'a ');
  t.is(notACall.push('box>'), '<toolbox>');
  const llama = new ToolCallStream('llama3');
  t.is(llama.push(' {"name'), '');
  t.is(llama.finish(false), ' {"name');
  const llamaText = new ToolCallStream('llama3');
  t.is(llamaText.push('Hello'), 'Hello');
});

test('the grammar of a required call names every tool; a named choice only that one', (t) => {
  const required = toolCallFormat('hermes', TOOLS, 'required');
  t.like(required, { type: 'tagged_json', prefix: '<tool_call>\n', suffix: '\n</tool_call>' });
  t.deepEqual(
    JSON.parse(required?.schema ?? '').anyOf.map((c: { properties: { name: { const: string } } }) => c.properties.name.const),
    ['get_weather', 'add'],
  );
  const named = JSON.parse(toolCallFormat('llama3', TOOLS, { name: 'add' })?.schema ?? '');
  t.is(named.properties.name.const, 'add');
  t.truthy(named.properties.parameters);
  t.is(toolCallFormat('hermes', TOOLS, 'auto'), undefined);
});

const modelPromise = ensureDefaultModel().then((file) => Model.load(file));
const ask: ChatMessage[] = [{ role: 'user', content: 'What is the weather in Paris? And what is 17 + 25?' }];

test('SmolLM2: required and named calls validate; auto answers; the conversation continues with the results', async (t) => {
  const model = await modelPromise;
  for (const seed of [1, 2, 3]) {
    const r = await model.chat(ask, { tools: TOOLS, toolChoice: 'required', seed, maxTokens: 128 });
    t.is(r.message.toolCalls.length, 1, r.text);
    const [call] = r.message.toolCalls;
    t.true(validates(call.name, call.arguments), `${call.name} ${JSON.stringify(call.arguments)}`);
    t.is(r.stopReason, 'eos');
  }
  const named = await model.chat(ask, { tools: TOOLS, toolChoice: { name: 'add' }, temperature: 0, maxTokens: 128 });
  t.is(named.message.toolCalls[0]?.name, 'add', named.text);
  t.true(validates('add', named.message.toolCalls[0].arguments));
  t.is(named.message.content, null);

  const auto = await model.chat(ask, { tools: TOOLS, temperature: 0, maxTokens: 96 });
  t.true(auto.message.content !== null || auto.message.toolCalls.length > 0);

  const call = named.message.toolCalls[0];
  const next = await model.chat(
    [
      ...ask,
      { role: 'assistant', content: null, toolCalls: [call] },
      { role: 'tool', toolCallId: call.id, name: call.name, content: JSON.stringify({ result: 42 }) },
    ],
    { tools: TOOLS, temperature: 0, maxTokens: 48 },
  );
  t.true(next.timings.promptTokens > named.timings.promptTokens);
  t.true(next.message.content !== null || next.message.toolCalls.length > 0);

  const none = await model.chat(ask, { tools: TOOLS, toolChoice: 'none', temperature: 0, maxTokens: 8 });
  const plain = await model.chat(ask, { temperature: 0, maxTokens: 8 });
  t.deepEqual(none.tokenIds, plain.tokenIds);
});

test('bad tools and tool choices are INVALID_OPTION', async (t) => {
  const model = await modelPromise;
  const bad: object[] = [
    { tools: [] },
    { tools: [{ type: 'function', function: { name: 'has space' } }] },
    { tools: [TOOLS[0], TOOLS[0]] },
    { tools: [{ type: 'function', function: { name: 'f', parameters: [1] } }] },
    { tools: TOOLS, toolChoice: { name: 'missing' } },
    { tools: TOOLS, toolChoice: 'always' },
    { toolChoice: 'required' },
    { tools: TOOLS, toolChoice: 'required', responseFormat: { type: 'json_object' } },
    { tool_choice: 'auto' },
  ];
  for (const options of bad) {
    const error = await t.throwsAsync(model.chat(ask, options as never), { instanceOf: SeedinferError }, JSON.stringify(options));
    t.is(error?.code, 'INVALID_OPTION', `${JSON.stringify(options)}: ${error?.message}`);
  }
});
