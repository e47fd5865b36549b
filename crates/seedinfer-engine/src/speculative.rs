//! Exact speculative decoding (METHODS.md, "Speculative decoding (exact)").
//!
//! Drafts come from prompt lookup (after each generated token, the last `n` tokens, n = `ngram_max` down to 1,
//! are looked up earlier in the prompt and output, and the tokens that followed the most recent match are
//! proposed), from a draft model sharing the vocabulary, or from the model itself truncated to its first layers
//! (a self-draft: those layers, the final norm and the output head). One forward pass over [token + drafts] gives
//! the logits after each of them; the sampler then runs position by position as it would have, the draft's
//! token kept by the rule of speculative sampling ([`crate::sampler::Sampler::draw_speculative`]): while it is
//! kept, that draft's logits are already computed and the step costs nothing; at the first rejection the remaining
//! drafts leave the cache. Greedy output is the plain decoding's token for token (a pass over several tokens gives
//! each row the bits of a one-token pass); sampled output follows the plain decoding's distribution, and with
//! prompt-lookup drafts it is the plain decoding's token for token for a seed.

use crate::error::{EngineError, Result};
use crate::forward::{forward_first_layers, LogitsFor, Scratch};
use crate::kv_cache::{ContiguousKv, KvStore};
use crate::model::Model;
use crate::ops_seedinfer::SeedinferOps;
use crate::sampler::{Distribution, Sampler, SamplingParams};
use std::collections::VecDeque;
use std::sync::Arc;

/// Where drafts come from.
#[derive(Clone, Default)]
pub enum DraftSource {
    /// The tokens that followed an earlier occurrence of the output's last tokens in the prompt and output.
    #[default]
    PromptLookup,
    /// A model with the same vocabulary (typically smaller, or the same one in fewer bits), run alongside.
    Model(Arc<Model>),
    /// The model itself truncated to its first `n` layers, then its final norm and output head.
    FirstLayers(usize),
}

impl DraftSource {
    /// The self-draft when no layer count is given: the first half of the model's `layers` (at least one).
    pub fn first_half(layers: usize) -> Self {
        Self::FirstLayers((layers / 2).max(1))
    }
}

impl std::fmt::Debug for DraftSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::PromptLookup => f.write_str("PromptLookup"),
            Self::Model(m) => write!(f, "Model({})", m.info.architecture),
            Self::FirstLayers(n) => write!(f, "FirstLayers({n})"),
        }
    }
}

#[derive(Clone, Debug)]
pub struct SpeculativeParams {
    pub source: DraftSource,
    /// Most drafts verified per pass.
    pub max_draft: usize,
    /// Longest suffix prompt lookup looks up (then shorter ones, down to one token).
    pub ngram_max: usize,
}

impl SpeculativeParams {
    pub const DEFAULT_MAX_DRAFT: usize = 10;
    pub const DEFAULT_NGRAM_MAX: usize = 3;

    pub fn validate(&self) -> Result<()> {
        if !(1..=64).contains(&self.max_draft) {
            return Err(EngineError::InvalidOption(format!(
                "speculative.maxDraftTokens must be in [1, 64], got {}",
                self.max_draft
            )));
        }
        if !(1..=16).contains(&self.ngram_max) {
            return Err(EngineError::InvalidOption(format!(
                "speculative.ngram must be in [1, 16], got {}",
                self.ngram_max
            )));
        }
        Ok(())
    }
}

impl Default for SpeculativeParams {
    fn default() -> Self {
        Self {
            source: DraftSource::PromptLookup,
            max_draft: Self::DEFAULT_MAX_DRAFT,
            ngram_max: Self::DEFAULT_NGRAM_MAX,
        }
    }
}

/// Proposes drafts, each with the distribution it was drawn from.
pub(crate) enum Drafter {
    Lookup { ngram_max: usize },
    Forward(Box<ForwardDrafter>),
}

