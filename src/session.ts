// Sessions (a conversation with its own KV cache) and streaming generations.
import { withAbortFlag } from './abort.js';
import { randomInt } from 'node:crypto';
import { SeedinferError, checkBooleanOption, checkNumberOption, checkOptionNames, optionNames, toSeedinferError, eventError } from './errors.js';
import type {
  AbortOptions,
  GenerateOptions,
  GenerationResult,
  PrefillOptions,
  XAttentionOptions,
  PrefillReport,
  ResponseFormat,
  SpeculativeOptions,
  SuperposeOptions,
  SuperposeResult,
} from '../index.js';
import type {
  NativeGenerateOptions,
  NativeGenerationEvent,
  NativeModel,
  NativePrefillOptions,
  NativeXAttentionOptions,
  NativePrefillReport,
  NativeResponseFormat,
  NativeSession,
  NativeSpeculativeOptions,
} from './native.js';
import { native } from './native.js';

/** What a session needs from its model to turn text prompts into tokens. */
export interface SessionOwner {
  tokenize(text: string, options: { addBos: boolean; special: boolean }): number[];
}

type PrefillOf<S> = Extract<PrefillOptions, { strategy: S }>;
/** Each prefill strategy's options (`strategy` included). */
const PREFILL_OPTIONS: Record<string, readonly string[]> = {
  dense: optionNames<PrefillOf<'dense'>>()(['strategy']),
  xattention: optionNames<PrefillOf<'xattention'>>()(['strategy', 'stride', 'blockSize', 'threshold', 'denseLastBlock']),
  lazyllm: optionNames<PrefillOf<'lazyllm'>>()(['strategy', 'schedule', 'reselectInDecode', 'xattention']),
  promptdistill: optionNames<PrefillOf<'promptdistill'>>()(['strategy', 'layer', 'keepTokens', 'questionTokens', 'pooling', 'xattention']),
  feather: optionNames<PrefillOf<'feather'>>()(['strategy', 'schedule', 'uniformShare', 'xattention']),
};
const XATTENTION_OPTIONS = optionNames<XAttentionOptions>()(['stride', 'blockSize', 'threshold', 'denseLastBlock']);
const PREFILL_STRATEGIES = Object.keys(PREFILL_OPTIONS);
export const GENERATE_OPTIONS = optionNames<GenerateOptions>()([
  'maxTokens',
  'temperature',
  'topK',
  'topP',
  'minP',
  'repetitionPenalty',
  'repetitionLastN',
  'presencePenalty',
  'frequencyPenalty',
  'logprobs',
  'topLogprobs',
  'onToken',
  'seed',
  'stop',
  'ignoreEos',
  'addBos',
  'special',
  'signal',
  'prefill',
  'responseFormat',
  'speculative',
]);
const SPECULATIVE_OPTIONS = optionNames<SpeculativeOptions>()(['draft', 'draftLayers', 'maxDraftTokens', 'ngram']);
const RESPONSE_FORMAT_FIELDS: Record<string, readonly string[]> = {
  text: ['type'],
  json_object: ['type'],
  json_schema: ['type', 'schema', 'strict', 'name'],
  regex: ['type', 'pattern'],
  grammar: ['type', 'lark'],
};
export const ABORT_OPTIONS = optionNames<AbortOptions>()(['signal']);
const SUPERPOSE_OPTIONS = optionNames<SuperposeOptions>()(['preamble', 'documents', 'query', 'topK', 'positions', 'signal']);

