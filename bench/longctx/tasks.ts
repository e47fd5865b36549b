// Prompts and scores for the long-context evaluation. Prompts are built from token ids so that each one has exactly
// the length asked for: the corpus is tokenized once and cut by tokens.
import type { Model } from '../../src/index.js';

/** A seeded generator of floats in [0, 1) (mulberry32), so every run builds the same prompts. */
export function seededRandom(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32;
  };
}

/**
 * `plain`: the prompt is text to be completed and ends with "The pass key is".
 * `chat`: the text and question are the user's turn in the model's chat template, and the assistant's turn is
 * begun with "The pass key is".
 */
export type PasskeyFormat = 'plain' | 'chat';

const INSTRUCTION =
  'There is a pass key hidden inside a lot of irrelevant text. Find it and memorize it. I will quiz you about the pass key.\n\n';
const QUESTION = '\n\nWhat is the pass key?';
const ANSWER_START = 'The pass key is';

/** The corpus as token ids, with the positions where a sentence or paragraph ends (a needle may go there). */
export class TokenizedCorpus {
  readonly ids: number[];
  private readonly sentenceEnds: Uint8Array;
  private readonly paragraphStarts: number[];

  constructor(model: Model, text: string) {
    this.ids = model.tokenize(text, { addBos: false, special: false });
    this.sentenceEnds = new Uint8Array(this.ids.length);
    this.paragraphStarts = [0];
    this.ids.forEach((id, i) => {
      const piece = model.detokenize([id]);
      if (/[.!?]["'’”]?\s*$/.test(piece)) this.sentenceEnds[i] = 1;
      if (piece.includes('\n') && i + 1 < this.ids.length) this.paragraphStarts.push(i + 1);
    });
  }

  /** Where an excerpt of `length` tokens starts: the first paragraph start at or after a seeded random position. */
  excerptStart(length: number, random: () => number): number {
    const latest = this.ids.length - length;
    const wanted = Math.floor(random() * latest);
    return this.paragraphStarts.find((p) => p >= wanted && p <= latest) ?? wanted;
  }

  /** The offset, within the excerpt at `start`, after the sentence end nearest to `at` (or `at` if none is near). */
  sentenceBoundary(start: number, length: number, at: number): number {
    const endsBefore = (i: number) => i > 0 && i < length && this.sentenceEnds[start + i - 1] === 1;
    for (let d = 0; d < 200; d++) {
      if (endsBefore(at - d)) return at - d;
      if (endsBefore(at + d)) return at + d;
    }
    return at;
  }
}

export interface PasskeyPrompt {
  tokens: number[];
  key: string;
  /** Where the needle starts, as a fraction of the prompt. */
  needleDepth: number;
}

/** The tokens before and after the text in a passkey prompt. */
function frame(model: Model, format: PasskeyFormat): { head: number[]; tail: number[] } {
  const tokenize = (text: string) => model.tokenize(text, { addBos: false, special: true });
  if (format === 'plain') {
    return { head: model.tokenize(INSTRUCTION, { addBos: true, special: false }), tail: tokenize(`${QUESTION} ${ANSWER_START}`) };
  }
  const marker = '\u0000TEXT\u0000';
  const rendered = model.applyChatTemplate([{ role: 'user', content: `${INSTRUCTION}${marker}${QUESTION}` }]);
  const [before, after] = rendered.split(marker);
  return { head: model.tokenize(before, { addBos: true, special: true }), tail: tokenize(`${after}${ANSWER_START}`) };
}

/**
 * A passkey prompt of exactly `length` tokens: an instruction, real text with the needle sentence placed at the
 * sentence end nearest to `depth` of the text, and the question.
 */
export function passkeyPrompt(
  corpus: TokenizedCorpus,
  model: Model,
  options: { length: number; depth: number; format: PasskeyFormat; random: () => number },
): PasskeyPrompt {
  const key = String(10000 + Math.floor(options.random() * 90000));
  const { head, tail } = frame(model, options.format);
  const needle = model.tokenize(` The pass key is ${key}. Remember it. ${key} is the pass key.`, { addBos: false, special: false });
  const fillerLength = options.length - head.length - needle.length - tail.length;
  if (fillerLength < 16) throw new Error(`a passkey prompt needs more than ${options.length} tokens`);
  const start = corpus.excerptStart(fillerLength, options.random);
  const filler = corpus.ids.slice(start, start + fillerLength);
  const at = corpus.sentenceBoundary(start, fillerLength, Math.round(options.depth * fillerLength));
  const tokens = [...head, ...filler.slice(0, at), ...needle, ...filler.slice(at), ...tail];
  return { tokens, key, needleDepth: (head.length + at) / tokens.length };
}

/** Whether the generated text's digits contain the key. */
export const passkeyFound = (text: string, key: string) => text.replace(/\D/g, '').includes(key);

/** KL(p || q) in nats between the softmax distributions of two logit vectors, in float64. */
export function klDivergence(logitsP: ArrayLike<number>, logitsQ: ArrayLike<number>): number {
  const logP = logSoftmax(logitsP);
  const logQ = logSoftmax(logitsQ);
  let kl = 0;
  for (let i = 0; i < logP.length; i++) {
    const p = Math.exp(logP[i]);
    if (p > 0) kl += p * (logP[i] - logQ[i]);
  }
  return Math.max(0, kl);
}

function logSoftmax(logits: ArrayLike<number>): Float64Array {
  let max = -Infinity;
  for (let i = 0; i < logits.length; i++) max = Math.max(max, logits[i]);
  let sum = 0;
  for (let i = 0; i < logits.length; i++) sum += Math.exp(logits[i] - max);
  const logSum = max + Math.log(sum);
  const out = new Float64Array(logits.length);
  for (let i = 0; i < logits.length; i++) out[i] = logits[i] - logSum;
  return out;
}

/** How many leading tokens agree, and the fraction of positions (out of `reference.length`) that agree. */
export function greedyOverlap(reference: number[], candidate: number[]): { leading: number; fraction: number } {
  let leading = 0;
  while (leading < reference.length && candidate[leading] === reference[leading]) leading++;
  const equal = reference.filter((id, i) => candidate[i] === id).length;
  return { leading, fraction: reference.length ? equal / reference.length : 1 };
}
