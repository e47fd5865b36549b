// The public Model: loading from a path, a Hub id or the default model; tokenizer; chat template; sessions.
import { BUILTIN_CHAT_TEMPLATES, compileChatTemplate } from './chat-template.js';
import { SeedinferError, checkBooleanOption, checkNumberOption, checkOptionNames, optionNames, toSeedinferError } from './errors.js';
import { resolveModelSource } from './fetch/resolve.js';
import { native } from './native.js';
import { withAbortFlag } from './abort.js';
import type { NativeModel, NativeModelInfo } from './native.js';
import { ABORT_OPTIONS, GENERATE_OPTIONS, Session, registerNativeModel, toTokenIds } from './session.js';
import { checkTools, parseToolCalls, templateMessages, toolCallFormat, toolFormatOf, type ToolFormat } from './tool-calls.js';
import type {
  AbortOptions,
  BatchStats,
  CacheStats,
  ChatMessage,
  ChatOptions,
  ChatResult,
  ChatTemplateOptions,
  GenerateOptions,
  KvCacheOptions,
  LoadOptions,
  ModelInfo,
  PerplexityOptions,
  PerplexityResult,
  SessionOptions,
  BoundedCacheOptions,
  ThinkOptions,
  TokenizeOptions,
  ToolCall,
} from '../index.js';
import type { NativeBoundedCache, NativeKvCacheOptions, NativeResponseFormat, NativeThink } from './native.js';

/** A chat turn ready to generate (see `Model.prepareChat`). */
export interface PreparedChat {
  prompt: number[];
  /** The grammar of a required or named tool call. */
  constraint: NativeResponseFormat | undefined;
  format: ToolFormat;
  /** The answer's text and calls. */
  read(text: string): { content: string | null; toolCalls: ToolCall[] };
}

/** Sessions' context when none is asked for: the model's, up to this many tokens. */
export const DEFAULT_CONTEXT = 4096;
/** The `weights` option's values, for types; the binding's list (Rust's) is what is checked against. */
export const WEIGHT_FORMATS = ['f32', 'f16', 'q8_0', 'q4_0', 'q4_1', 'q5_0', 'q5_1', 'q2_k', 'q3_k', 'q4_k', 'q5_k', 'q6_k', 'iq4_nl', 'iq4_xs'] as const;
const NUMERICS: readonly string[] = ['seedinfer', 'llamacpp'];
const KV_DTYPES: readonly string[] = ['f32', 'f16', 'int8'];
const LOAD_OPTIONS = optionNames<LoadOptions>()(['threads', 'cacheDir', 'onProgress', 'weights', 'kvCache', 'numerics', 'maxBatchTokens']);
const KV_CACHE_OPTIONS = optionNames<KvCacheOptions>()(['dtype', 'blockSize', 'budgetBytes', 'prefixCaching']);
const TOKENIZE_OPTIONS = optionNames<TokenizeOptions>()(['addBos', 'special']);
const DETOKENIZE_OPTIONS = optionNames<{ skipSpecial?: boolean }>()(['skipSpecial']);
const CHAT_TEMPLATE_OPTIONS = optionNames<ChatTemplateOptions>()(['addGenerationPrompt', 'tools']);
const SESSION_OPTIONS = optionNames<SessionOptions>()(['contextSize', 'kvCache']);
const BOUNDED_CACHE_OPTIONS: Record<string, readonly string[]> = {
  streaming: optionNames<Extract<BoundedCacheOptions, { policy: 'streaming' }>>()(['policy', 'maxTokens', 'sinks']),
  sirllm: optionNames<Extract<BoundedCacheOptions, { policy: 'sirllm' }>>()(['policy', 'maxTokens', 'sinks', 'recent', 'decay']),
};

const THINK_OPTIONS = optionNames<ThinkOptions>()(['ratio', 'recent']);

/** Checks the shape of a session's `kvCache` option: a bound (checked against the context size by the engine) or
 * ThinK key pruning. */