/** Checks the shape of `prefill` options; the engine checks them against the model's depth. */
function nativePrefill(prefill: PrefillOptions | undefined): NativePrefillOptions | undefined {
  if (prefill === undefined) return undefined;
  if (typeof prefill !== 'object' || prefill === null || !PREFILL_STRATEGIES.includes(prefill.strategy)) {
    throw new SeedinferError(
      'INVALID_OPTION',
      `option prefill.strategy must be one of ${PREFILL_STRATEGIES.join(', ')}, got ${String((prefill as { strategy?: unknown } | null)?.strategy)}`,
    );
  }
  checkOptionNames(`prefill (strategy '${prefill.strategy}')`, prefill, PREFILL_OPTIONS[prefill.strategy]);
  const p = prefill as Partial<Record<string, unknown>>;
  if (prefill.strategy === 'xattention') {
    const { strategy: _, ...settings } = prefill;
    return { strategy: 'dense', xattention: nativeXAttention('prefill', settings) };
  }
  const out: NativePrefillOptions = { strategy: prefill.strategy };
  if (p.xattention !== undefined) out.xattention = nativeXAttention('prefill.xattention', p.xattention);
  if (p.schedule !== undefined) {
    if (!Array.isArray(p.schedule)) throw new SeedinferError('INVALID_OPTION', 'option prefill.schedule must be an array of { layer, keep }');
    out.schedule = p.schedule.map((stage: unknown, i: number) => {
      const s = stage as { layer?: number; keep?: number } | null;
      checkNumberOption(`prefill.schedule[${i}].layer`, s?.layer, 0, 10_000, true);
      checkNumberOption(`prefill.schedule[${i}].keep`, s?.keep, Number.MIN_VALUE, 1);
      if (s?.layer === undefined || s.keep === undefined) {
        throw new SeedinferError('INVALID_OPTION', `option prefill.schedule[${i}] needs layer and keep`);
      }
      return { layer: s.layer, keep: s.keep };
    });
  }
  for (const name of ['layer', 'keepTokens', 'questionTokens', 'pooling'] as const) {
    checkNumberOption(`prefill.${name}`, p[name] as number | undefined, 0, 0xffffffff, true);
    if (p[name] !== undefined) out[name] = p[name] as number;
  }
  checkNumberOption('prefill.uniformShare', p.uniformShare as number | undefined, 0, 1);
  checkBooleanOption('prefill.reselectInDecode', p.reselectInDecode);
  if (p.reselectInDecode !== undefined) out.reselectInDecode = p.reselectInDecode as boolean;
  if (p.uniformShare !== undefined) out.uniformShare = p.uniformShare as number;
  return out;
}

/** Checks the shape of `responseFormat`; the engine compiles it (and names what is wrong with a schema, pattern or grammar). */
function nativeResponseFormat(format: ResponseFormat | undefined): NativeResponseFormat | undefined {
  if (format === undefined) return undefined;
  const type = (format as { type?: unknown } | null)?.type;
  if (typeof format !== 'object' || format === null || typeof type !== 'string' || !(type in RESPONSE_FORMAT_FIELDS)) {
    throw new SeedinferError(
      'INVALID_OPTION',
      `option responseFormat.type must be one of ${Object.keys(RESPONSE_FORMAT_FIELDS).join(', ')}, got ${String(type)}`,
    );
  }
  checkOptionNames(`responseFormat (type '${type}')`, format, RESPONSE_FORMAT_FIELDS[type]);
  const text = (name: string, value: unknown): string => {
    if (typeof value !== 'string' || value.length === 0) {
      throw new SeedinferError('INVALID_OPTION', `option responseFormat.${name} must be a non-empty string`);
    }
    return value;
  };
  switch (format.type) {
    case 'text':
      return undefined;
    case 'json_object':
      return { type };
    case 'json_schema': {
      const { schema, strict } = format;
      if (typeof schema !== 'object' || schema === null || Array.isArray(schema)) {
        throw new SeedinferError('INVALID_OPTION', 'option responseFormat.schema must be a JSON Schema object');
      }
      checkBooleanOption('responseFormat.strict', strict);
      let json: string;
      try {
        json = JSON.stringify(schema);
      } catch (error) {
        throw new SeedinferError('INVALID_OPTION', `option responseFormat.schema cannot be written as JSON: ${String(error)}`);
      }
      return { type, schema: json, strict: strict ?? false };
    }
    case 'regex':
      return { type, pattern: text('pattern', format.pattern) };
    case 'grammar':
      return { type, lark: text('lark', format.lark) };
  }
}

/** The native model behind each loaded Model, so a Model can be passed as a draft (filled by Model's
 * constructor; a disposed model throws DISPOSED). */
const nativeModels = new WeakMap<object, () => NativeModel>();

export function registerNativeModel(model: object, live: () => NativeModel): void {
  nativeModels.set(model, live);
}

const DRAFT_NAMES = ['promptLookup', 'self'];

