//! A conversation: its KV cache, the tokens it holds, and generation with streaming text, stop strings,
//! end-of-generation tokens and cancellation.

use crate::bounded_cache::{compact, BoundedCache};
use crate::constraint::{ResponseFormat, TokenConstraint};
use crate::error::{EngineError, Result};
use crate::forward::{LogitsFor, Scratch};
use crate::kv_cache::{KvStore, PagedKv};
use crate::model::{Model, Numerics};
use crate::ops_seedinfer::SeedinferOps;
use crate::perplexity::token_nll;
use crate::sampler::Distribution;
use crate::sampler::{Sampler, SamplingParams, TokenLogprobs};
use crate::speculative::{Drafter, SpeculativeParams, VerifiedDrafts};
use crate::think::{Think, ThinkReport};
use crate::token_pruning::{forward_pruned, PassReport, PrefillStrategy, PrunedPositions};
use crate::xattention::XAttention;
use seedinfer_tokenizer::StreamDecoder;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// Prompt tokens are run through the model in chunks of this many, bounding activation memory and letting a
/// cancellation take effect between chunks.
const PREFILL_CHUNK: usize = 256;

#[derive(Clone, Debug)]
pub struct GenerateParams {
    pub max_tokens: usize,
    pub sampling: SamplingParams,
    pub stop: Vec<String>,
    pub ignore_eos: bool,
    /// How the prompt is prefilled (and, for LazyLLM, how decode steps select tokens).
    pub prefill: PrefillStrategy,
    /// Block-sparse attention for the prefill (`crate::xattention`), with any `prefill` strategy; `None`: dense.
    pub xattention: Option<XAttention>,
    /// Report each generated token's log-probability with this many most likely alternatives (`None`: none).
    pub logprobs: Option<usize>,
    /// What the output must be (a JSON schema, a regex, a grammar); `None`: free text.
    pub response_format: Option<ResponseFormat>,
    /// Speculative decoding: drafts verified several at a time (`crate::speculative`); `None`: one token per pass.
    pub speculative: Option<SpeculativeParams>,
}

/// The most alternatives `GenerateParams::logprobs` may ask for (OpenAI's `top_logprobs` limit).
pub const MAX_TOP_LOGPROBS: usize = 20;