function nativeSessionCache(kvCache: SessionOptions['kvCache']): { bound?: NativeBoundedCache; think?: NativeThink } {
  if (kvCache === undefined) return {};
  if (typeof kvCache === 'object' && kvCache !== null && 'think' in kvCache) {
    checkOptionNames('kvCache (ThinK)', kvCache, ['think']);
    const think = kvCache.think;
    if (typeof think !== 'object' || think === null) throw new SeedinferError('INVALID_OPTION', 'option kvCache.think must be an object');
    checkOptionNames('kvCache.think', think, THINK_OPTIONS);
    checkNumberOption('kvCache.think.ratio', think.ratio, 0, 1);
    if (think.ratio === 1) throw new SeedinferError('INVALID_OPTION', 'option kvCache.think.ratio must be below 1');
    checkNumberOption('kvCache.think.recent', think.recent, 1, 4096, true);
    return { think: { ratio: think.ratio, recent: think.recent } };
  }
  return { bound: nativeBoundedCache(kvCache as BoundedCacheOptions) };
}

/** Checks the shape of a session's `kvCache` bound; the engine checks it against the context size. */
function nativeBoundedCache(kvCache: BoundedCacheOptions): NativeBoundedCache {
  const policy = (kvCache as { policy?: unknown } | null)?.policy;
  if (typeof kvCache !== 'object' || kvCache === null || typeof policy !== 'string' || !(policy in BOUNDED_CACHE_OPTIONS)) {
    throw new SeedinferError('INVALID_OPTION', `option kvCache.policy must be 'streaming' or 'sirllm' (or kvCache be { think: {...} }), got ${String(policy)}`);
  }
  checkOptionNames(`kvCache (policy '${policy}')`, kvCache, BOUNDED_CACHE_OPTIONS[policy]);
  const o = kvCache as Partial<Record<'maxTokens' | 'sinks' | 'recent' | 'decay', number>>;
  if (o.maxTokens === undefined) throw new SeedinferError('INVALID_OPTION', 'option kvCache.maxTokens is required with a policy');
  checkNumberOption('kvCache.maxTokens', o.maxTokens, 1, 0xffffffff, true);
  checkNumberOption('kvCache.sinks', o.sinks, 0, 0xffffffff, true);
  checkNumberOption('kvCache.recent', o.recent, 0, 0xffffffff, true);
  checkNumberOption('kvCache.decay', o.decay, Number.MIN_VALUE, 1);
  return { policy, maxTokens: o.maxTokens, sinks: o.sinks, recent: o.recent, decay: o.decay };
}
const CHAT_OPTIONS = [...GENERATE_OPTIONS, ...optionNames<Omit<ChatOptions, keyof GenerateOptions>>()(['tools', 'toolChoice', 'contextSize'])];
const PERPLEXITY_OPTIONS = optionNames<PerplexityOptions>()(['window', 'signal']);

function kvCacheOptions(options: KvCacheOptions | undefined): NativeKvCacheOptions | undefined {
  if (options === undefined) return undefined;
  if (typeof options !== 'object' || options === null) throw new SeedinferError('INVALID_OPTION', 'option kvCache must be an object');
  checkOptionNames('kvCache', options, KV_CACHE_OPTIONS);
  if (options.dtype !== undefined && !KV_DTYPES.includes(options.dtype)) {
    throw new SeedinferError('INVALID_OPTION', `option kvCache.dtype must be one of ${KV_DTYPES.join(', ')}, got ${JSON.stringify(options.dtype)}`);
  }
  checkNumberOption('kvCache.blockSize', options.blockSize, 8, 1024, true);
  checkNumberOption('kvCache.budgetBytes', options.budgetBytes, 1, Number.MAX_SAFE_INTEGER, true);
  checkBooleanOption('kvCache.prefixCaching', options.prefixCaching);
  return { dtype: options.dtype, blockSize: options.blockSize, budgetBytes: options.budgetBytes, prefixCaching: options.prefixCaching };
}