/** Checks the shape of `speculative`; the engine checks the ranges and where it applies. */
function nativeSpeculative(options: SpeculativeOptions | undefined): NativeSpeculativeOptions | undefined {
  if (options === undefined) return undefined;
  if (typeof options !== 'object' || options === null) throw new SeedinferError('INVALID_OPTION', 'option speculative must be an object');
  checkOptionNames('speculative', options, SPECULATIVE_OPTIONS);
  const draft = options.draft;
  if (draft !== undefined && !(typeof draft === 'string' ? DRAFT_NAMES.includes(draft) : nativeModels.has(draft as object))) {
    throw new SeedinferError('INVALID_OPTION', `option speculative.draft must be 'promptLookup', 'self' or a loaded Model, got ${typeof draft === 'string' ? JSON.stringify(draft) : typeof draft}`);
  }
  if (options.draftLayers !== undefined && draft !== 'self') {
    throw new SeedinferError('INVALID_OPTION', "option speculative.draftLayers needs draft 'self'");
  }
  checkNumberOption('speculative.draftLayers', options.draftLayers, 1, 10_000, true);
  checkNumberOption('speculative.maxDraftTokens', options.maxDraftTokens, 1, 64, true);
  checkNumberOption('speculative.ngram', options.ngram, 1, 16, true);
  return {
    draft: typeof draft === 'object' ? 'model' : draft,
    draftLayers: options.draftLayers,
    maxDraftTokens: options.maxDraftTokens,
    ngram: options.ngram,
  };
}

/** The native draft model `speculative.draft` names, if it is a Model. */
function draftModelOf(options: SpeculativeOptions | undefined): NativeModel | undefined {
  const draft = options?.draft;
  return typeof draft === 'object' && draft !== null ? nativeModels.get(draft)?.() : undefined;
}

/** Checks XAttention's settings (`name` says where they were given); the engine checks them against the cache. */
function nativeXAttention(name: string, x: unknown): NativeXAttentionOptions {
  if (typeof x !== 'object' || x === null) throw new SeedinferError('INVALID_OPTION', `option ${name} must be an object`);
  checkOptionNames(name, x, XATTENTION_OPTIONS);
  const { stride, blockSize, threshold, denseLastBlock } = x as XAttentionOptions;
  checkNumberOption(`${name}.stride`, stride, 1, 64, true);
  checkNumberOption(`${name}.blockSize`, blockSize, 1, 8192, true);
  checkNumberOption(`${name}.threshold`, threshold, Number.MIN_VALUE, 1);
  checkBooleanOption(`${name}.denseLastBlock`, denseLastBlock);
  return { stride, blockSize, threshold, denseLastBlock };
}

function prefillReport(r: NativePrefillReport, promptTokens: number): PrefillReport {
  return {
    strategy: r.strategy as PrefillReport['strategy'],
    layerTokens: r.layerTokens,
    layerFractions: r.layerTokens.map((n) => (promptTokens > 0 ? n / promptTokens : 0)),
    droppedTokens: r.droppedTokens,
    revivedTokens: r.revivedTokens,
    decodeRevivedTokens: r.decodeRevivedTokens,
    attentionDensity: r.causalBlocks > 0 ? r.selectedBlocks / r.causalBlocks : 1,
    prunedKeyBlocks: r.prunedKeyBlocks,
    keptKeyChannels: r.keptKeyChannels,
  };
}