impl Drafter {
    /// The drafter for `spec` next to `target`, for a session of `context_size` positions sampled with
    /// `sampling`; `INVALID_OPTION` if the draft cannot serve that session.
    pub fn new(
        spec: &SpeculativeParams,
        target: &Arc<Model>,
        context_size: usize,
        sampling: &SamplingParams,
    ) -> Result<Self> {
        let (model, layers) = match &spec.source {
            DraftSource::PromptLookup => {
                return Ok(Self::Lookup {
                    ngram_max: spec.ngram_max,
                })
            }
            DraftSource::FirstLayers(n) => {
                let all = target.config.layers;
                if !(1..all).contains(n) {
                    return Err(EngineError::InvalidOption(format!(
                        "speculative.draftLayers must be in [1, {}] for this model ({all} layers), got {n}",
                        all - 1
                    )));
                }
                (Arc::clone(target), *n)
            }
            DraftSource::Model(draft) => {
                check_same_vocabulary(target, draft)?;
                if draft.config.context_length < context_size {
                    return Err(EngineError::InvalidOption(format!(
                        "the draft model's context ({} tokens) is shorter than the session's ({context_size})",
                        draft.config.context_length
                    )));
                }
                (Arc::clone(draft), draft.config.layers)
            }
        };
        let c = &model.config;
        // Drafts are drawn with the generation's settings and a seed of their own.
        let sampling = SamplingParams {
            seed: sampling.seed ^ 0x5eed_d4af_7000_0001,
            ..sampling.clone()
        };
        Ok(Self::Forward(Box::new(ForwardDrafter {
            cache: ContiguousKv::new(
                layers,
                c.kv_heads * c.head_dim,
                c.head_dim,
                model.kv_pool.layout().block_size,
            ),
            model,
            layers,
            tokens: Vec::new(),
            logits: Vec::new(),
            scratch: Scratch::default(),
            sampler: Sampler::new(sampling),
        })))
    }

    /// Up to `count` drafts after `history` (the session's tokens, the last one just generated).
    pub fn propose(&mut self, history: &[u32], count: usize) -> Vec<(u32, Distribution)> {
        match self {
            Self::Lookup { ngram_max } => prompt_lookup(history, *ngram_max, count)
                .into_iter()
                .map(|t| (t, Distribution::single(t)))
                .collect(),
            Self::Forward(d) => d.propose(history, count),
        }
    }
}

/// Whether `draft` tokenizes as `target` does (same size, same token texts at a sample of ids): drafts in
/// another vocabulary would never be accepted.
fn check_same_vocabulary(target: &Model, draft: &Model) -> Result<()> {
    let (t, d) = (&target.tokenizer, &draft.tokenizer);
    let size = target.config.vocab_size;
    let differs = draft.config.vocab_size != size
        || t.vocab_size() != d.vocab_size()
        || (0..size as u32)
            .step_by((size / 1024).max(1))
            .any(|id| t.token_text(id) != d.token_text(id));
    if differs {
        return Err(EngineError::InvalidOption(
            "the draft model must have the model's vocabulary".into(),
        ));
    }
    Ok(())
}

/// Drafts from a forward pass: a draft model, or the model's first layers, with a cache of their own.
pub(crate) struct ForwardDrafter {
    model: Arc<Model>,
    /// Layers run: all of a draft model's, the first ones of the model for a self-draft.
    layers: usize,
    cache: ContiguousKv,
    /// The tokens in `cache`, in order.
    tokens: Vec<u32>,
    /// The logits after the last of `tokens`.
    logits: Vec<f32>,
    scratch: Scratch,
    sampler: Sampler,
}

/// Tokens a drafter catches up on per pass.
const CATCH_UP_CHUNK: usize = 256;

impl ForwardDrafter {
    fn propose(&mut self, history: &[u32], count: usize) -> Vec<(u32, Distribution)> {
        if history.is_empty() || count == 0 {
            return Vec::new();
        }
        // Keep the cache's longest prefix of `history` (drafts that were rejected leave), then catch up.
        let common = self
            .tokens
            .iter()
            .zip(history)
            .take_while(|(a, b)| a == b)
            .count();
        let keep = if common == history.len() && self.tokens.len() == common {
            common
        } else {
            common.min(history.len() - 1)
        };
        self.truncate(keep);
        for chunk in history[keep..].chunks(CATCH_UP_CHUNK) {
            self.run(chunk);
        }
        let mut seen = history.to_vec();
        let mut drafts = Vec::with_capacity(count);
        for i in 0..count {
            let q = self.sampler.distribution(&self.logits, &seen, None);
            let token = self.sampler.draw(&q);
            drafts.push((token, q));
            if i + 1 < count {
                self.run(&[token]);
                seen.push(token);
            }
        }
        drafts
    }