function publicInfo(raw: NativeModelInfo): ModelInfo {
  return {
    architecture: raw.architecture,
    path: raw.path,
    fileFormat: raw.fileFormat as ModelInfo['fileFormat'],
    parameterCount: raw.parameterCount,
    layers: raw.layers,
    hiddenSize: raw.hiddenSize,
    intermediateSize: raw.intermediateSize,
    attentionHeads: raw.attentionHeads,
    kvHeads: raw.kvHeads,
    headDim: raw.headDim,
    vocabSize: raw.vocabSize,
    contextLength: raw.contextLength,
    ropeTheta: raw.ropeTheta,
    ropeStyle: raw.ropeStyle as ModelInfo['ropeStyle'],
    ropeScaling: raw.ropeScaling,
    slidingWindow: raw.slidingWindow ?? null,
    tiedEmbeddings: raw.tiedEmbeddings,
    fileTensorFormats: { ...raw.fileTensorFormats },
    computeFormat: raw.computeFormat,
    kernelIsa: raw.kernelIsa,
    weightFallbacks: [...raw.weightFallbacks],
    fileBytes: raw.fileBytes,
    weightBytes: raw.weightBytes,
    kvBytesPerToken: raw.kvBytesPerToken,
    threads: raw.threads,
    numerics: raw.numerics as ModelInfo['numerics'],
    endOfGenerationTokenIds: [...raw.endOfGenerationTokenIds],
  };
}

export class Model {
  readonly info: ModelInfo;
  private readonly renderChat: ReturnType<typeof compileChatTemplate> | undefined;
  /** How the chat template offers tools and the model writes calls. */
  private readonly toolFormat: ToolFormat;
  /** The BOS token's text, if the tokenizer has one. */
  private readonly bosToken: string | undefined;
  private inner: NativeModel | undefined;

  private constructor(inner: NativeModel) {
    this.inner = inner;
    const raw = inner.info();
    this.info = Object.freeze(publicInfo(raw));
    this.bosToken = raw.bosToken || undefined;
    // A file without a template of its own gets its architecture's (see BUILTIN_CHAT_TEMPLATES).
    const template = raw.chatTemplate ?? BUILTIN_CHAT_TEMPLATES[raw.architecture];
    this.renderChat = template
      ? compileChatTemplate(template, { bosToken: raw.bosToken, eosToken: raw.eosToken })
      : undefined;
    this.toolFormat = toolFormatOf(template);
    registerNativeModel(this, () => this.live());
  }

  static async load(pathOrId?: string, options: LoadOptions = {}): Promise<Model> {
    try {
      if (typeof options !== 'object' || options === null) throw new SeedinferError('INVALID_OPTION', 'load options must be an object');
      checkOptionNames('Model.load', options, LOAD_OPTIONS);
      checkNumberOption('threads', options.threads, 1, 1024, true);
      checkNumberOption('maxBatchTokens', options.maxBatchTokens, 2, 65_536, true);
      const source = await resolveModelSource(pathOrId, { cacheDir: options.cacheDir, onProgress: options.onProgress });
      // `weights` is validated by the binding (`WeightFormat`), which names the formats it takes.
      const weights = options.weights;
      const numerics = options.numerics;
      if (numerics !== undefined && !NUMERICS.includes(numerics)) {
        throw new SeedinferError('INVALID_OPTION', `option numerics must be one of ${NUMERICS.join(', ')}, got ${JSON.stringify(numerics)}`);
      }
      const kvCache = kvCacheOptions(options.kvCache);
      const inner = await native().loadModel(source, { threads: options.threads, weights, kvCache, numerics, maxBatchTokens: options.maxBatchTokens });
      return new Model(inner);
    } catch (error) {
      throw toSeedinferError(error);
    }
  }

  private live(): NativeModel {
    if (!this.inner) throw new SeedinferError('DISPOSED', 'the model was disposed');
    return this.inner;
  }

