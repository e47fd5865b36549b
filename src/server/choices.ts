// Runs the `n` choices of one request. One choice is one session. Several share the prompt: it is prefilled once,
// then each choice continues from a fork of that session (its KV blocks shared, not copied), so the choices'
// decode steps batch together and each gives the tokens a plain run of the prompt would.
import type { GenerateOptions, GeneratedToken, GenerationResult, Model, Session } from '../../index.js';
import type { Session as SessionImpl } from '../session.js';
import type { NativeResponseFormat } from '../native.js';

/** A session's generation under a constraint the public options do not offer (`Session.generateConstrained`). */
function generateConstrained(session: Session, tokens: number[], options: GenerateOptions, constraint: NativeResponseFormat | undefined) {
  return (session as unknown as SessionImpl).generateConstrained(tokens, options, constraint).result;
}

export interface ChoicesRun {
  results: GenerationResult[];
  /** Tokens of the prompt, and how many of them came from the prefix cache. */
  promptTokens: number;
  cachedTokens: number;
}

export interface ChoiceCallbacks {
  onToken?: (index: number, token: GeneratedToken) => void;
  onDone?: (index: number, result: GenerationResult) => void;
}

export async function runChoices(
  model: Model,
  prompt: number[],
  n: number,
  options: GenerateOptions,
  contextSize: number | undefined,
  callbacks: ChoiceCallbacks = {},
  /** A tool call's grammar, for every choice. */
  constraint?: NativeResponseFormat,
): Promise<ChoicesRun> {
  const sessionOptions = contextSize === undefined ? {} : { contextSize };
  const sessions: Session[] = [];
  // One failing choice stops its siblings; the caller's signal stops them all.
  const stop = new AbortController();
  const onAbort = () => stop.abort();
  options.signal?.addEventListener('abort', onAbort, { once: true });
  if (options.signal?.aborted) stop.abort();
  const choice = (index: number, session: Session, tokens: number[]): Promise<GenerationResult> =>
    generateConstrained(
      session,
      tokens,
      {
        ...options,
        signal: stop.signal,
        // Choices of one seeded request differ from each other and repeat across requests.
        seed: options.seed === undefined ? undefined : options.seed + index,
        onToken: callbacks.onToken && ((token) => callbacks.onToken?.(index, token)),
      },
      constraint,
    )
      .then((result) => {
        callbacks.onDone?.(index, result);
        return result;
      });
  try {
    const first = model.createSession(sessionOptions);
    sessions.push(first);
    if (n === 1) {
      const result = await choice(0, first, prompt);
      return { results: [result], promptTokens: prompt.length, cachedTokens: result.timings.reusedPromptTokens };
    }
    // Prefill the prompt once (one greedy token, then rewound: the last prompt token is fed again by each fork).
    const prefill = await first.generateText(prompt, { maxTokens: 1, temperature: 0, signal: stop.signal });
    first.rewind(1);
    for (let i = 1; i < n; i++) sessions.push(first.fork());
    let firstError: { error: unknown } | undefined;
    const settled = await Promise.allSettled(
      sessions.map((session, i) =>
        choice(i, session, []).catch((error: unknown) => {
          firstError ??= { error };
          stop.abort();
          throw error;
        }),
      ),
    );
    // Every rejection went through the catch above, which kept the first.
    if (firstError) throw firstError.error;
    const results = settled.map((s) => (s as PromiseFulfilledResult<GenerationResult>).value);
    return { results, promptTokens: prompt.length, cachedTokens: prefill.timings.reusedPromptTokens };
  } finally {
    options.signal?.removeEventListener('abort', onAbort);
    for (const session of sessions) session.dispose();
  }
}
