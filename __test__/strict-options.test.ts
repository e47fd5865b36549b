// An option seedinfer does not know (a typo, or another library's option) is INVALID_OPTION naming it and the
// nearest known one, never silently ignored; options set to undefined are left alone.
import test from 'ava';
import fs from 'node:fs';
import path from 'node:path';
import { Model, SeedinferError, createServer, quantizeModel } from '../src/index.js';
import { tinyLlama, writeGguf } from './helpers/gguf-writer.js';
import { tempDir } from './helpers/paths.js';

const work = tempDir('seedinfer-strict-options-');
test.after.always(() => fs.rmSync(work, { recursive: true, force: true }));
const modelPath = path.join(work, 'tiny.gguf');
fs.writeFileSync(modelPath, writeGguf(tinyLlama().spec).bytes);

function expectUnknown(t: import('ava').ExecutionContext, error: unknown, name: string, nearest?: string): void {
  t.true(error instanceof SeedinferError, String(error));
  const e = error as SeedinferError;
  t.is(e.code, 'INVALID_OPTION', e.message);
  t.true(e.message.includes(`unknown option "${name}"`), e.message);
  if (nearest) t.true(e.message.includes(`did you mean "${nearest}"`), e.message);
  else t.false(e.message.includes('did you mean'), e.message);
}

async function rejection(run: () => unknown): Promise<unknown> {
  try {
    await run();
  } catch (error) {
    return error;
  }
  return undefined;
}

test('unknown options are INVALID_OPTION with the nearest known name, in every call that takes options', async (t) => {
  const options = (o: object) => o as never;
  expectUnknown(t, await rejection(() => Model.load(modelPath, options({ thread: 1 }))), 'thread', 'threads');
  expectUnknown(t, await rejection(() => Model.load(modelPath, options({ kvCache: { blocksize: 16 } }))), 'blocksize', 'blockSize');
  const model = await Model.load(modelPath, { threads: 1 });
  const session = model.createSession();
  // The case in the issue: an option of another API is ignored no more.
  expectUnknown(
    t,
    await rejection(() => session.generateText([1], options({ response_format: { type: 'json_object' } }))),
    'response_format',
    'responseFormat',
  );
  expectUnknown(
    t,
    await rejection(() => session.generateText([1], options({ responseFormat: { type: 'regex', regex: 'a+' } }))),
    'regex',
  );
  expectUnknown(t, await rejection(() => session.generateText([1], options({ max_tokens: 4 }))), 'max_tokens', 'maxTokens');
  expectUnknown(t, await rejection(() => session.generateText([1], options({ temprature: 0 }))), 'temprature', 'temperature');
  expectUnknown(
    t,
    await rejection(() => session.generateText([1], options({ prefill: { strategy: 'lazyllm', keepTokens: 8 } }))),
    'keepTokens',
  );
  expectUnknown(t, await rejection(() => model.createSession(options({ contextsize: 64 }))), 'contextsize', 'contextSize');
  expectUnknown(t, await rejection(() => model.tokenize('hi', options({ addBOS: false }))), 'addBOS', 'addBos');
  expectUnknown(t, await rejection(() => model.detokenize([1], options({ skipSpecials: true }))), 'skipSpecials', 'skipSpecial');
  expectUnknown(t, await rejection(() => model.perplexity([1, 2, 3], options({ windowSize: 2 }))), 'windowSize', 'window');
  expectUnknown(t, await rejection(() => session.predictNextTokens([1], options({ abortSignal: undefined, signl: 1 }))), 'signl', 'signal');
  expectUnknown(t, await rejection(() => session.save(path.join(work, 's.bin'), options({ overwrite: true }))), 'overwrite');
  expectUnknown(t, await rejection(() => model.loadSession(path.join(work, 's.bin'), options({ strict: true }))), 'strict');
  expectUnknown(t, await rejection(() => createServer(model, options({ port: 8080 }))), 'port');
  expectUnknown(t, await rejection(() => quantizeModel(modelPath, options({ format: 'q8_0', out: path.join(work, 'o.gguf'), thread: 1 }))), 'thread', 'threads');
  // Options set to undefined are fine, and the session still works after every refusal.
  const result = await session.generateText([1], { maxTokens: 2, temperature: 0, ignoreEos: true, ...({ grammar: undefined } as object) });
  t.is(result.tokenIds.length, 2);
  model.dispose();
});