  tokenize(text: string, options: TokenizeOptions = {}): number[] {
    if (typeof text !== 'string') throw new SeedinferError('INVALID_OPTION', 'text must be a string');
    checkOptionNames('tokenize', options ?? {}, TOKENIZE_OPTIONS);
    try {
      return this.live().tokenize(text, options.addBos ?? true, options.special ?? true);
    } catch (error) {
      throw toSeedinferError(error);
    }
  }

  detokenize(tokenIds: ArrayLike<number>, options: { skipSpecial?: boolean } = {}): string {
    checkOptionNames('detokenize', options ?? {}, DETOKENIZE_OPTIONS);
    const ids = Array.from(tokenIds);
    const bad = ids.findIndex((id) => !Number.isInteger(id) || id < 0 || id > 0xffffffff);
    if (bad >= 0) throw new SeedinferError('INVALID_TOKEN_ID', `token id at index ${bad} is not valid: ${String(ids[bad])}`);
    try {
      return this.live().detokenize(ids, options.skipSpecial ?? false);
    } catch (error) {
      throw toSeedinferError(error);
    }
  }

  applyChatTemplate(messages: ChatMessage[], options: ChatTemplateOptions = {}): string {
    if (!this.renderChat) throw new SeedinferError('NO_CHAT_TEMPLATE', 'this model has no chat template');
    checkOptionNames('applyChatTemplate', options ?? {}, CHAT_TEMPLATE_OPTIONS);
    return this.renderChat(this.checkedMessages(messages, undefined), options.addGenerationPrompt ?? true, options.tools);
  }

  /** Messages as the template takes them (tool calls and results in the family's shape; see tool-calls.ts). */
  private checkedMessages(messages: ChatMessage[], injectTools: Parameters<typeof templateMessages>[2]): object[] {
    if (!Array.isArray(messages) || messages.some((m) => typeof m?.role !== 'string' || (m.content != null && typeof m.content !== 'string'))) {
      throw new SeedinferError('INVALID_OPTION', 'messages must be an array of { role: string, content: string | null }');
    }
    return templateMessages(this.toolFormat, messages, injectTools);
  }

  /**
   * @internal A chat turn's prompt (token ids), the constraint of its tool choice and the reader of its answer,
   * for `chat` and the server.
   */
  prepareChat(messages: ChatMessage[], tools: unknown, toolChoice: unknown): PreparedChat {
    if (!this.renderChat) throw new SeedinferError('NO_CHAT_TEMPLATE', 'this model has no chat template');
    const offered = tools === undefined ? undefined : checkTools(tools, toolChoice);
    if (!offered && toolChoice !== undefined) throw new SeedinferError('INVALID_OPTION', 'option toolChoice needs tools');
    const active = offered && offered.choice !== 'none' ? offered : undefined;
    const format = this.toolFormat;
    const rendered = this.renderChat(
      this.checkedMessages(messages, format === 'injected' ? active?.tools : undefined),
      true,
      format === 'injected' ? undefined : active?.tools,
    );
    return {
      prompt: this.tokenize(rendered, { addBos: false, special: true }),
      constraint: active ? toolCallFormat(format, active.tools, active.choice) : undefined,
      format,
      read: (text) => (active ? parseToolCalls(format, text, active.tools) : { content: text, toolCalls: [] }),
    };
  }

  async chat(messages: ChatMessage[], options: ChatOptions = {}): Promise<ChatResult> {
    let session: Session | undefined;
    try {
      if (typeof options !== 'object' || options === null) throw new SeedinferError('INVALID_OPTION', 'chat options must be an object');
      checkOptionNames('chat', options, CHAT_OPTIONS);
      const { tools, toolChoice, contextSize, ...generate } = options;
      const chat = this.prepareChat(messages, tools, toolChoice);
      session = this.createSession(contextSize === undefined ? {} : { contextSize });
      const result = await session.generateConstrained(chat.prompt, generate, chat.constraint).result;
      return { ...result, message: { role: 'assistant', ...chat.read(result.text) } };
    } catch (error) {
      throw toSeedinferError(error);
    } finally {
      session?.dispose();
    }
  }

