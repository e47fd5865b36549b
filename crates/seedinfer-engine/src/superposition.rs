//! Superposition prompting for retrieval-augmented generation (METHODS.md, "Superposition prompting (RAG)").
//!
//! The preamble is computed once; each document, followed by a copy of the query, is a path forked from it that sees
//! the preamble and itself only, so no document's attention pays for the others. A path's saliency is the mean
//! log-likelihood of the query's tokens given the preamble and its document; the most salient path is kept and the
//! answer is generated after it. Paths here are laid out at `max` positions (each starts where the preamble ends),
//! so the kept path is exactly the ordinary prompt [preamble, document, query]: with one document the output is the
//! ordinary prompt's. A document's keys and values depend only on the preamble and itself, so the prefix cache keeps
//! them: a second query over the same documents computes only the query tokens, each document's last, partly filled
//! block, and the preamble's last partial block once per path.

use crate::error::{EngineError, Result};
use crate::forward::LogitsFor;
use crate::sampler::TokenLogprobs;
use crate::session::Session;
use crate::token_pruning::PrefillStrategy;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

/// How the paths were scored and which were kept.
#[derive(Clone, Debug, PartialEq)]
pub struct SuperposeReport {
    /// Per document, in order: the mean log-likelihood of the query's tokens after the preamble and it.
    pub saliency: Vec<f32>,
    /// The documents whose paths the session continues from (the most salient one).
    pub kept: Vec<usize>,
    /// Tokens of the prompt: the preamble, then every document and query copy.
    pub prompt_tokens: usize,
    /// Of those, how many the prefix cache already held.
    pub reused_tokens: usize,
    /// From the call to the end of the last path's query.
    pub elapsed_ms: f64,
}

impl Session {
    /// Appends `preamble`, runs each of `documents` followed by `query` as a path forked after it, and continues
    /// from the path whose query is most likely (ties: the first): afterwards the session holds [preamble, that
    /// document, query], ready to generate the answer. `top_k` paths are kept; only 1 is available so far.
    /// `abort` stops it between chunks with `Aborted`, leaving the session with the preamble only.
    pub fn superpose(
        &mut self,
        preamble: &[u32],
        documents: &[Vec<u32>],
        query: &[u32],
        top_k: usize,
        abort: &AtomicBool,
    ) -> Result<SuperposeReport> {
        let started = Instant::now();
        if self.bounded_cache().is_some() {
            return Err(EngineError::InvalidOption(
                "superposition needs an unbounded KV cache".into(),
            ));
        }
        if top_k != 1 {
            return Err(EngineError::InvalidOption(format!(
                "superposition keeps one path for now (topK 1), got {top_k}"
            )));
        }
        if documents.is_empty() || documents.iter().any(Vec::is_empty) {
            return Err(EngineError::InvalidOption(
                "superposition needs at least one document, none of them empty".into(),
            ));
        }
        if query.is_empty() {
            return Err(EngineError::InvalidOption(
                "superposition needs a non-empty query".into(),
            ));
        }
        if self.token_count() + preamble.len() == 0 {
            return Err(EngineError::InvalidOption(
                "superposition needs a preamble or a session holding tokens: the first document token needs a \
                 position before it"
                    .into(),
            ));
        }
        // The longest path, and a token generated after it, must fit.
        let longest = documents.iter().map(Vec::len).max().unwrap_or(0) + query.len();
        let preamble = self.feed(preamble, longest + 1)?;
        let path_check = |tokens: &[u32]| self.feed(tokens, 0).map(|_| ());
        for document in documents {
            path_check(document)?;
        }
        path_check(query)?;
        // The preamble up to a block boundary runs once; each path runs the rest of it before its document, so
        // every path starts on a block boundary where the prefix cache can hand it (preamble, document) blocks.
        let block_size = self.model().kv_pool.layout().block_size;
        let held = self.tokens.len();
        let shared = ((held + preamble.len()) / block_size * block_size)
            .saturating_sub(held)
            .min(preamble.len());
        let (shared, tail) = preamble.split_at(shared);
        let mut reused = run_dense(self, shared, abort, LogitsFor::Last, true, &mut |_| {})?;
        let vocab_size = self.model().config.vocab_size;
        let mut saliency = Vec::with_capacity(documents.len());
        let mut best: Option<(f32, usize, Session)> = None;
        for (i, document) in documents.iter().enumerate() {
            let mut path = self.fork();
            let path_tokens: Vec<u32> = tail.iter().chain(document).copied().collect();
            reused += run_dense(
                &mut path,
                &path_tokens,
                abort,
                LogitsFor::Last,
                true,
                &mut |_| {},
            )?;
            // log p(query[0]) from the logits after the document, log p(query[j]) from those after query[j - 1].
            let mut log_likelihood = 0.0f64;
            let mut scored = 0;
            let mut score = |logits: &[f32]| {
                if scored < query.len() {
                    log_likelihood += TokenLogprobs::of(logits, query[scored], 0).logprob as f64;
                    scored += 1;
                }
            };
            if let Some(logits) = path.last_logits.as_deref() {
                score(logits);
            }
            run_dense(
                &mut path,
                query,
                abort,
                LogitsFor::All,
                false,
                &mut |rows: &[f32]| rows.chunks(vocab_size).for_each(&mut score),
            )?;
            let mean = (log_likelihood / query.len() as f64) as f32;
            saliency.push(mean);
            if best.as_ref().is_none_or(|(s, _, _)| mean > *s) {
                best = Some((mean, i, path));
            }
        }
        let Some((_, kept, path)) = best else {
            return Err(EngineError::Internal("no path was kept".into()));
        };
        *self = path;
        Ok(SuperposeReport {
            saliency,
            kept: vec![kept],
            prompt_tokens: preamble.len()
                + documents.iter().map(Vec::len).sum::<usize>()
                + documents.len() * query.len(),
            reused_tokens: reused,
            elapsed_ms: started.elapsed().as_secs_f64() * 1e3,
        })
    }
}

/// Runs `tokens` through `session` densely (taking blocks from the prefix cache when `reuse`), handing each chunk's
/// logits to `after_chunk`; returns how many tokens the prefix cache held, or `Aborted`.
fn run_dense(
    session: &mut Session,
    tokens: &[u32],
    abort: &AtomicBool,
    logits_for: LogitsFor,
    reuse: bool,
    after_chunk: &mut dyn FnMut(&[f32]),
) -> Result<usize> {
    let (completed, reused, _) = session.run_chunks(
        tokens,
        abort,
        logits_for,
        reuse,
        &PrefillStrategy::Dense,
        false,
        after_chunk,
    )?;
    if completed {
        Ok(reused)
    } else {
        Err(EngineError::Aborted("superposition was aborted".into()))
    }
}
