// Speculative decoding against plain greedy decoding, same model, same run, per draft source.
//
//   npm run bench:speculative -- --runs 3 --threads 2 --tokens 160 --source lookup
//
// `--source`: `lookup` (prompt lookup, default), `self` or `self:N` (the model's first half or N layers), `model`
// (the same file loaded a second time as the draft model: every draft agrees, so the row measures what drafting
// and verifying cost against what they save, the best case of a draft model).
// Tasks: input-grounded chat requests (repeat, rewrite code, copy a list, quote a passage) and one that is not
// (a free answer), on the default model. For each task, runs alternate plain / speculative (greedy, the same
// tokens by construction: the ids are compared); decode tok/s is the engine's (tokens after the first over the
// time after the first), the median over runs. Also: drafts accepted per verification pass. Beside them, with
// `--peer` (default on when bench/peers has it): node-llama-cpp 3.22.1 greedy on the same token ids, plain and with
// its `InputLookupTokenPredictor` (for `lookup`) or `DraftSequenceTokenPredictor` over a second context of the same
// model (for `model`), at their defaults; decode tok/s from the times its tokens arrive.
import os from 'node:os';
import type { SpeculativeOptions } from '../index.js';
import { Model, ensureDefaultModel } from '../src/index.js';
import { argument, median } from './cli-args.js';
import { loadNodeLlamaCpp } from './peers/node-llama-cpp.js';

const runs = Number(argument('runs') ?? 3);
const threads = Number(argument('threads') ?? 2);
const maxTokens = Number(argument('tokens') ?? 160);
const draft = argument('draft');
const maxDraftTokens = draft === undefined ? undefined : Number(draft);
const source = argument('source') ?? 'lookup';

const PASSAGE =
  'Call me Ishmael. Some years ago, never mind how long precisely, having little or no money in my purse, and nothing particular to interest me on shore, I thought I would sail about a little and see the watery part of the world.';
const TASKS: [string, string][] = [
  ['repeat a sentence', 'Repeat this sentence exactly: The quick brown fox jumps over the lazy dog, and the dog does not even notice the fox at all.'],
  ['rename in code', 'Rewrite this code with the variable renamed from x to count:\n```python\nx = 0\nfor item in items:\n    if item.ok:\n        x += 1\nprint(x)\n```'],
  ['copy a list', 'Copy the list below in the same order:\n- apples\n- bananas\n- cherries\n- dates\n- elderberries'],
  ['quote a passage', `Quote the following passage word for word:\n\n${PASSAGE}`],
  ['free answer', 'Write a short poem about the sea.'],
];

const pause = () => new Promise((resolve) => setTimeout(resolve, 100));
const file = await ensureDefaultModel();
const model = await Model.load(file, { threads });
let speculative: SpeculativeOptions;
let draftModel: Model | undefined;
if (source === 'lookup') speculative = { maxDraftTokens };
else if (source === 'model') {
  draftModel = await Model.load(file, { threads });
  speculative = { draft: draftModel, maxDraftTokens };
} else if (source.startsWith('self')) {
  const layers = source.split(':')[1];
  speculative = { draft: 'self', maxDraftTokens, ...(layers ? { draftLayers: Number(layers) } : {}) };
} else throw new Error(`--source must be lookup, self, self:N or model, got ${source}`);
const peer = argument('peer') === 'false' || source.startsWith('self') ? undefined : await loadNodeLlamaCpp(file, threads);
const peerPlain = await peer?.sequence();
const peerPredictor =
  peer && (source === 'model' ? new peer.module.DraftSequenceTokenPredictor(await peer.sequence()) : new peer.module.InputLookupTokenPredictor());
const peerSpec = await peer?.sequence(peerPredictor);
console.log(`\nSpeculative decoding with drafts from ${source}, ${model.info.path.split('/').pop()}, ${threads} threads, ${os.cpus()[0]?.model}\n`);
console.log(
  '| task | tokens | plain decode tok/s | speculative decode tok/s | speed-up | accepted / drafted | accepted per pass | same tokens | node-llama-cpp plain | node-llama-cpp with its predictor | its speed-up | ours / its speculative |',
);
console.log('|---|---|---|---|---|---|---|---|---|---|---|---|');
for (const [name, task] of TASKS) {
  const prompt = model.tokenize(model.applyChatTemplate([{ role: 'user', content: task }]), { addBos: false });
  const plain: number[] = [];
  const spec: number[] = [];
  let report = { drafted: 0, accepted: 0, passes: 0, meanAcceptedLength: 0 };
  let same = true;
  let tokens = 0;
  const theirPlain: number[] = [];
  const theirLookup: number[] = [];
  for (let r = 0; r < runs + 1; r++) {
    const a = await model.createSession().generateText(prompt, { temperature: 0, maxTokens });
    await pause();
    const b = await model.createSession().generateText(prompt, { temperature: 0, maxTokens, speculative });
    await pause();
    const c = peer && peerPlain ? await peer.complete(peerPlain, prompt, { temperature: 0, maxTokens }) : undefined;
    await pause();
    const d = peer && peerSpec ? await peer.complete(peerSpec, prompt, { temperature: 0, maxTokens }) : undefined;
    await pause();
    if (r === 0) continue; // warm-up
    if (c && d) {
      theirPlain.push(c.tokPerSecond);
      theirLookup.push(d.tokPerSecond);
    }
    plain.push(a.timings.decodeTokensPerSecond);
    spec.push(b.timings.decodeTokensPerSecond);
    same &&= a.tokenIds.join() === b.tokenIds.join();
    report = b.speculative ?? report;
    tokens = b.tokenIds.length;
  }
  const p = median(plain);
  const s = median(spec);
  const theirs = theirPlain.length > 0 ? [median(theirPlain), median(theirLookup)] : undefined;
  const peerCells = theirs
    ? `${theirs[0].toFixed(1)} | ${theirs[1].toFixed(1)} | ${(theirs[1] / theirs[0]).toFixed(2)}x | ${(s / theirs[1]).toFixed(2)}x`
    : '| | |';
  console.log(
    `| ${name} | ${tokens} | ${p.toFixed(1)} | ${s.toFixed(1)} | ${(s / p).toFixed(2)}x | ${report.accepted} / ${report.drafted} | ${report.meanAcceptedLength.toFixed(2)} | ${same ? 'yes' : 'NO'} | ${peerCells} |`,
  );
}
draftModel?.dispose();
model.dispose();
process.exit(0);