function nativeOptions(options: GenerateOptions): NativeGenerateOptions {
  if (typeof options !== 'object' || options === null) throw new SeedinferError('INVALID_OPTION', 'generate options must be an object');
  checkOptionNames('generate', options, GENERATE_OPTIONS);
  checkNumberOption('maxTokens', options.maxTokens, 1, 10_000_000, true);
  checkNumberOption('temperature', options.temperature, 0, 100);
  checkNumberOption('topK', options.topK, 0, 10_000_000, true);
  checkNumberOption('topP', options.topP, Number.MIN_VALUE, 1);
  checkNumberOption('minP', options.minP, 0, 1);
  checkNumberOption('repetitionPenalty', options.repetitionPenalty, Number.MIN_VALUE, 100);
  checkNumberOption('repetitionLastN', options.repetitionLastN, 0, 10_000_000, true);
  checkNumberOption('presencePenalty', options.presencePenalty, -2, 2);
  checkNumberOption('frequencyPenalty', options.frequencyPenalty, -2, 2);
  checkNumberOption('topLogprobs', options.topLogprobs, 0, 20, true);
  checkBooleanOption('logprobs', options.logprobs);
  if (options.onToken !== undefined && typeof options.onToken !== 'function') {
    throw new SeedinferError('INVALID_OPTION', 'option onToken must be a function');
  }
  checkNumberOption('seed', options.seed, 0, Number.MAX_SAFE_INTEGER, true);
  const stop = options.stop ?? [];
  if (!Array.isArray(stop) || stop.some((s) => typeof s !== 'string' || s.length === 0)) {
    throw new SeedinferError('INVALID_OPTION', 'option stop must be an array of non-empty strings');
  }
  return {
    maxTokens: options.maxTokens ?? 256,
    temperature: options.temperature ?? 0.8,
    topK: options.topK ?? 40,
    topP: options.topP ?? 0.95,
    minP: options.minP ?? 0.05,
    repetitionPenalty: options.repetitionPenalty ?? 1.0,
    repetitionLastN: options.repetitionLastN ?? 64,
    presencePenalty: options.presencePenalty ?? 0,
    frequencyPenalty: options.frequencyPenalty ?? 0,
    topLogprobs: options.logprobs || options.topLogprobs !== undefined ? (options.topLogprobs ?? 0) : undefined,
    seed: options.seed ?? randomInt(0, 2 ** 47),
    stop,
    ignoreEos: options.ignoreEos ?? false,
    prefill: nativePrefill(options.prefill),
    responseFormat: nativeResponseFormat(options.responseFormat),
    speculative: nativeSpeculative(options.speculative),
  };
}

/** Token ids as the binding takes them, each checked (`INVALID_TOKEN_ID`). */
export function toTokenIds(ids: ArrayLike<number>): Uint32Array {
  const out = new Uint32Array(ids.length);
  for (let i = 0; i < ids.length; i++) {
    const id = ids[i];
    if (!Number.isInteger(id) || id < 0 || id > 0xffffffff) {
      throw new SeedinferError('INVALID_TOKEN_ID', `token id at index ${i} is not a valid id: ${String(id)}`);
    }
    out[i] = id;
  }
  return out;
}

/** A running generation: an async iterable of text chunks plus a promise of the final result. */
export class Generation implements AsyncIterable<string> {
  readonly result: Promise<GenerationResult>;
  private readonly chunks: string[] = [];
  private finished = false;
  private failure: SeedinferError | undefined;
  private wake: (() => void) | undefined;

  /** @internal */
  constructor(start: (onEvent: (event: NativeGenerationEvent) => void) => Promise<GenerationResult>) {
    this.result = start((event) => {
      if (event.kind === 'token' && event.text) this.chunks.push(event.text);
      this.notify();
    });
    this.result.then(
      () => this.finish(undefined),
      (error: unknown) => this.finish(toSeedinferError(error)),
    );
  }

  private finish(failure: SeedinferError | undefined): void {
    this.finished = true;
    this.failure = failure;
    this.notify();
  }

  private notify(): void {
    const wake = this.wake;
    this.wake = undefined;
    wake?.();
  }

  async *[Symbol.asyncIterator](): AsyncIterator<string> {
    for (;;) {
      while (this.chunks.length > 0) yield this.chunks.shift() as string;
      if (this.finished) {
        if (this.failure) throw this.failure;
        return;
      }
      await new Promise<void>((resolve) => (this.wake = resolve));
    }
  }
}

export class Session {
  private disposed = false;
  private running = false;

  /** @internal */
  constructor(
    private readonly owner: SessionOwner,
    private readonly inner: NativeSession,
  ) {}

  private live(): NativeSession {
    if (this.disposed) throw new SeedinferError('DISPOSED', 'the session was disposed');
    return this.inner;
  }

  get tokenCount(): number {
    return this.guard(() => this.live().tokenCount);
  }

  get contextSize(): number {
    return this.guard(() => this.live().contextSize);
  }

  get kvBytes(): number {
    return this.guard(() => this.live().kvBytes);
  }

  get evictedTokens(): number {
    return this.guard(() => this.live().evictedTokens);
  }

  get tokenIds(): number[] {
    return this.guard(() => this.live().tokenIds());
  }

  lastLogits(): Float32Array | null {
    return this.guard(() => this.live().lastLogits());
  }

