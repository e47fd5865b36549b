//! Exact speculative decoding with drafts from prompt lookup (METHODS.md, "Speculative decoding (exact)").
//!
//! After each generated token, the last `n` tokens (n = `ngram_max` down to 1) are looked up earlier in the prompt
//! and output; the tokens that followed the most recent match are proposed as drafts. One forward pass over
//! [token + drafts] gives the logits after each of them; the sampler then runs position by position as it would
//! have: while its token equals the next draft, that draft's logits are already computed and the step costs
//! nothing; at the first disagreement the remaining drafts leave the cache. With greedy sampling the output is the
//! plain decoding's token for token (a pass over several tokens gives each row the bits of a one-token pass).

use crate::error::{EngineError, Result};
use std::collections::VecDeque;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpeculativeParams {
    /// Most drafts verified per pass.
    pub max_draft: usize,
    /// Longest suffix looked up (then shorter ones, down to one token).
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
            max_draft: Self::DEFAULT_MAX_DRAFT,
            ngram_max: Self::DEFAULT_NGRAM_MAX,
        }
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
    /// Each draft with the logits after it.
    queue: VecDeque<(u32, Vec<f32>)>,
    /// Drafts to propose next (adaptive, as Hugging Face's assisted generation: two more after a pass whose
    /// drafts were all accepted, one fewer after a rejection): a pass costs more the more rows it verifies, so
    /// drafts that keep failing should stay few.
    budget: usize,
    pub drafted: usize,
    pub accepted: usize,
    pub passes: usize,
}

/// Drafts proposed at first.
const FIRST_BUDGET: usize = 4;

impl VerifiedDrafts {
    /// How many drafts to propose now, at most `max`.
    pub fn budget(&mut self, max: usize) -> usize {
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
    pub fn verified(&mut self, drafts: &[u32], logits: impl Iterator<Item = Vec<f32>>) {
        self.queue.extend(drafts.iter().copied().zip(logits));
        self.drafted += drafts.len();
        self.passes += 1;
    }

    /// The logits after `token` if it is the next draft (then accepted), else `None` (every draft is stale: the
    /// caller drops them from the cache).
    pub fn accept(&mut self, token: u32) -> Option<Vec<f32>> {
        match self.queue.front() {
            Some((draft, _)) if *draft == token => {
                self.accepted += 1;
                let logits = self.queue.pop_front().map(|(_, logits)| logits);
                if self.queue.is_empty() {
                    self.budget += 2;
                }
                logits
            }
            Some(_) => {
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
        d.verified(&[5, 6, 7], (0..3).map(|i| vec![i as f32]));
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
        d.verified(&[1, 2], (0..2).map(|_| Vec::new()));
        d.accept(1);
        d.accept(2);
        assert_eq!(d.budget(10), FIRST_BUDGET + 2);
        assert_eq!(d.budget(5), 5);
        d.verified(&[3, 4], (0..2).map(|_| Vec::new()));
        assert_eq!(d.accept(9), None);
        assert_eq!(d.budget(10), 4);
    }
}
