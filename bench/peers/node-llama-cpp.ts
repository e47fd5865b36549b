// node-llama-cpp (installed only in bench/peers, see its README) loaded in this process, for benches that compare
// generation features side by side: a context with `sequences` sequences and a completion timed per token. Only
// the little of its API used here is typed, by hand (its types resolve from bench/peers only).
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));

interface Sequence {
  clearHistory(): Promise<void>;
  readonly tokenPredictions: { used: number; unused: number; validated: number; refuted: number };
}
interface Module {
  getLlama(options: object): Promise<{
    loadModel(options: object): Promise<{ createContext(options: object): Promise<{ getSequence(options?: object): Sequence }> }>;
    createGrammarForJsonSchema(schema: object): Promise<object>;
  }>;
  LlamaLogLevel: { error: unknown };
  LlamaCompletion: new (options: { contextSequence: unknown }) => {
    generateCompletion(tokens: number[], options: object): Promise<string>;
    dispose(options: { disposeSequence: boolean }): void;
  };
  InputLookupTokenPredictor: new (options?: object) => object;
  DraftSequenceTokenPredictor: new (draftSequence: Sequence, options?: object) => object;
}

/** A timed completion: its text, how many tokens, decode tok/s from the times tokens arrived. */
export interface TimedCompletion {
  text: string;
  tokens: number;
  tokPerSecond: number;
}

export interface NodeLlamaCpp {
  module: Module;
  createGrammarForJsonSchema(schema: object): Promise<object>;
  /** A sequence of its own context, optionally with a token predictor (`new module.InputLookupTokenPredictor()`,
   * or `new module.DraftSequenceTokenPredictor(await sequence())`: the same model drafting). */
  sequence(tokenPredictor?: object): Promise<Sequence>;
  /** Generates from `tokens` on `sequence` (cleared first) with `options` (LlamaCompletion's), timed. */
  complete(sequence: Sequence, tokens: number[], options: object): Promise<TimedCompletion>;
}

/** Loads `modelPath` with `threads` threads, or returns undefined (with a note) when node-llama-cpp is absent. */
export async function loadNodeLlamaCpp(modelPath: string, threads: number, contextSize = 1024): Promise<NodeLlamaCpp | undefined> {
  const require = createRequire(path.join(here, 'package.json'));
  let entry: string;
  try {
    entry = require.resolve('node-llama-cpp');
  } catch {
    console.error('node-llama-cpp is not installed in bench/peers: running seedinfer only');
    return undefined;
  }
  const module = (await import(entry)) as Module;
  const llama = await module.getLlama({ gpu: false, build: 'never', maxThreads: threads, logLevel: module.LlamaLogLevel.error });
  const model = await llama.loadModel({ modelPath, gpuLayers: 0 });
  return {
    module,
    createGrammarForJsonSchema: (schema) => llama.createGrammarForJsonSchema(schema),
    async sequence(tokenPredictor) {
      const context = await model.createContext({ contextSize, sequences: 1, threads, flashAttention: false });
      return context.getSequence(tokenPredictor ? { tokenPredictor } : undefined);
    },
    async complete(sequence, tokens, options) {
      await sequence.clearHistory();
      const completion = new module.LlamaCompletion({ contextSequence: sequence });
      const times: number[] = [];
      const text = await completion.generateCompletion(tokens, {
        ...options,
        onToken: (t: number[]) => {
          for (let i = 0; i < t.length; i++) times.push(performance.now());
        },
      });
      // Not disposed: a draft predictor may still be evaluating ahead for it, and a disposed completion makes it throw
      // (node-llama-cpp 3.22.1); the next completion on the sequence clears its history anyway.
      void completion;
      const n = times.length;
      const seconds = n > 1 ? (times[n - 1] - times[0]) / 1000 : 0;
      return { text, tokens: n, tokPerSecond: seconds > 0 ? (n - 1) / seconds : 0 };
    },
  };
}
