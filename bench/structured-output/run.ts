// Constrained generation: what a JSON-schema constraint costs, and how seedinfer's (llguidance) compares with
// node-llama-cpp's LlamaJsonSchemaGrammar (llama.cpp's GBNF sampler) on the same schemas and prompts.
//
//   npm run bench:structured                      # the 25 schemas x 2 seeds, 2 threads
//   npm run bench:structured -- --seeds 1,2,3,4 --threads 2 --schemas 25 --peer false
//
// Method (one process, the default model SmolLM2-135M-Instruct Q4_1, the same file for both engines):
// - Prompt: the model's chat template over "Reply in JSON: <ask>." (bench/structured-output/schemas.ts), tokenized
//   once by seedinfer (llama.cpp's tokenization of it is the same: __test__/smollm2.test.ts) and fed as ids to both.
// - Sampling for every run: temperature 0.8, top-k 40, top-p 0.95, min-p 0.05, the seed of the run, at most 256
//   tokens.
// - Per schema and seed, in turn with 100 ms pauses (idle threads go to sleep): seedinfer constrained; seedinfer
//   unconstrained for exactly as many tokens (`ignoreEos`), so the two decode the same number of positions;
//   node-llama-cpp constrained.
// - Decode tokens/s = (tokens - 1) / (last token time - first token time), from the engine's own timings for
//   seedinfer and from `onToken` times for node-llama-cpp. Overhead = unconstrained / constrained decode tok/s - 1,
//   over the sums of tokens and times. Validity: the output parses as JSON and ajv (2020, ajv-formats 'fast')
//   accepts it; a generation cut at 256 tokens counts as invalid.
import { Ajv2020 } from 'ajv/dist/2020.js';
import addFormats from 'ajv-formats';
import path from 'node:path';
import { Model, ensureDefaultModel } from '../../src/index.js';
import { SCHEMAS } from './schemas.js';
import { argument } from '../cli-args.js';
import { loadNodeLlamaCpp } from '../peers/node-llama-cpp.js';

const seeds = (argument('seeds') ?? '1,2').split(',').map(Number);
const threads = Number(argument('threads') ?? 2);
const schemas = SCHEMAS.slice(0, Number(argument('schemas') ?? SCHEMAS.length));
const withPeer = argument('peer') !== 'false';
const MAX_TOKENS = 256;
const sampling = { temperature: 0.8, topK: 40, topP: 0.95, minP: 0.05 };

const ajv = new Ajv2020({ allErrors: true, strict: false });
(addFormats as unknown as (a: Ajv2020, o: { mode: string }) => void)(ajv, { mode: 'fast' });

function valid(schema: object, text: string): boolean {
  try {
    return ajv.validate(schema, JSON.parse(text)) as boolean;
  } catch {
    return false;
  }
}

interface Tally {
  runs: number;
  valid: number;
  tokens: number;
  seconds: number;
  unsupported: number;
}
const tally = (): Tally => ({ runs: 0, valid: 0, tokens: 0, seconds: 0, unsupported: 0 });
const add = (t: Tally, tokens: number, tokPerSecond: number) => {
  if (tokens > 1 && tokPerSecond > 0) {
    t.tokens += tokens - 1;
    t.seconds += (tokens - 1) / tokPerSecond;
  }
};
const rate = (t: Tally) => (t.seconds > 0 ? t.tokens / t.seconds : 0);

const file = await ensureDefaultModel();
const model = await Model.load(file, { threads });
const ours = { constrained: tally(), free: tally() };
const theirs = tally();

// node-llama-cpp from bench/peers (see its README): constrained by its JSON-schema grammar.
async function loadPeer() {
  const nlc = await loadNodeLlamaCpp(file, threads);
  if (!nlc) return undefined;
  const sequence = await nlc.sequence();
  return {
    async complete(tokens: number[], schema: object, seed: number) {
      let grammar;
      try {
        grammar = await nlc.createGrammarForJsonSchema(schema);
      } catch {
        return undefined;
      }
      return nlc.complete(sequence, tokens, { grammar, maxTokens: MAX_TOKENS, seed, ...sampling });
    },
  };
}
const peer = withPeer ? await loadPeer() : undefined;

/** Lets the engine that just ran put its threads to sleep before the next one is timed. */
const pause = () => new Promise((resolve) => setTimeout(resolve, 100));
const rows: string[] = [];
for (const c of schemas) {
  const prompt = model.tokenize(model.applyChatTemplate([{ role: 'user', content: `Reply in JSON: ${c.ask}.` }]), { addBos: false, special: true });
  for (const seed of seeds) {
    const session = model.createSession({ contextSize: 1024 });
    const constrained = await session.generateText(prompt, {
      ...sampling,
      seed,
      maxTokens: MAX_TOKENS,
      responseFormat: { type: 'json_schema', schema: c.schema, strict: true },
    });
    session.reset();
    const n = constrained.tokenIds.length;
    await pause();
    const free = await session.generateText(prompt, { ...sampling, seed, maxTokens: Math.max(2, n), ignoreEos: true });
    session.dispose();
    await pause();
    ours.constrained.runs++;
    ours.free.runs++;
    if (!constrained.incomplete && valid(c.schema, constrained.text)) ours.constrained.valid++;
    add(ours.constrained, n, constrained.timings.decodeTokensPerSecond);
    add(ours.free, free.tokenIds.length, free.timings.decodeTokensPerSecond);
    let peerCell = '';
    if (peer) {
      theirs.runs++;
      const r = await peer.complete(prompt, c.schema, seed);
      await pause();
      if (!r) {
        theirs.unsupported++;
        peerCell = 'unsupported';
      } else {
        const ok = r.tokens < MAX_TOKENS && valid(c.schema, r.text);
        if (ok) theirs.valid++;
        add(theirs, r.tokens, r.tokPerSecond);
        peerCell = `${ok ? 'valid' : 'INVALID'} ${r.tokens} tok ${r.tokPerSecond.toFixed(0)} tok/s`;
      }
    }
    rows.push(
      `| ${c.name} | ${seed} | ${constrained.incomplete ? 'INCOMPLETE' : 'valid'} ${n} tok ${constrained.timings.decodeTokensPerSecond.toFixed(0)} tok/s | ${free.timings.decodeTokensPerSecond.toFixed(0)} tok/s | ${peerCell} |`,
    );
  }
}

const cpu = (await import('node:os')).cpus()[0]?.model ?? 'unknown CPU';
console.log(`\nStructured output, ${path.basename(file)}, ${threads} threads, ${cpu}\n`);
console.log('| schema | seed | seedinfer constrained | seedinfer free (same tokens) | node-llama-cpp constrained |');
console.log('|---|---|---|---|---|');
for (const r of rows) console.log(r);
const overhead = rate(ours.free) / rate(ours.constrained) - 1;
console.log(`\nseedinfer: ${ours.constrained.valid}/${ours.constrained.runs} valid; decode ${rate(ours.constrained).toFixed(1)} tok/s constrained vs ${rate(ours.free).toFixed(1)} free: constraint costs ${(overhead * 100).toFixed(1)}%`);
if (peer) {
  console.log(
    `node-llama-cpp: ${theirs.valid}/${theirs.runs} valid (${theirs.unsupported} schemas refused); decode ${rate(theirs).toFixed(1)} tok/s constrained; seedinfer/node-llama-cpp constrained decode ${(rate(ours.constrained) / rate(theirs)).toFixed(2)}x`,
  );
}
model.dispose();
process.exit(0);