  /** Runs a synchronous native call, turning its failures into SeedinferErrors. */
  private guard<T>(work: () => T): T {
    try {
      if (this.running) throw new SeedinferError('SESSION_BUSY', 'the session is generating; wait for it or abort it first');
      return work();
    } catch (error) {
      throw toSeedinferError(error);
    }
  }

  fork(): Session {
    return this.guard(() => new Session(this.owner, this.live().fork()));
  }

  rewind(tokens: number): void {
    checkNumberOption('tokens', tokens, 0, 0xffffffff, true);
    if (tokens === undefined) throw new SeedinferError('INVALID_OPTION', 'rewind needs a number of tokens');
    this.guard(() => this.live().rewind(tokens));
  }

  async save(path: string, options: AbortOptions = {}): Promise<void> {
    if (typeof path !== 'string' || path.length === 0) throw new SeedinferError('INVALID_OPTION', 'save needs a file path');
    checkOptionNames('save', options ?? {}, ABORT_OPTIONS);
    return this.exclusive((inner) => withAbortFlag(options?.signal, 'the save', (flag) => inner.save(path, flag)));
  }

  /** Runs one native job on a worker thread while no generation runs, holding the session busy until it ends. */
  private async exclusive<T>(work: (inner: NativeSession) => Promise<T>): Promise<T> {
    try {
      const inner = this.live();
      if (this.running) throw new SeedinferError('SESSION_BUSY', 'the session is already generating');
      this.running = true;
      try {
        return await work(inner);
      } finally {
        this.running = false;
      }
    } catch (error) {
      throw toSeedinferError(error);
    }
  }


  generate(prompt: string | ArrayLike<number>, options: GenerateOptions = {}): Generation {
    return new Generation((onEvent) => this.start(prompt, options, onEvent));
  }

  /** @internal `generate` under a format the public options do not offer (a tool call's `tagged_json`). */
  generateConstrained(prompt: string | ArrayLike<number>, options: GenerateOptions, format: NativeResponseFormat | undefined): Generation {
    return new Generation((onEvent) => this.start(prompt, options, onEvent, format));
  }

  async generateText(prompt: string | ArrayLike<number>, options: GenerateOptions = {}): Promise<GenerationResult> {
    return this.generate(prompt, options).result;
  }

  private start(
    prompt: string | ArrayLike<number>,
    options: GenerateOptions,
    onEvent: (event: NativeGenerationEvent) => void,
    format?: NativeResponseFormat,
  ): Promise<GenerationResult> {
    let promptTokenIds: Uint32Array;
    let nativeOpts: NativeGenerateOptions;
    let draftModel: NativeModel | undefined;
    try {
      const inner = this.live();
      if (this.running) throw new SeedinferError('SESSION_BUSY', 'the session is already generating');
      nativeOpts = nativeOptions(options);
      draftModel = draftModelOf(options.speculative);
      if (format) {
        if (nativeOpts.responseFormat) throw new SeedinferError('INVALID_OPTION', 'responseFormat cannot be combined with toolChoice required or a named tool');
        nativeOpts.responseFormat = format;
      }
      promptTokenIds =
        typeof prompt === 'string'
          ? toTokenIds(
              this.owner.tokenize(prompt, {
                addBos: (options.addBos ?? true) && inner.tokenCount === 0,
                special: options.special ?? true,
              }),
            )
          : toTokenIds(prompt);
      if (options.signal?.aborted) throw new SeedinferError('ABORTED', 'the generation was aborted before it started');
    } catch (error) {
      return Promise.reject(toSeedinferError(error));
    }
    const abortFlag = new (native().NativeAbortFlag)();
    const onAbort = () => abortFlag.abort();
    options.signal?.addEventListener('abort', onAbort, { once: true });
    this.running = true;
    let callbackError: { error: unknown } | undefined;
    return new Promise<GenerationResult>((resolve, reject) => {
      const settle = () => {
        this.running = false;
        options.signal?.removeEventListener('abort', onAbort);
      };
      try {
        this.inner.generate(
          promptTokenIds,
          nativeOpts,
          (event) => {
            if (event.kind === 'token') {
              onEvent(event);
              try {
                options.onToken?.({
                  tokenId: event.tokenId ?? 0,
                  text: event.text ?? '',
                  ...(event.logprobs ? { logprobs: event.logprobs } : {}),
                });
              } catch (error) {
                // A throwing callback ends the generation, which rejects with what it threw.
                callbackError ??= { error };
                abortFlag.abort();
              }
              return;
            }
            settle();
            if (callbackError) {
              reject(callbackError.error);
              return;
            }
            if (event.kind === 'done' && event.result) {
              const r = event.result;
              resolve({
                text: r.text,
                ...(r.logprobs ? { logprobs: r.logprobs } : {}),
                promptTokenIds: Array.from(promptTokenIds),
                tokenIds: r.tokenIds,
                stopReason: r.stopReason as GenerationResult['stopReason'],
                ...(r.incomplete != null ? { incomplete: r.incomplete } : {}),
                ...(r.speculative
                  ? { speculative: { ...r.speculative, meanAcceptedLength: r.speculative.passes > 0 ? r.speculative.accepted / r.speculative.passes : 0 } }
                  : {}),
                timings: r.timings,
                prefill: prefillReport(r.prefill, r.timings.promptTokens),
              });
            } else {
              reject(eventError(event, 'generation failed without a reason'));
            }
          },
          abortFlag,
          draftModel,
        );
      } catch (error) {
        settle();
        reject(toSeedinferError(error));
      }
    });
  }

