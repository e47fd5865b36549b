// Constrained generation on the default model (SmolLM2-135M-Instruct): 25 JSON schemas of increasing difficulty,
// each generated with 4 seeds, every output parses and validates under ajv (with ajv-formats); regex outputs
// match; bad schemas, patterns and grammars reject with INVALID_OPTION before any token; a cut output is marked
// incomplete; concurrent sessions with different constraints each keep theirs.
import test from 'ava';
import { Ajv2020 } from 'ajv/dist/2020.js';
import addFormats from 'ajv-formats';
import { Model, SeedinferError, ensureDefaultModel } from '../src/index.js';
import type { ResponseFormat } from '../index.js';
import { SCHEMAS } from '../bench/structured-output/schemas.js';

const modelPromise = ensureDefaultModel().then((file) => Model.load(file));
const ajv = new Ajv2020({ allErrors: true, strict: false });
// ajv-formats' 'fast' mode: its 'full' email regex wants a dot in the domain, which RFC 5321 (and llguidance's
// email grammar) does not.
(addFormats as unknown as (a: Ajv2020, o: { mode: string }) => void)(ajv, { mode: 'fast' });

function chatPrompt(model: Model, ask: string): string {
  return model.applyChatTemplate([{ role: 'user', content: `Reply in JSON: ${ask}.` }]);
}

test('25 JSON schemas x 4 seeds: every output parses and validates (ajv)', async (t) => {
  t.timeout(600_000);
  const model = await modelPromise;
  t.is(SCHEMAS.length, 25);
  const failures: string[] = [];
  let outputs = 0;
  for (const c of SCHEMAS) {
    const validate = ajv.compile(c.schema);
    for (const seed of [1, 2, 3, 4]) {
      const session = model.createSession();
      const r = await session.generateText(chatPrompt(model, c.ask), {
        responseFormat: { type: 'json_schema', schema: c.schema, strict: true },
        seed,
        maxTokens: 256,
      });
      session.dispose();
      outputs++;
      if (r.incomplete !== false || r.stopReason !== 'eos') {
        failures.push(`${c.name} seed ${seed}: ${r.stopReason} ${JSON.stringify(r.text)}`);
        continue;
      }
      let value: unknown;
      try {
        value = JSON.parse(r.text);
      } catch (error) {
        failures.push(`${c.name} seed ${seed}: ${String(error)} in ${JSON.stringify(r.text)}`);
        continue;
      }
      if (!validate(value)) failures.push(`${c.name} seed ${seed}: ${ajv.errorsText(validate.errors)} in ${r.text}`);
    }
  }
  t.is(outputs, 100);
  t.deepEqual(failures, []);
});

test('regex and grammar formats: outputs match, greedy and sampled', async (t) => {
  const model = await modelPromise;
  const cases: { format: ResponseFormat; check: RegExp; ask: string }[] = [
    { format: { type: 'regex', pattern: '[0-9]{4}-[0-9]{2}-[0-9]{2}' }, check: /^\d{4}-\d{2}-\d{2}$/, ask: 'When did the war end?' },
    { format: { type: 'regex', pattern: '[a-z_][a-z0-9_]{2,15}' }, check: /^[a-z_][a-z0-9_]{2,15}$/, ask: 'Name a variable for a counter.' },
    { format: { type: 'grammar', lark: 'start: ("yes" | "no") "." ' }, check: /^(yes|no)\.$/, ask: 'Is water wet?' },
  ];
  for (const c of cases) {
    for (const seed of [undefined, 7, 8]) {
      const session = model.createSession();
      const r = await session.generateText(model.applyChatTemplate([{ role: 'user', content: c.ask }]), {
        responseFormat: c.format,
        ...(seed === undefined ? { temperature: 0 } : { seed }),
        maxTokens: 40,
      });
      session.dispose();
      t.false(r.incomplete, r.text);
      t.regex(r.text, c.check);
    }
  }
});

test('json_object gives an object; a cut output is incomplete; text is unconstrained', async (t) => {
  const model = await modelPromise;
  const prompt = chatPrompt(model, 'describe a cat');
  const session = model.createSession();
  const r = await session.generateText(prompt, { responseFormat: { type: 'json_object' }, seed: 3, maxTokens: 200 });
  if (!r.incomplete) t.is(typeof JSON.parse(r.text), 'object');
  session.reset();
  const cut = await session.generateText(prompt, {
    responseFormat: { type: 'json_schema', schema: SCHEMAS[6].schema },
    temperature: 0,
    maxTokens: 3,
  });
  t.is(cut.stopReason, 'maxTokens');
  t.true(cut.incomplete);
  t.true(cut.text.startsWith('{'));
  session.reset();
  const plain = await session.generateText(prompt, { responseFormat: { type: 'text' }, temperature: 0, maxTokens: 8 });
  t.is(plain.incomplete, undefined);
  session.reset();
  const none = await session.generateText(prompt, { temperature: 0, maxTokens: 8 });
  t.deepEqual(plain.tokenIds, none.tokenIds);
});

test('bad formats reject with INVALID_OPTION before any token', async (t) => {
  const model = await modelPromise;
  const session = model.createSession();
  const bad: unknown[] = [
    { type: 'json_schema', schema: { type: 'not-a-type' }, strict: true },
    { type: 'json_schema', schema: [1, 2] },
    { type: 'json_schema' },
    { type: 'regex', pattern: '(unclosed' },
    { type: 'regex', pattern: '' },
    { type: 'grammar', lark: 'start: missing_rule' },
    { type: 'xml' },
    { type: 'regex', pattern: 'a', extra: 1 },
    'json',
  ];
  for (const responseFormat of bad) {
    const error = await t.throwsAsync(
      session.generateText('Hi', { responseFormat: responseFormat as ResponseFormat, maxTokens: 4 }),
      { instanceOf: SeedinferError },
      JSON.stringify(responseFormat),
    );
    t.is(error?.code, 'INVALID_OPTION', `${JSON.stringify(responseFormat)}: ${error?.message}`);
    t.is(session.tokenCount, 0);
  }
  const withIgnoreEos = await t.throwsAsync(
    session.generateText('Hi', { responseFormat: { type: 'json_object' }, ignoreEos: true }),
  );
  t.is((withIgnoreEos as SeedinferError).code, 'INVALID_OPTION');
});

test('concurrent sessions batch together, each under its own constraint', async (t) => {
  const model = await modelPromise;
  const formats: ResponseFormat[] = [
    { type: 'json_schema', schema: SCHEMAS[10].schema },
    { type: 'regex', pattern: '[0-9]{4}-[0-9]{2}-[0-9]{2}' },
    { type: 'json_schema', schema: SCHEMAS[16].schema },
    { type: 'grammar', lark: 'start: ("yes" | "no") "." ' },
  ];
  const run = (format: ResponseFormat, i: number) => {
    const session = model.createSession();
    return session
      .generateText(chatPrompt(model, 'anything'), { responseFormat: format, seed: 40 + i, maxTokens: 160 })
      .finally(() => session.dispose());
  };
  const alone = [];
  for (const [i, f] of formats.entries()) alone.push(await run(f, i));
  const together = await Promise.all(formats.map(run));
  for (const [i, a] of alone.entries()) {
    t.deepEqual(together[i].tokenIds, a.tokenIds, `format ${i}`);
    t.false(a.incomplete, a.text);
  }
  t.regex(alone[1].text, /^\d{4}-\d{2}-\d{2}$/);
  t.regex(alone[3].text, /^(yes|no)\.$/);
});
