//! Perplexity of a token sequence, teacher-forced: every token after the first of each window is scored by the
//! model's probability for it given the tokens before it in the window.
//!
//! The sequence is cut into non-overlapping windows of `window` tokens ("chunked perplexity"). Each window is
//! computed from an empty cache, so its first token has no context and is not scored: a sequence of `n` tokens
//! in `w` windows scores `n - w` tokens. Windows run in chunks of [`CHUNK`] positions with logits for every
//! position, so memory stays bounded by one chunk's logits and one window's keys and values.

use crate::error::{EngineError, Result};
use crate::forward::{LogitsFor, Scratch};
use crate::kv_cache::PagedKv;
use crate::model::Model;
use rayon::prelude::*;
use std::sync::atomic::{AtomicBool, Ordering};

/// Window length when none is given (or the model's context, if shorter).
pub const DEFAULT_WINDOW: usize = 512;

/// Positions computed per forward pass: bounds the logits held at once (`CHUNK x vocab` floats, 25 MB for a
/// 49152-token vocabulary; fewer positions for larger vocabularies, see `Model::logits_chunk`) and how long an abort
/// waits.
const CHUNK: usize = 128;

/// The score of one window.
#[derive(Clone, Debug, PartialEq)]
pub struct WindowScore {
    /// Tokens of the sequence in the window.
    pub len: usize,
    /// Tokens scored: `len - 1`.
    pub tokens: usize,
    /// Negative log-likelihood of the scored tokens, summed, in nats.
    pub nll: f64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Perplexity {
    /// Window length used.
    pub window: usize,
    /// Tokens scored over all windows.
    pub tokens: usize,
    /// Negative log-likelihood of all scored tokens, summed, in nats.
    pub nll: f64,
    pub windows: Vec<WindowScore>,
    /// The negative log-likelihood of each scored token, in sequence order (window by window).
    pub token_nll: Vec<f64>,
}

impl Perplexity {
    /// `exp(nll / tokens)`.
    pub fn perplexity(&self) -> f64 {
        (self.nll / self.tokens as f64).exp()
    }
}

/// `-log softmax(logits)[target]`, in f64.
pub fn token_nll(logits: &[f32], target: u32) -> f64 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let sum: f64 = logits.iter().map(|&l| (l as f64 - max).exp()).sum();
    max + sum.ln() - logits[target as usize] as f64
}

/// The window [`Model::perplexity`] uses for `window` (`None`: the default) on `model`, checked.
fn window_for(model: &Model, window: Option<usize>) -> Result<usize> {
    let context = model.config.context_length;
    let window = window.unwrap_or(DEFAULT_WINDOW.min(context));
    if window < 2 || window > context {
        return Err(EngineError::InvalidOption(format!(
            "window must be in [2, {context}] tokens for this model, got {window}"
        )));
    }
    Ok(window)
}

impl Model {
    /// Scores `tokens` in windows of `window` tokens (`None`: min(512, context)) on the model's thread pool, with
    /// keys and values stored as the model's KV cache stores them. Returns `None` when `abort` was set (checked
    /// before each chunk).
    pub fn perplexity(
        &self,
        tokens: &[u32],
        window: Option<usize>,
        abort: &AtomicBool,
    ) -> Result<Option<Perplexity>> {
        let window = window_for(self, window)?;
        let vocab_size = self.config.vocab_size;
        if let Some(&id) = tokens.iter().find(|&&id| id as usize >= vocab_size) {
            return Err(EngineError::InvalidTokenId { id, vocab_size });
        }
        if tokens.len() < 2 {
            return Err(EngineError::InvalidOption(format!(
                "perplexity needs at least 2 tokens, got {}",
                tokens.len()
            )));
        }
        let mut out = Perplexity {
            window,
            tokens: 0,
            nll: 0.0,
            windows: Vec::with_capacity(tokens.len().div_ceil(window)),
            token_nll: Vec::with_capacity(tokens.len()),
        };
        let mut scratch = Scratch::default();
        let mut logits = Vec::new();
        for span in tokens.chunks(window) {
            let mut cache = PagedKv::new(self.kv_pool.clone(), window);
            cache.reserve(span.len())?;
            let first_scored = out.token_nll.len();
            let chunk_len = self.logits_chunk(CHUNK);
            for (c, chunk) in span.chunks(chunk_len).enumerate() {
                if abort.load(Ordering::Relaxed) {
                    return Ok(None);
                }
                // Row r of this chunk predicts span[c * chunk_len + r + 1]; the window's last row predicts nothing.
                let targets =
                    &span[c * chunk_len + 1..(c * chunk_len + 1 + chunk.len()).min(span.len())];
                let scored: Vec<f64> = self.install(|| {
                    self.forward(chunk, &mut cache, &mut scratch, &mut logits, LogitsFor::All);
                    logits
                        .par_chunks(vocab_size)
                        .zip(targets)
                        .map(|(row, &target)| token_nll(row, target))
                        .collect()
                });
                out.token_nll.extend(scored);
            }
            let scored = &out.token_nll[first_scored..];
            // Summed in order, so the result does not depend on the thread count; from +0 (`Sum` starts at -0).
            let nll = scored.iter().fold(0.0, |sum, n| sum + n);
            out.windows.push(WindowScore {
                len: span.len(),
                tokens: scored.len(),
                nll,
            });
            out.tokens += scored.len();
            out.nll += nll;
        }
        Ok(Some(out))
    }
}

#[cfg(test)]
mod tests {
    use super::token_nll;

    #[test]
    fn token_nll_is_the_negative_log_softmax() {
        // Uniform logits: every token has probability 1/4.
        assert!((token_nll(&[3.0; 4], 2) - 4f64.ln()).abs() < 1e-12);
        // Huge logits do not overflow: the max is subtracted first.
        let nll = token_nll(&[1000.0, 1000.0 - 2f32.ln()], 0);
        assert!((nll - 1.5f64.ln()).abs() < 1e-4, "{nll}");
    }
}
