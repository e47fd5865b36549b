// Generation options the tests share.
import type { GenerateOptions, PrefillOptions } from '../../index.js';

/** Greedy decoding of `maxTokens` tokens that ignores end-of-generation tokens, with `prefill` if given. */
export const greedy = (maxTokens: number, prefill?: PrefillOptions): GenerateOptions => ({
  maxTokens,
  temperature: 0,
  ignoreEos: true,
  ...(prefill === undefined ? {} : { prefill }),
});