impl Default for GenerateParams {
    fn default() -> Self {
        Self {
            max_tokens: 256,
            sampling: SamplingParams::default(),
            stop: Vec::new(),
            ignore_eos: false,
            prefill: PrefillStrategy::Dense,
            xattention: None,
            logprobs: None,
            response_format: None,
            speculative: None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    Eos,
    MaxTokens,
    Stop,
    ContextFull,
    Aborted,
}

impl StopReason {
    pub fn name(self) -> &'static str {
        match self {
            StopReason::Eos => "eos",
            StopReason::MaxTokens => "maxTokens",
            StopReason::Stop => "stop",
            StopReason::ContextFull => "contextFull",
            StopReason::Aborted => "aborted",
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct Timings {
    pub ttft_ms: f64,
    pub prefill_tokens_per_second: f64,
    pub decode_tokens_per_second: f64,
    pub prompt_tokens: usize,
    /// Prompt tokens whose keys and values came from the prefix cache instead of being computed.
    pub reused_prompt_tokens: usize,
    pub generated_tokens: usize,
    pub total_ms: f64,
}

#[derive(Clone, Debug)]
pub struct GenerationOutput {
    pub text: String,
    pub token_ids: Vec<u32>,
    pub stop_reason: StopReason,
    pub timings: Timings,
    /// What the prompt's prefill computed: tokens per layer, drops and revivals.
    pub prefill: PassReport,
    /// Earlier positions that decode steps computed from the aux cache (LazyLLM).
    pub decode_revived: usize,
    /// One entry per generated token when `GenerateParams::logprobs` asked for them.
    pub logprobs: Vec<TokenLogprobs>,
    /// A response format was given and the output ended before its grammar was complete (at `max_tokens`, the
    /// context's end, a stop string or an abort).
    pub incomplete: bool,
    /// With speculative decoding: drafts verified, drafts accepted, verification passes.
    pub speculative: Option<SpeculativeReport>,
    /// With ThinK: the blocks whose keys the end of this prefill pruned.
    pub think: ThinkReport,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SpeculativeReport {
    pub drafted: usize,
    pub accepted: usize,
    pub passes: usize,
}

/// One streamed step: the token generated and the text it completed (possibly empty while a multi-byte
/// character or a possible stop string is still pending).
pub struct Chunk<'a> {
    pub token_id: u32,
    pub text: &'a str,
    /// The token's log-probabilities when asked for; `None` on the final flush of held-back text.
    pub logprobs: Option<&'a TokenLogprobs>,
}

pub struct Session {
    model: Arc<Model>,
    pub(crate) cache: PagedKv,
    /// Tokens whose keys and values are in the cache, in order.
    pub(crate) tokens: Vec<u32>,
    /// Logits after the last token in the cache, so a generation may start without new prompt tokens.
    pub(crate) last_logits: Option<Vec<f32>>,
    /// Tokens of the conversation not in the cache, fed to the model at the start of the next call: the last
    /// generated token, or after a rewind whose sliding windows reach rows the cache gave back, every token from
    /// the last position it could keep.
    pub(crate) pending: Vec<u32>,
    /// Set once token pruning left some position without some layer's keys and values.
    pub(crate) pruned: Option<PrunedPositions>,
    /// A bound on the cache (StreamingLLM or SirLLM: `crate::bounded_cache`), if any.
    pub(crate) bounded: Option<BoundedCache>,
    /// With SirLLM: each cached token's score (surprisal, decayed at each eviction), one per `tokens` entry.
    pub(crate) scores: Vec<f32>,
    /// Tokens evicted from the cache so far (bounded caches).
    pub(crate) evicted: usize,
    /// ThinK key-channel pruning at the end of each prefill (`crate::think`), if set.
    pub(crate) think: Option<Think>,
    scratch: Scratch,
}

impl Session {
    pub fn new(model: Arc<Model>, context_size: usize) -> Result<Self> {
        let c = &model.config;
        if context_size == 0 || context_size > c.context_length {
            return Err(EngineError::InvalidOption(format!(
                "contextSize must be in [1, {}] for this model, got {context_size}",
                c.context_length
            )));
        }
        let cache = PagedKv::new(model.kv_pool.clone(), context_size);
        Ok(Self {
            model,
            cache,
            tokens: Vec::new(),
            last_logits: None,
            pending: Vec::new(),
            pruned: None,
            bounded: None,
            scores: Vec::new(),
            evicted: 0,
            think: None,
            scratch: Scratch::default(),
        })
    }

    /// Prunes key channels at the end of every later prefill (ThinK; `None`: never; sliding-window layers keep whole
    /// keys). Refused with llama.cpp's numerics and with a bounded cache.
    pub fn set_think(&mut self, think: Option<Think>) -> Result<()> {
        if let Some(t) = &think {
            t.validate()?;
            let why = if self.model.numerics != Numerics::Seedinfer {
                Some("numerics 'llamacpp' attends over whole keys only")
            } else if self.bounded.is_some() {
                Some("the session's KV cache is bounded (its compaction re-rotates whole keys)")
            } else {
                None
            };
            if let Some(why) = why {
                return Err(EngineError::InvalidOption(format!(
                    "ThinK key pruning is not available for this session: {why}"
                )));
            }
        }
        self.think = think;
        Ok(())
    }

    /// The session's ThinK settings, if any.
    pub fn think(&self) -> Option<&Think> {
        self.think.as_ref()
    }

    /// Bounds this session's cache (`None`: unbounded). Refused for a session with pruned positions, and on models
    /// with sliding-window layers.
    pub fn set_bounded_cache(&mut self, bound: Option<BoundedCache>) -> Result<()> {
        if let Some(b) = &bound {
            b.validate(self.context_size())?;
            let why = if self.pruned.is_some() {
                Some("its prompt was pruned")
            } else if self.think.is_some() || self.cache.has_pruned_keys() {
                Some("it prunes key channels (ThinK)")
            } else if self.model.config.sliding_window.is_some() {
                Some("the model has sliding-window layers")
            } else {
                None
            };
            if let Some(why) = why {
                return Err(EngineError::InvalidOption(format!(
                    "a bounded KV cache is not available for this session: {why}"
                )));
            }
        }
        self.bounded = bound;
        self.scores.clear();
        self.scores.resize(self.tokens.len(), 0.0);
        Ok(())
    }

    /// The session's cache bound, if any.
    pub fn bounded_cache(&self) -> Option<&BoundedCache> {
        self.bounded.as_ref()
    }

    /// Tokens a bounded cache has evicted so far.
    pub fn evicted_tokens(&self) -> usize {
        self.evicted
    }

    /// With a bounded cache: evicts what `room` more tokens need (and some more, see `crate::bounded_cache`).
    fn make_room(&mut self, room: usize) -> Result<()> {
        let Some(bound) = self.bounded else {
            return Ok(());
        };
        self.scores.resize(self.tokens.len(), 0.0);
        let Some(keep) = bound.keep(self.cache.len(), room, &self.scores) else {
            return Ok(());
        };
        let model = Arc::clone(&self.model);
        let (cache, rope) = (&mut self.cache, &mut self.scratch.ops.rope);
        model.install(|| compact(&model.config, cache, &keep, rope))?;
        self.evicted += self.tokens.len() - keep.len();
        self.tokens = keep.iter().map(|&p| self.tokens[p]).collect();
        let decay = bound.sirllm.map_or(1.0, |s| s.decay as f32);
        self.scores = keep.iter().map(|&p| self.scores[p] * decay).collect();
        Ok(())
    }

    /// Whether the session scores its tokens (a SirLLM bound).
    fn scores_tokens(&self) -> bool {
        self.bounded.is_some_and(|b| b.sirllm.is_some())
    }

    /// SirLLM: the score of `token` fed after `logits` (the logits after the token before it; empty when there
    /// are none), `None` without SirLLM or logits.
    fn surprisal(&self, logits: &[f32], token: u32) -> Option<f32> {
        (self.scores_tokens() && !logits.is_empty()).then(|| token_nll(logits, token) as f32)
    }

    /// SirLLM: records the scores of `tokens`, just appended to the cache: each one's surprisal under the logits
    /// before it (`first` for the first, if known; the rows of `after`, logits after each token, for the others).
    /// A first token without logits before it (the start of a session) gets the largest score of the others.
    fn score_fed(&mut self, tokens: &[u32], first: Option<f32>, after: &[f32]) {
        if !self.scores_tokens() {
            return;
        }
        let vocab_size = self.model.config.vocab_size;
        if tokens.is_empty() {
            return;
        }
        self.scores.resize(self.tokens.len() - tokens.len(), 0.0);
        let start = self.scores.len();
        self.scores.push(first.unwrap_or(0.0));
        for (row, &t) in after.chunks_exact(vocab_size).zip(&tokens[1..]) {
            self.scores.push(token_nll(row, t) as f32);
        }
        if first.is_none() {
            let max = self.scores[start + 1..]
                .iter()
                .fold(0.0f32, |m, &s| m.max(s));
            self.scores[start] = max;
        }
        self.scores.resize(self.tokens.len(), 0.0);
    }

    /// Tokens of the conversation so far, including the last generated one.
    pub fn token_count(&self) -> usize {
        self.tokens.len() + self.pending.len()
    }

    /// Tokens whose keys and values are in the cache (the others are pending: fed on the next call).
    pub fn cached_token_count(&self) -> usize {
        self.tokens.len()
    }

    pub fn context_size(&self) -> usize {
        self.cache.capacity()
    }

    pub fn reset(&mut self) {
        self.truncate_cache(0);
        self.tokens.clear();
        self.last_logits = None;
        self.pending.clear();
    }

    /// Bytes of the KV blocks this session holds (blocks shared with other sessions included).
    pub fn kv_held_bytes(&self) -> usize {
        self.cache.held_bytes()
    }

    pub fn model(&self) -> &Arc<Model> {
        &self.model
    }

    /// All tokens of the conversation: the cached ones and the pending ones.
    pub fn all_tokens(&self) -> Vec<u32> {
        self.tokens.iter().chain(&self.pending).copied().collect()
    }

    /// A second session continuing from this one's state. The KV blocks are shared, not copied; a block is copied
    /// only when one of the two writes into it (the last, partly filled block).
    pub fn fork(&self) -> Session {
        Session {
            model: Arc::clone(&self.model),
            cache: self.cache.clone(),
            tokens: self.tokens.clone(),
            last_logits: self.last_logits.clone(),
            pending: self.pending.clone(),
            pruned: self.pruned.clone(),
            bounded: self.bounded,
            scores: self.scores.clone(),
            evicted: self.evicted,
            think: self.think,
            scratch: Scratch::default(),
        }
    }

    /// Drops the last `n` tokens of the conversation, as if they had never been fed or generated.
    pub fn rewind(&mut self, n: usize) -> Result<()> {
        let count = self.token_count();
        if n > count {
            return Err(EngineError::InvalidOption(format!(
                "cannot rewind {n} tokens: the session holds {count}"
            )));
        }
        if n == 0 {
            return Ok(());
        }
        let mut all = self.all_tokens();
        all.truncate(count - n);
        if all.is_empty() {
            self.reset();
            return Ok(());
        }
        // The new last token is fed again on the next call, which recomputes its logits exactly. The cache may keep
        // less (sliding windows reaching rows it gave back): the rest is fed again too.
        self.truncate_cache(all.len() - 1);
        self.pending = all.split_off(self.cache.len());
        self.tokens = all;
        self.last_logits = None;
        Ok(())
    }

    /// Logits after the last cached token (after a generation, those the last generated token was chosen from).
    pub fn last_logits(&self) -> Option<&[f32]> {
        self.last_logits.as_deref()
    }

    /// Token pruning's view of the cache, if it left holes in it.
    pub fn pruned_positions(&self) -> Option<&PrunedPositions> {
        self.pruned.as_ref()
    }

    /// Forgets cached positions from `len` on (and token pruning's record of them).
    fn truncate_cache(&mut self, len: usize) {
        self.cache.truncate(len);
        self.scores.truncate(len);
        if let Some(pruned) = &mut self.pruned {
            pruned.truncate(self.cache.len());
            if !pruned.has_holes() {
                self.pruned = None;
            }
        }
    }

    /// Runs `tokens` through the model in chunks, calling `after_chunk` with each chunk's logits, and keeps the
    /// logits after the last token in `last_logits`. With `reuse`, leading tokens whose blocks the prefix cache
    /// holds are adopted instead of computed. Returns whether it completed (false when `abort` stopped it between
    /// chunks), how many tokens were reused and what was computed. `tokens` begin with the pending tokens, if any,
    /// which stop being pending as they are fed.
    ///
    /// A pruning `strategy`, or a cache that pruning already left holes in, runs all tokens in one layer-by-layer
    /// pass instead ([`forward_pruned`]); `decode` says whether it is a decode step.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn run_chunks(
        &mut self,
        tokens: &[u32],
        abort: &AtomicBool,
        logits_for: LogitsFor,
        reuse: bool,
        strategy: &PrefillStrategy,
        decode: bool,
        after_chunk: &mut dyn FnMut(&[f32]),
    ) -> Result<(bool, usize, PassReport)> {
        let model = Arc::clone(&self.model);
        let vocab_size = model.config.vocab_size;
        let start = self.tokens.len();
        // A bounded cache re-rotates what it keeps: its blocks are never shared through the prefix cache.
        let reused = if reuse && self.cache.len() == start && self.bounded.is_none() {
            self.cache.adopt_prefix(tokens)
        } else {
            0
        };
        self.tokens.extend_from_slice(&tokens[..reused]);
        self.pending.drain(..reused.min(self.pending.len()));
        let tokens = &tokens[reused..];
        // A bounded cache reserves chunk by chunk, after making room.
        let upfront = if self.bounded.is_some() {
            0
        } else {
            tokens.len()
        };
        if let Err(e) = self.cache.reserve(self.cache.len() + upfront) {
            self.cache.truncate(start);
            self.tokens.truncate(start);
            return Err(e);
        }
        // Generation reads the last position's logits straight from this buffer, so no copy is made for it.
        let mut logits = self.last_logits.take().unwrap_or_default();
        let layers = model.config.layers;
        if (self.pruned.is_some() || *strategy != PrefillStrategy::Dense) && !tokens.is_empty() {
            let len = self.cache.len();
            let pruned = self
                .pruned
                .get_or_insert_with(|| PrunedPositions::new(len, layers));
            let (cache, scratch) = (&mut self.cache, &mut self.scratch);
            let outcome = model.install(|| {
                forward_pruned(
                    &model.config,
                    &model.weights,
                    tokens,
                    cache,
                    pruned,
                    strategy,
                    decode,
                    scratch,
                    &mut logits,
                    logits_for,
                    abort,
                )
            });
            if !pruned.has_holes() {
                self.pruned = None;
            }
            let report = match outcome {
                Ok(Some(report)) => report,
                failed => {
                    // The pass forgot the new positions: the cache again ends where `self.tokens` does.
                    if !logits.is_empty() {
                        self.last_logits = Some(logits);
                    }
                    return failed.map(|_| (false, reused, PassReport::default()));
                }
            };
            self.tokens.extend_from_slice(tokens);
            self.pending.clear();
            after_chunk(&logits);
            logits.drain(..logits.len() - vocab_size);
            self.last_logits = Some(logits);
            return Ok((true, reused, report));
        }
        let mut completed = true;
        let mut report = PassReport {
            layer_tokens: vec![0; layers],
            ..Default::default()
        };
        // A prompt (logits of its last position only) fed while other sessions decode goes through the batcher in
        // small chunks, so the running streams keep their pace (`crate::batcher`); otherwise it runs alone.
        // (Not a prefill with XAttention: a batched pass would run with another session's scratch, dense.)
        // (Nor one whose queries ThinK records.)
        let may_share = model.numerics == Numerics::Seedinfer
            && logits_for == LogitsFor::Last
            && self.scratch.ops.xattention.active.is_none()
            && !self.scratch.ops.think.recording();
        // SirLLM scores every token by the logits before it.
        let scoring = self.scores_tokens();
        let pass_logits = if scoring { LogitsFor::All } else { logits_for };
        let mut fed = 0;
        while fed < tokens.len() {
            if abort.load(Ordering::Relaxed) {
                completed = false;
                break;
            }
            let shared = may_share && !scoring && model.batcher.others_decoding();
            let size = if shared {
                model.batcher.prefill_chunk()
            } else if pass_logits == LogitsFor::All {
                model.logits_chunk(PREFILL_CHUNK)
            } else {
                model.prefill_chunk(PREFILL_CHUNK)
            };
            let size = self.bounded.map_or(size, |b| size.min(b.max_chunk()));
            let chunk = &tokens[fed..(fed + size).min(tokens.len())];
            if self.bounded.is_some() {
                let room = self
                    .make_room(chunk.len())
                    .and_then(|()| self.cache.reserve(self.cache.len() + chunk.len()));
                if let Err(e) = room {
                    // The chunks fed so far stay, with the logits after them.
                    if !logits.is_empty() {
                        self.last_logits = Some(logits);
                    }
                    return Err(e);
                }
                if fed + chunk.len() == tokens.len() {
                    // An eviction moved the prompt's last token: XAttention's last block follows it.
                    let last = self.cache.len() + chunk.len() - 1;
                    self.scratch.ops.xattention.last_position = last;
                }
            }
            let first = self.surprisal(&logits, chunk[0]);
            let (cache, scratch) = (&mut self.cache, &mut self.scratch);
            if shared {
                if !model
                    .batcher
                    .step(&model, false, false, chunk, cache, scratch, &mut logits)
                {
                    self.cache.truncate(self.tokens.len());
                    return Err(EngineError::Internal(
                        "a batched prefill step panicked".into(),
                    ));
                }
            } else {
                model.install(|| model.forward(chunk, cache, scratch, &mut logits, pass_logits));
            }
            fed += chunk.len();
            self.tokens.extend_from_slice(chunk);
            self.pending.drain(..chunk.len().min(self.pending.len()));
            report
                .layer_tokens
                .iter_mut()
                .for_each(|t| *t += chunk.len());
            self.settle_cache();
            self.score_fed(chunk, first, &logits);
            match (pass_logits, logits_for) {
                (LogitsFor::All, LogitsFor::Last) => {
                    after_chunk(&logits[logits.len() - vocab_size..])
                }
                _ => after_chunk(&logits),
            }
            logits.drain(..logits.len() - vocab_size);
        }
        // Blocks reserved for tokens an abort left unfed go back to the pool.
        self.cache.truncate(self.cache.len());
        // Only the last position's logits stay: the chunks' buffer goes back to the allocator.
        logits.shrink_to_fit();
        if !logits.is_empty() {
            self.last_logits = Some(logits);
        }
        Ok((completed, reused, report))
    }

    /// Checks `tokens` against the vocabulary and the context (keeping `reserve` positions free), then returns
    /// what must be fed: the pending tokens, if any, followed by `tokens`. A token stays pending
    /// until [`Session::run_chunks`] feeds it, so a call that fails or is aborted first leaves it in place.
    pub(crate) fn feed(&self, tokens: &[u32], reserve: usize) -> Result<Vec<u32>> {
        let vocab_size = self.model.config.vocab_size;
        if let Some(&id) = tokens.iter().find(|&&id| id as usize >= vocab_size) {
            return Err(EngineError::InvalidTokenId { id, vocab_size });
        }
        if self.bounded.is_none()
            && self.token_count() + tokens.len() + reserve > self.context_size()
        {
            return Err(EngineError::ContextOverflow {
                prompt: tokens.len(),
                used: self.token_count(),
                context: self.context_size(),
            });
        }
        Ok(self.pending.iter().chain(tokens).copied().collect())
    }

    /// Records `tokens`, just computed into the cache by a batched pass, and the logits after the last of them.
    fn fed(&mut self, tokens: &[u32], logits: Vec<f32>) {
        self.tokens.extend_from_slice(tokens);
        self.pending.clear();
        self.settle_cache();
        self.last_logits = Some(logits);
    }

    /// After new positions are committed (by a dense pass): offers the full blocks to the prefix cache, then gives
    /// back the sliding-window rows no later query needs.
    fn settle_cache(&mut self) {
        // Blocks of a bounded cache are re-rotated, and ThinK prunes its blocks' keys (in place when it holds them
        // alone): neither is offered for reuse.
        if self.bounded.is_none() && self.think.is_none() {
            self.cache.offer_full_blocks(&self.tokens);
        }
        if self.pruned.is_none() {
            self.cache.release_out_of_window();
        }
    }

    /// Forgets the drafts in the cache past the last accepted position.
    fn drop_drafts(&mut self, drafts: &mut VerifiedDrafts) {
        if drafts.len() > 0 {
            let keep = self.tokens.len() - drafts.len();
            self.truncate_cache(keep);
            self.tokens.truncate(keep);
            drafts.clear();
        }
    }

    /// The drafts `drafter` proposes after `token`: at most `budget`, `left - 1` (the tokens still to generate
    /// after it) and what the context holds.
    fn propose(
        &self,
        drafter: &mut Drafter,
        token: u32,
        budget: usize,
        left: usize,
    ) -> Vec<(u32, Distribution)> {
        let room = self.context_size().saturating_sub(self.tokens.len() + 1);
        let count = budget.min(room).min(left.saturating_sub(1));
        if count == 0 {
            return Vec::new();
        }
        let mut history = Vec::with_capacity(self.tokens.len() + 1);
        history.extend_from_slice(&self.tokens);
        history.push(token);
        drafter.propose(&history, count)
    }

    /// Feeds `token` and `proposal` in one pass, queueing each draft with the logits after it; `last_logits`
    /// are those after `token`. `batched`: the pass is a decode step of the model's batcher, shared with the other
    /// sessions decoding at the time.
    fn verify(
        &mut self,
        token: u32,
        proposal: Vec<(u32, Distribution)>,
        drafts: &mut VerifiedDrafts,
        batched: bool,
    ) -> Result<()> {
        let mut fed = Vec::with_capacity(proposal.len() + 1);
        fed.push(token);
        fed.extend(proposal.iter().map(|(t, _)| *t));
        let vocab_size = self.model.config.vocab_size;
        let mut rows: Vec<Vec<f32>> = Vec::with_capacity(fed.len());
        if batched {
            let logits = self.step_batched(&fed, true)?;
            rows.extend(logits.chunks(vocab_size).map(<[f32]>::to_vec));
            self.fed(&fed, Vec::new());
        } else {
            self.run_chunks(
                &fed,
                &AtomicBool::new(false),
                LogitsFor::All,
                false,
                &PrefillStrategy::Dense,
                true,
                &mut |logits: &[f32]| rows.extend(logits.chunks(vocab_size).map(<[f32]>::to_vec)),
            )?;
        }
        let mut rows = rows.into_iter();
        self.last_logits = rows.next();
        drafts.verified(proposal, rows);
        Ok(())
    }

    /// Feeds one generated token through the model's batcher: in one forward pass with the decode steps of the
    /// other sessions generating at the same time.
    fn decode_batched(&mut self, token: u32) -> Result<()> {
        let first = self.surprisal(self.last_logits.as_deref().unwrap_or_default(), token);
        let logits = self.step_batched(&[token], false)?;
        self.fed(&[token], logits);
        self.score_fed(&[token], first, &[]);
        Ok(())
    }

    /// Runs `tokens` (a generated token, and any drafts after it) as this session's decode step in the model's
    /// batcher and returns the logits after the last of them, or after each with `all_logits`; the caller records
    /// the tokens ([`Session::fed`]).
    fn step_batched(&mut self, tokens: &[u32], all_logits: bool) -> Result<Vec<f32>> {
        let model = Arc::clone(&self.model);
        self.cache.reserve(self.cache.len() + tokens.len())?;
        let mut logits = self.last_logits.take().unwrap_or_default();
        if !model.batcher.step(
            &model,
            true,
            all_logits,
            tokens,
            &mut self.cache,
            &mut self.scratch,
            &mut logits,
        ) {
            let len = self.cache.len();
            self.cache.truncate(len);
            return Err(EngineError::Internal(
                "a batched decode step panicked".into(),
            ));
        }
        Ok(logits)
    }

    /// Appends `tokens[i]` (at least one token each, after any pending generated token) to `sessions[i]`, all in
    /// one forward pass: the weights are read once for every session's rows, attention runs per session over its
    /// own cache. Afterwards each session's [`Session::last_logits`] are the logits after its last token, the bits
    /// it gets when fed alone. The step of continuous batching: decoding sessions contribute one token, sessions
    /// in prefill a chunk. Every session must belong to the same model, with seedinfer's numerics and no token
    /// pruning in its cache; on any error no session changes.
    pub fn feed_together(sessions: &mut [&mut Session], tokens: &[&[u32]]) -> Result<()> {
        let Some(first) = sessions.first() else {
            return Ok(());
        };
        let model = Arc::clone(&first.model);
        if tokens.len() != sessions.len() {
            return Err(EngineError::InvalidOption(format!(
                "feed_together: {} token lists for {} sessions",
                tokens.len(),
                sessions.len()
            )));
        }
        if model.numerics != Numerics::Seedinfer {
            return Err(EngineError::InvalidOption(
                "sessions batch together only with numerics 'seedinfer' (llama.cpp's arithmetic depends on the batch)"
                    .into(),
            ));
        }
        let mut to_feed = Vec::with_capacity(sessions.len());
        for (session, tokens) in sessions.iter().zip(tokens) {
            if !Arc::ptr_eq(&session.model, &model) {
                return Err(EngineError::InvalidOption(
                    "sessions batch together only when they belong to one model".into(),
                ));
            }
            if session.pruned.is_some() || session.bounded.is_some() {
                return Err(EngineError::InvalidOption(
                    "a session whose cache token pruning left holes in, or whose cache is bounded, runs alone".into(),
                ));
            }
            let feed = session.feed(tokens, 0)?;
            if feed.is_empty() {
                return Err(EngineError::InvalidOption(
                    "feed_together: every session needs at least one token".into(),
                ));
            }
            to_feed.push(feed);
        }
        for i in 0..sessions.len() {
            let s = &mut sessions[i];
            if let Err(e) = s.cache.reserve(s.cache.len() + to_feed[i].len()) {
                for s in sessions[..=i].iter_mut() {
                    let len = s.cache.len();
                    s.cache.truncate(len);
                }
                return Err(e);
            }
        }
        let mut scratch = std::mem::take(&mut sessions[0].scratch);
        let mut logits = Vec::new();
        {
            let mut sequences: Vec<(&[u32], &mut PagedKv)> = sessions
                .iter_mut()
                .zip(&to_feed)
                .map(|(s, t)| (t.as_slice(), &mut s.cache))
                .collect();
            model.install(|| {
                crate::forward::forward_sequences::<SeedinferOps, PagedKv>(
                    &model.config,
                    &model.weights,
                    &mut sequences,
                    &[],
                    &mut scratch,
                    &mut logits,
                )
            });
        }
        sessions[0].scratch = scratch;
        let vocab_size = model.config.vocab_size;
        for ((s, fed), row) in sessions
            .iter_mut()
            .zip(to_feed)
            .zip(logits.chunks(vocab_size))
        {
            s.fed(&fed, row.to_vec());
        }
        Ok(())
    }

    /// Teacher forcing: appends `tokens` and returns the most likely next token after each of them. `abort`
    /// stops it between chunks with `Aborted`; the positions computed until then stay in the session.
    pub fn predict_next(&mut self, tokens: &[u32], abort: &AtomicBool) -> Result<Vec<u32>> {
        let to_feed = self.feed(tokens, 0)?;
        let mut predictions = Vec::with_capacity(to_feed.len());
        self.teacher_forced(
            &to_feed,
            tokens.len(),
            abort,
            "the prediction",
            &mut |_, logits| predictions.push(crate::sampler::argmax(logits)),
        )?;
        let skip = to_feed.len() - tokens.len();
        Ok(predictions.split_off(skip))
    }

    /// Teacher forcing: appends `tokens` and returns the negative log-likelihood (nats) of each given everything
    /// before it in the session; a first token with nothing before it gets NaN. With a bounded cache, "everything
    /// before it" is what the cache kept. `abort` stops it between chunks with `Aborted`; the positions computed
    /// until then stay in the session.
    pub fn score_tokens(&mut self, tokens: &[u32], abort: &AtomicBool) -> Result<Vec<f64>> {
        let to_feed = self.feed(tokens, 0)?;
        let Some(&first) = to_feed.first() else {
            return Ok(Vec::new());
        };
        let mut nll = Vec::with_capacity(to_feed.len());
        nll.push(
            self.last_logits
                .as_deref()
                .map_or(f64::NAN, |l| token_nll(l, first)),
        );
        self.teacher_forced(
            &to_feed,
            tokens.len(),
            abort,
            "scoring",
            &mut |i, logits| {
                if let Some(&next) = to_feed.get(i + 1) {
                    nll.push(token_nll(logits, next));
                }
            },
        )?;
        let skip = to_feed.len() - tokens.len();
        Ok(nll.split_off(skip))
    }

    /// Feeds `to_feed` (pending tokens, then `asked` new ones) with logits for every position, calling
    /// `row(i, logits)` with the logits after `to_feed[i]`. `Aborted`, naming `what`, when `abort` stopped it between
    /// chunks; the positions computed until then stay in the session, as after an aborted generation.
    fn teacher_forced(
        &mut self,
        to_feed: &[u32],
        asked: usize,
        abort: &AtomicBool,
        what: &str,
        row: &mut dyn FnMut(usize, &[f32]),
    ) -> Result<()> {
        let vocab_size = self.model.config.vocab_size;
        let mut done = 0;
        let (completed, _, _) = self.run_chunks(
            to_feed,
            abort,
            LogitsFor::All,
            false,
            &PrefillStrategy::Dense,
            false,
            &mut |logits: &[f32]| {
                for logits in logits.chunks(vocab_size) {
                    row(done, logits);
                    done += 1;
                }
            },
        )?;
        if !completed {
            let skip = to_feed.len() - asked;
            return Err(EngineError::Aborted(format!(
                "{what} was aborted after {} of {asked} positions",
                done.saturating_sub(skip)
            )));
        }
        Ok(())
    }

    /// Appends `prompt` to the session and generates, calling `on_chunk` for every token.
    pub fn generate(
        &mut self,
        prompt: &[u32],
        params: &GenerateParams,
        abort: &AtomicBool,
        on_chunk: &mut dyn FnMut(Chunk<'_>),
    ) -> Result<GenerationOutput> {
        let started = Instant::now();
        params.sampling.validate()?;
        params.prefill.validate(self.model.config.layers)?;
        if let Some(x) = &params.xattention {
            x.validate(self.cache.block_size())?;
        }
        let sparse = params.prefill != PrefillStrategy::Dense || params.xattention.is_some();
        if sparse && self.model.numerics != Numerics::Seedinfer {
            return Err(EngineError::InvalidOption(
                "token pruning and sparse prefill are not available with numerics 'llamacpp'"
                    .into(),
            ));
        }
        if params.prefill != PrefillStrategy::Dense && self.model.config.sliding_window.is_some() {
            // Their scores and gathered attention do not follow the window, and the cache gives back rows outside
            // it that a pruned layer would read. (XAttention is fine: its sliding-window layers stay dense.)
            return Err(EngineError::InvalidOption(
                "token pruning is not available yet on models with sliding-window layers".into(),
            ));
        }
        if params.logprobs.is_some_and(|k| k > MAX_TOP_LOGPROBS) {
            return Err(EngineError::InvalidOption(format!(
                "topLogprobs must be at most {MAX_TOP_LOGPROBS}"
            )));
        }
        if params.stop.iter().any(|s| s.is_empty()) {
            return Err(EngineError::InvalidOption(
                "stop strings must not be empty".into(),
            ));
        }
        if params.response_format.is_some() && params.ignore_eos {
            return Err(EngineError::InvalidOption(
                "ignoreEos cannot be combined with responseFormat: the grammar decides where the output ends"
                    .into(),
            ));
        }
        if self.think.is_some() && sparse {
            return Err(EngineError::InvalidOption(
                "token pruning and sparse prefill are not available yet with ThinK key pruning"
                    .into(),
            ));
        }
        if self.bounded.is_some() && params.prefill != PrefillStrategy::Dense {
            return Err(EngineError::InvalidOption(
                "token pruning is not available with a bounded KV cache".into(),
            ));
        }
        if let Some(spec) = &params.speculative {
            spec.validate()?;
            let why = if self.bounded.is_some() {
                Some("the session's KV cache is bounded")
            } else if params.prefill != PrefillStrategy::Dense {
                Some("it needs the dense prefill")
            } else if self.model.numerics != Numerics::Seedinfer {
                Some("llama.cpp's arithmetic depends on the batch, so drafts would change the output")
            } else {
                None
            };
            if let Some(why) = why {
                return Err(EngineError::InvalidOption(format!(
                    "speculative decoding is not available here: {why}"
                )));
            }
        }
        if prompt.is_empty() && self.token_count() == 0 {
            return Err(EngineError::InvalidOption(
                "the prompt is empty and the session holds no tokens".into(),
            ));
        }
        // Room for the prompt and at least one generated token.
        let to_feed = self.feed(prompt, 1)?;
        let model = Arc::clone(&self.model);
        let mut drafter = params
            .speculative
            .as_ref()
            .map(|spec| Drafter::new(spec, &model, self.context_size(), &params.sampling))
            .transpose()?;
        // Compiled before the prompt runs (a bad schema fails first); its first mask is computed during the prefill.
        let mut constraint: Option<TokenConstraint> = params
            .response_format
            .as_ref()
            .map(|f| {
                model
                    .grammars
                    .start(f, &model.tokenizer, model.config.vocab_size)
            })
            .transpose()?;
        let eos = model.tokenizer.eos_token_ids();
        let mut sampler = Sampler::new(params.sampling.clone());
        let mut decoder = StreamDecoder::new(true);
        let mut out = GenerationOutput {
            text: String::new(),
            token_ids: Vec::new(),
            stop_reason: StopReason::MaxTokens,
            timings: Timings {
                prompt_tokens: prompt.len(),
                ..Default::default()
            },
            prefill: PassReport::default(),
            decode_revived: 0,
            logprobs: Vec::new(),
            incomplete: false,
            speculative: None,
            think: ThinkReport::default(),
        };
        let mut emitted = 0usize;
        let longest_stop = params.stop.iter().map(|s| s.len()).max().unwrap_or(0);

        let prefill_started = Instant::now();
        let last_position = self.tokens.len() + to_feed.len() - 1;
        self.scratch
            .ops
            .xattention
            .start(params.xattention, last_position);
        self.scratch.ops.think.start(self.think.map(|t| t.recent));
        let prefilled = self.run_chunks(
            &to_feed,
            abort,
            LogitsFor::Last,
            true,
            &params.prefill,
            false,
            &mut |_| {},
        );
        let (selected_blocks, causal_blocks) = self.scratch.ops.xattention.finish();
        let queries = self.scratch.ops.think.finish();
        let (completed, reused, prefill) = prefilled?;
        if let (Some(think), true) = (self.think, completed) {
            out.think = crate::think::prune(&model.config, &think, &mut self.cache, &queries)?;
        }
        out.timings.reused_prompt_tokens = reused;
        out.prefill = PassReport {
            selected_blocks,
            causal_blocks,
            ..prefill
        };
        // Decode steps select tokens again only under LazyLLM; otherwise they attend over what the prompt left.
        let decode_strategy = match &params.prefill {
            PrefillStrategy::LazyLlm {
                reselect_in_decode: true,
                ..
            } => params.prefill.clone(),
            _ => PrefillStrategy::Dense,
        };
        if !completed {
            out.stop_reason = StopReason::Aborted;
            return Ok(out);
        }
        let prefill_seconds = prefill_started.elapsed().as_secs_f64();
        let mut decode_started = Instant::now();
        // Plain decode steps join those of other sessions generating on this model (`crate::batcher`).
        let batched =
            model.numerics == Numerics::Seedinfer && decode_strategy == PrefillStrategy::Dense;
        let _generating = batched.then(|| model.batcher.generating());
        let mut drafts = VerifiedDrafts::default();
        // Every exit, an error included, leaves no unaccepted draft in the cache (see the `drop_drafts` after it).
        let decoded: Result<()> = 'decode: {
            while out.token_ids.len() < params.max_tokens {
                if abort.load(Ordering::Relaxed) {
                    out.stop_reason = StopReason::Aborted;
                    break;
                }
                if out.token_ids.is_empty() {
                    decode_started = Instant::now();
                } else {
                    // The previous token is not yet in the cache: run it to get the next logits.
                    let previous = out.token_ids[out.token_ids.len() - 1];
                    if self.bounded.is_some() {
                        if let Err(e) = self.make_room(1) {
                            self.pending = vec![previous];
                            break 'decode Err(e);
                        }
                    } else if self.tokens.len() - drafts.len() >= self.context_size() {
                        out.stop_reason = StopReason::ContextFull;
                        break;
                    }
                    let accepted = drafts.accept(previous);
                    if accepted.is_none() {
                        self.drop_drafts(&mut drafts);
                    }
                    let proposal = match (&accepted, &params.speculative, drafter.as_mut()) {
                        (None, Some(spec), Some(drafter)) => {
                            let budget = drafts.budget(spec.max_draft);
                            self.propose(
                                drafter,
                                previous,
                                budget,
                                params.max_tokens - out.token_ids.len(),
                            )
                        }
                        _ => Vec::new(),
                    };
                    let step = if let Some(logits) = accepted {
                        // A verified draft: in the cache already, with the logits after it.
                        self.last_logits = Some(logits);
                        Ok(0)
                    } else if !proposal.is_empty() {
                        self.verify(
                            previous,
                            proposal,
                            &mut drafts,
                            batched && self.pruned.is_none(),
                        )
                        .map(|()| 0)
                    } else if batched && self.pruned.is_none() {
                        self.decode_batched(previous).map(|()| 0)
                    } else {
                        self.run_chunks(
                            &[previous],
                            &AtomicBool::new(false),
                            LogitsFor::Last,
                            false,
                            &decode_strategy,
                            true,
                            &mut |_| {},
                        )
                        .map(|(_, _, step)| step.revived)
                    };
                    match step {
                        Ok(revived) => out.decode_revived += revived,
                        Err(e) => {
                            // The session keeps what was generated; the unfed last token stays pending.
                            self.pending = vec![previous];
                            break 'decode Err(e);
                        }
                    }
                }
                let Some(logits) = self.last_logits.as_ref() else {
                    break 'decode Err(EngineError::Internal("no logits".into()));
                };
                // Every token generated so far is in the cache here: a failure leaves nothing pending.
                let allowed = match constraint
                    .as_mut()
                    .map(TokenConstraint::allowed)
                    .transpose()
                {
                    Ok(allowed) => allowed,
                    Err(e) => break 'decode Err(e),
                };
                // The history the sampler sees ends at the position these logits follow (drafts after it do not count).
                let history = &self.tokens[..self.tokens.len() - drafts.len()];
                let token = match drafts.next() {
                    // A verified draft at this position: kept or replaced by the rule of speculative sampling.
                    Some((draft, q)) => {
                        let p = sampler.distribution(logits, history, allowed);
                        sampler.draw_speculative(&p, draft, q)
                    }
                    None => sampler.sample_allowed(logits, history, allowed),
                };
                if let Some(Err(e)) = constraint.as_mut().map(|c| c.advance(token)) {
                    break 'decode Err(e);
                }
                if let Some(top) = params.logprobs {
                    out.logprobs.push(TokenLogprobs::of(logits, token, top));
                }
                out.token_ids.push(token);
                if out.token_ids.len() == 1 {
                    out.timings.ttft_ms = started.elapsed().as_secs_f64() * 1e3;
                }
                let is_eos = !params.ignore_eos && eos.contains(&token);
                match decoder.push(&model.tokenizer, token) {
                    Ok(text) => out.text.push_str(&text),
                    Err(e) => break 'decode Err(e.into()),
                }
                // A stop string ends the text where it begins; text that could still become one is held back.
                let search_from =
                    floor_char_boundary(&out.text, emitted.saturating_sub(longest_stop));
                let stop_at = params
                    .stop
                    .iter()
                    .filter_map(|s| {
                        out.text[search_from..]
                            .find(s.as_str())
                            .map(|i| search_from + i)
                    })
                    .min();
                let visible_end = match stop_at {
                    Some(at) => at,
                    None if is_eos => out.text.len(),
                    None => out.text.len() - pending_stop_prefix(&out.text, &params.stop),
                };
                let fresh = &out.text[emitted.min(visible_end)..visible_end];
                on_chunk(Chunk {
                    token_id: token,
                    text: fresh,
                    logprobs: out.logprobs.last(),
                });
                emitted = emitted.max(visible_end);
                if let Some(at) = stop_at {
                    out.text.truncate(at);
                    out.stop_reason = StopReason::Stop;
                    break;
                }
                if is_eos {
                    out.stop_reason = StopReason::Eos;
                    break;
                }
                match constraint.as_mut().map(TokenConstraint::finished) {
                    Some(Err(e)) => {
                        // The session keeps what was generated: the last token, not yet in the cache, stays pending.
                        self.pending = vec![token];
                        break 'decode Err(e);
                    }
                    Some(Ok(true)) => {
                        // The grammar is complete and only the end may follow: as if the model drew its end token.
                        out.stop_reason = StopReason::Eos;
                        break;
                    }
                    _ => {}
                }
            }
            Ok(())
        };
        self.drop_drafts(&mut drafts);
        decoded?;
        if params.speculative.is_some() {
            out.speculative = Some(SpeculativeReport {
                drafted: drafts.drafted,
                accepted: drafts.accepted,
                passes: drafts.passes,
            });
        }
        if let Some(&last) = out.token_ids.last() {
            self.pending = vec![last];
        }
        if out.stop_reason == StopReason::MaxTokens || out.stop_reason == StopReason::ContextFull {
            let tail = decoder.finish(&model.tokenizer)?;
            out.text.push_str(&tail);
            if emitted < out.text.len() {
                let last = out.token_ids.last().copied().unwrap_or(0);
                on_chunk(Chunk {
                    token_id: last,
                    text: &out.text[emitted..],
                    logprobs: None,
                });
            }
        }
        if let Some(c) = constraint.as_mut() {
            out.incomplete = match out.stop_reason {
                StopReason::Eos => false,
                // The text was cut where the stop string began.
                StopReason::Stop => true,
                _ => !c.accepting().unwrap_or(false),
            };
        }
        let decode_seconds = decode_started.elapsed().as_secs_f64();
        out.timings.generated_tokens = out.token_ids.len();
        out.timings.prefill_tokens_per_second = if prefill_seconds > 0.0 {
            prompt.len() as f64 / prefill_seconds
        } else {
            0.0
        };
        out.timings.decode_tokens_per_second = if out.token_ids.len() > 1 && decode_seconds > 0.0 {
            (out.token_ids.len() - 1) as f64 / decode_seconds
        } else {
            0.0
        };
        out.timings.total_ms = started.elapsed().as_secs_f64() * 1e3;
        Ok(out)
    }
}

/// Bytes at the end of `text` that begin some stop string and so must not be shown yet.
fn pending_stop_prefix(text: &str, stops: &[String]) -> usize {
    let mut longest = 0;
    for stop in stops {
        for len in (1..stop.len()).rev() {
            if len <= longest || len > text.len() {
                continue;
            }
            let start = text.len() - len;
            if text.is_char_boundary(start)
                && stop.as_bytes().starts_with(&text.as_bytes()[start..])
            {
                longest = len;
                break;
            }
        }
    }
    longest
}

fn floor_char_boundary(text: &str, mut index: usize) -> usize {
    while index > 0 && !text.is_char_boundary(index) {
        index -= 1;
    }
    index
}