  createSession(options: SessionOptions = {}): Session {
    const inner = this.live();
    checkOptionNames('createSession', options ?? {}, SESSION_OPTIONS);
    const contextSize = options.contextSize ?? Math.min(this.info.contextLength, DEFAULT_CONTEXT);
    checkNumberOption('contextSize', contextSize, 1, this.info.contextLength, true);
    try {
      const { bound, think } = nativeSessionCache(options.kvCache);
      return new Session(this.sessionTokenizer(), inner.createSession(contextSize, bound, think));
    } catch (error) {
      throw toSeedinferError(error);
    }
  }

  /** How a session (created or loaded) tokenizes its prompts. A prompt that already starts with BOS (a chat
   * template's `{{ bos_token }}`, as Gemma's renders) gets no second one, as in llama.cpp's chat path and
   * transformers' apply_chat_template; tokenize() itself stays the tokenizer's (which doubles it, as llama.cpp's
   * and Hugging Face's do). */
  private sessionTokenizer() {
    const bos = this.bosToken;
    return {
      tokenize: (text: string, o: { addBos: boolean; special: boolean }) =>
        this.tokenize(text, { ...o, addBos: o.addBos && !(o.special && bos !== undefined && text.startsWith(bos)) }),
    };
  }

  /** Counts of the KV-cache pool: blocks used, free, shared, cached for prefix reuse; prefix hits. */
  cacheStats(): CacheStats {
    const stats = this.live().cacheStats();
    return { ...stats, dtype: stats.dtype as CacheStats['dtype'] };
  }

  /** Decode steps batched across concurrent generations since load; `steps / passes` is the mean batch size. */
  batchStats(): BatchStats {
    return { ...this.live().batchStats() };
  }

  /** Drops cached prefix blocks that no session uses. */
  clearPrefixCache(): void {
    this.live().clearPrefixCache();
  }

  /** Reads a session written by `session.save`, validating that it belongs to this model and cache configuration. */
  async loadSession(path: string, options: AbortOptions = {}): Promise<Session> {
    try {
      if (typeof path !== 'string' || path.length === 0) throw new SeedinferError('INVALID_OPTION', 'loadSession needs a file path');
      checkOptionNames('loadSession', options ?? {}, ABORT_OPTIONS);
      const model = this.live();
      const inner = await withAbortFlag(options?.signal, 'loading the session', (flag) => model.loadSession(path, flag));
      return new Session(this.sessionTokenizer(), inner);
    } catch (error) {
      throw toSeedinferError(error);
    }
  }

  /**
   * Perplexity of `textOrTokens` (text is tokenized with BOS as the tokenizer asks, special-token text read as
   * plain text) in non-overlapping windows, each scored from an empty cache. Runs off the JS main thread.
   */
  async perplexity(textOrTokens: string | ArrayLike<number>, options: PerplexityOptions = {}): Promise<PerplexityResult> {
    try {
      const inner = this.live();
      if (typeof options !== 'object' || options === null) throw new SeedinferError('INVALID_OPTION', 'perplexity options must be an object');
      checkOptionNames('perplexity', options, PERPLEXITY_OPTIONS);
      checkNumberOption('window', options.window, 2, this.info.contextLength, true);
      const tokens =
        typeof textOrTokens === 'string' ? toTokenIds(this.tokenize(textOrTokens, { addBos: true, special: false })) : toTokenIds(textOrTokens);
      const r = await withAbortFlag(options.signal, 'the perplexity evaluation', (flag) =>
        inner.evaluatePerplexity(tokens, { window: options.window }, flag),
      );
      return {
        perplexity: r.perplexity,
        tokens: r.tokens,
        nll: r.nll,
        window: r.window,
        windows: r.windows.map((w) => ({ tokens: w.tokens, nll: w.nll })),
      };
    } catch (error) {
      throw toSeedinferError(error);
    }
  }

  dispose(): void {
    this.inner = undefined;
  }
}