    fn truncate(&mut self, len: usize) {
        self.cache.truncate(len);
        self.tokens.truncate(len);
    }

    fn run(&mut self, tokens: &[u32]) {
        let model = &self.model;
        let (cache, scratch, logits, layers) = (
            &mut self.cache,
            &mut self.scratch,
            &mut self.logits,
            self.layers,
        );
        model.install(|| {
            forward_first_layers::<SeedinferOps, ContiguousKv>(
                &model.config,
                &model.weights,
                layers,
                tokens,
                cache,
                scratch,
                logits,
                LogitsFor::Last,
            )
        });
        self.tokens.extend_from_slice(tokens);
        debug_assert_eq!(self.tokens.len(), self.cache.len());
    }
}

/// Up to `max_draft` tokens that followed the most recent earlier occurrence of the longest suffix of `history`
/// (`ngram_max` tokens down to one) that occurs earlier; empty if none does.
pub fn prompt_lookup(history: &[u32], ngram_max: usize, max_draft: usize) -> Vec<u32> {
    let len = history.len();
    for n in (1..=ngram_max.min(len.saturating_sub(1))).rev() {
        let suffix = &history[len - n..];
        // Most recent match first; a match must leave at least one token after it.
        let found = (0..len - n)
            .rev()
            .find(|&start| &history[start..start + n] == suffix);
        if let Some(start) = found {
            let from = start + n;
            return history[from..(from + max_draft).min(len)].to_vec();
        }
    }
    Vec::new()
}

/// Drafts in the cache whose logits are computed, in order; how many to propose next; the counts the result
/// reports.
#[derive(Default)]
pub(crate) struct VerifiedDrafts {
    /// Each draft, the distribution it was drawn from, and the logits after it.
    queue: VecDeque<(u32, Distribution, Vec<f32>)>,
    /// Drafts to propose next (adaptive, as Hugging Face's assisted generation: two more after a pass whose
    /// drafts were all accepted, one fewer after a rejection): a pass costs more the more rows it verifies, so
    /// drafts that keep failing should stay few.
    budget: usize,
    /// Drafts accepted since the last verification pass.
    accepted_of_pass: usize,
    /// Steps to decode without drafts, after passes with a single draft accepted nothing (`backoff` steps, doubling
    /// with each such pass up to [`MAX_BACKOFF`], back to none once a draft holds): a source that keeps failing
    /// (a poor draft model, output that copies nothing) costs little more than plain decoding.
    pause: usize,
    backoff: usize,
    pub drafted: usize,
    pub accepted: usize,
    pub passes: usize,
}

/// Drafts proposed at first.
const FIRST_BUDGET: usize = 4;

/// The longest pause of drafting, in tokens.
const MAX_BACKOFF: usize = 32;

impl VerifiedDrafts {
    /// How many drafts to propose now, at most `max`; 0 while drafting pauses.
    pub fn budget(&mut self, max: usize) -> usize {
        if self.pause > 0 {
            self.pause -= 1;
            return 0;
        }
        if self.budget == 0 {
            self.budget = FIRST_BUDGET;
        }
        self.budget = self.budget.min(max).max(1);
        self.budget
    }

    /// Drafts in the cache after the last accepted position.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// Records a verification pass: `drafts` follow the fed token, `logits` holds the rows after each of them.
    pub fn verified(
        &mut self,
        drafts: Vec<(u32, Distribution)>,
        logits: impl Iterator<Item = Vec<f32>>,
    ) {
        self.drafted += drafts.len();
        self.passes += 1;
        self.accepted_of_pass = 0;
        self.queue
            .extend(drafts.into_iter().zip(logits).map(|((t, q), l)| (t, q, l)));
    }

    /// The next draft and the distribution it was drawn from, if one is verified.
    pub fn next(&self) -> Option<(u32, &Distribution)> {
        self.queue.front().map(|(t, q, _)| (*t, q))
    }

    /// The logits after `token` if it is the next draft (then accepted), else `None` (every draft is stale: the
    /// caller drops them from the cache).
    pub fn accept(&mut self, token: u32) -> Option<Vec<f32>> {
        match self.queue.front() {
            Some((draft, _, _)) if *draft == token => {
                self.accepted += 1;
                self.accepted_of_pass += 1;
                self.backoff = 0;
                let logits = self.queue.pop_front().map(|(_, _, logits)| logits);
                if self.queue.is_empty() {
                    self.budget += 2;
                }
                logits
            }
            Some(_) => {
                if self.accepted_of_pass == 0 && self.budget <= 1 {
                    self.backoff = (self.backoff * 2).clamp(1, MAX_BACKOFF);
                    self.pause = self.backoff;
                }
                self.budget = self.budget.saturating_sub(1).max(1);
                None
            }
            None => None,
        }
    }