  async predictNextTokens(tokenIds: ArrayLike<number>, options: AbortOptions = {}): Promise<number[]> {
    return this.exclusive((inner) => {
      checkOptionNames('predictNextTokens', options ?? {}, ABORT_OPTIONS);
      const tokens = toTokenIds(tokenIds);
      return withAbortFlag(options?.signal, 'the prediction', (flag) => inner.predictNext(tokens, flag));
    });
  }


  async scoreTokens(tokenIds: ArrayLike<number>, options: AbortOptions = {}): Promise<number[]> {
    return this.exclusive((inner) => {
      checkOptionNames('scoreTokens', options ?? {}, ABORT_OPTIONS);
      const tokens = toTokenIds(tokenIds);
      return withAbortFlag(options?.signal, 'the scoring', (flag) => inner.scoreTokens(tokens, flag));
    });
  }

  async superpose(options: SuperposeOptions): Promise<SuperposeResult> {
    return this.exclusive(async (inner) => {
      if (typeof options !== 'object' || options === null) throw new SeedinferError('INVALID_OPTION', 'superpose options must be an object');
      checkOptionNames('superpose', options, SUPERPOSE_OPTIONS);
      if (options.topK !== undefined && options.topK !== 1) {
        throw new SeedinferError('INVALID_OPTION', `option topK must be 1 (one path is kept so far), got ${String(options.topK)}`);
      }
      if (options.positions !== undefined && options.positions !== 'max') {
        throw new SeedinferError('INVALID_OPTION', `option positions must be 'max' (the only layout so far), got ${JSON.stringify(options.positions)}`);
      }
      if (!Array.isArray(options.documents) || options.documents.length === 0) {
        throw new SeedinferError('INVALID_OPTION', 'option documents must be a non-empty array');
      }
      // Text is tokenized without BOS, but for the preamble of an empty session; special tokens are parsed.
      const tokens = (what: string, part: string | ArrayLike<number>, addBos: boolean) => {
        if (typeof part === 'string') return toTokenIds(this.owner.tokenize(part, { addBos, special: true }));
        if (part === null || typeof part !== 'object' || typeof part.length !== 'number') {
          throw new SeedinferError('INVALID_OPTION', `option ${what} must be a string or an array of token ids`);
        }
        return toTokenIds(part);
      };
      const preamble = tokens('preamble', options.preamble ?? '', inner.tokenCount === 0);
      const documents = options.documents.map((d, i) => tokens(`documents[${i}]`, d, false));
      const query = tokens('query', options.query, false);
      const r = await withAbortFlag(options.signal, 'superposition', (flag) => inner.superpose(preamble, documents, query, 1, flag));
      return { saliency: r.saliency, kept: r.kept, promptTokens: r.promptTokens, reusedTokens: r.reusedTokens, timeMs: r.elapsedMs };
    });
  }

  reset(): void {
    this.guard(() => this.live().reset());
  }

  dispose(): void {
    if (this.disposed || this.running) {
      if (this.running) throw new SeedinferError('SESSION_BUSY', 'abort the running generation before disposing');
      return;
    }
    this.guard(() => this.inner.dispose());
    this.disposed = true;
  }
}
