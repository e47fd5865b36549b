// What the llama.cpp references (bench/peers/make-reference.mjs) hold, and the agreement measures the tests of real
// models share.
import type { Model } from '../../src/index.js';

export interface TeacherForced {
  tokens: number[];
  argmax: number[];
  top2Margin: number[];
}

export interface GreedyCase {
  name: string;
  promptTokens: number[];
  tokens: number[];
  stepTop2Margin: number[];
  text: string;
}

/**
 * Teacher-forces llama.cpp's own greedy continuations and counts, at every step, whether our next token is
 * llama.cpp's: over all steps and over the decisive ones (llama.cpp's top choice leads its second by >= 0.1 in
 * probability; a near-tie may go either way).
 */
export async function greedyStepAgreement(model: Model, cases: GreedyCase[]) {
  let [agreeing, steps, decisiveAgreeing, decisive] = [0, 0, 0, 0];
  for (const c of cases) {
    const session = model.createSession({ contextSize: 512 });
    const predicted = await session.predictNextTokens([...c.promptTokens, ...c.tokens.slice(0, -1)]);
    const ours = predicted.slice(c.promptTokens.length - 1);
    c.tokens.forEach((token, i) => {
      steps += 1;
      agreeing += Number(ours[i] === token);
      if (c.stepTop2Margin[i] >= 0.1) {
        decisive += 1;
        decisiveAgreeing += Number(ours[i] === token);
      }
    });
  }
  return { agreeing, steps, decisiveAgreeing, decisive };
}