    pub fn clear(&mut self) {
        self.queue.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn certain(tokens: &[u32]) -> Vec<(u32, Distribution)> {
        tokens
            .iter()
            .map(|&t| (t, Distribution::single(t)))
            .collect()
    }

    #[test]
    fn lookup_takes_the_longest_most_recent_match() {
        // "a b c d | a b c e | a b c" -> the 3-gram "a b c" last occurred before "e".
        let h = [1, 2, 3, 4, 1, 2, 3, 5, 1, 2, 3];
        assert_eq!(prompt_lookup(&h, 3, 10), vec![5, 1, 2, 3]);
        assert_eq!(prompt_lookup(&h, 3, 2), vec![5, 1]);
        // No 3-gram or 2-gram match: the last token alone.
        let h = [7, 8, 9, 6, 5, 9];
        assert_eq!(prompt_lookup(&h, 3, 4), vec![6, 5, 9]);
        assert!(prompt_lookup(&[1, 2, 3], 3, 4).is_empty());
        assert!(prompt_lookup(&[1], 3, 4).is_empty());
        assert!(prompt_lookup(&[], 3, 4).is_empty());
    }

    #[test]
    fn drafts_are_accepted_in_order_until_one_differs() {
        let mut d = VerifiedDrafts::default();
        d.verified(certain(&[5, 6, 7]), (0..3).map(|i| vec![i as f32]));
        assert_eq!(d.next().map(|(t, _)| t), Some(5));
        assert_eq!(d.accept(5), Some(vec![0.0]));
        assert_eq!(d.accept(9), None);
        assert_eq!(d.len(), 2);
        d.clear();
        assert_eq!((d.drafted, d.accepted, d.passes, d.len()), (3, 1, 1, 0));
    }

    #[test]
    fn the_budget_grows_while_drafts_hold_and_shrinks_when_they_fail() {
        let mut d = VerifiedDrafts::default();
        assert_eq!(d.budget(10), FIRST_BUDGET);
        d.verified(certain(&[1, 2]), (0..2).map(|_| Vec::new()));
        d.accept(1);
        d.accept(2);
        assert_eq!(d.budget(10), FIRST_BUDGET + 2);
        assert_eq!(d.budget(5), 5);
        d.verified(certain(&[3, 4]), (0..2).map(|_| Vec::new()));
        assert_eq!(d.accept(9), None);
        assert_eq!(d.budget(10), 4);
    }

    #[test]
    fn drafting_pauses_longer_after_each_pass_that_accepts_nothing() {
        let mut d = VerifiedDrafts::default();
        let fail = |d: &mut VerifiedDrafts| {
            let budget = d.budget(10);
            d.verified(certain(&vec![1; budget]), (0..budget).map(|_| Vec::new()));
            assert_eq!(d.accept(2), None);
            d.clear();
        };
        // Passes of 4, 3, 2 drafts fail: no pause yet; then the pass of 1 draft fails: 1 step without drafts.
        for _ in 0..3 {
            fail(&mut d);
            assert_ne!(d.budget(10), 0);
        }
        fail(&mut d);
        let pauses = |d: &mut VerifiedDrafts| (0..).take_while(|_| d.budget(10) == 0).count();
        assert_eq!(pauses(&mut d), 1);
        // The budget() call that ended the pause proposed one draft; it fails too: 2, then 4 ... 32 steps.
        for expected in [2, 4, 8, 16, 32, 32] {
            d.verified(certain(&[1]), std::iter::once(Vec::new()));
            assert_eq!(d.accept(2), None);
            d.clear();
            assert_eq!(pauses(&mut d), expected);
        }
        // A draft that holds ends the backoff.
        d.verified(certain(&[1]), std::iter::once(Vec::new()));
        assert!(d.accept(1).is_some());
        assert_eq!(d.budget(10), 3);
        d.verified(certain(&[1]), std::iter::once(Vec::new()));
        assert_eq!(d.accept(2), None);
        assert_ne!(d.budget(10), 0);
    }
}
