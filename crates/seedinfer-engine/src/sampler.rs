//! Next-token selection: greedy, or llama.cpp's chain (penalties, top-k, top-p, min-p, temperature) with a
//! seeded generator so a seed reproduces a sample exactly; and the log-probabilities reported with each token.

use crate::error::{EngineError, Result};
use llguidance::toktrie::SimpleVob;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

#[derive(Clone, Debug)]
pub struct SamplingParams {
    /// 0 selects the most likely token.
    pub temperature: f32,
    /// 0 disables.
    pub top_k: usize,
    /// 1 disables.
    pub top_p: f32,
    /// 0 disables.
    pub min_p: f32,
    /// 1 disables.
    pub repetition_penalty: f32,
    /// How many of the latest tokens the penalties look at (prompt included, as llama.cpp's `penalty_last_n`).
    pub repetition_last_n: usize,
    /// OpenAI's `presence_penalty`: subtracted once from the logit of every token seen in the window. 0 disables.
    pub presence_penalty: f32,
    /// OpenAI's `frequency_penalty`: subtracted from a token's logit once per time it was seen. 0 disables.
    pub frequency_penalty: f32,
    pub seed: u64,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            temperature: 0.8,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.05,
            repetition_penalty: 1.0,
            repetition_last_n: 64,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            seed: 0,
        }
    }
}

impl SamplingParams {
    pub fn validate(&self) -> Result<()> {
        let bad = |what: String| Err(EngineError::InvalidOption(what));
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            return bad(format!(
                "temperature must be >= 0, got {}",
                self.temperature
            ));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return bad(format!("topP must be in (0, 1], got {}", self.top_p));
        }
        if !(0.0..=1.0).contains(&self.min_p) {
            return bad(format!("minP must be in [0, 1], got {}", self.min_p));
        }
        if !(self.repetition_penalty.is_finite() && self.repetition_penalty > 0.0) {
            return bad(format!(
                "repetitionPenalty must be > 0, got {}",
                self.repetition_penalty
            ));
        }
        for (name, value) in [
            ("presencePenalty", self.presence_penalty),
            ("frequencyPenalty", self.frequency_penalty),
        ] {
            if !(-2.0..=2.0).contains(&value) {
                return bad(format!("{name} must be in [-2, 2], got {value}"));
            }
        }
        Ok(())
    }
}

pub struct Sampler {
    params: SamplingParams,
    rng: ChaCha8Rng,
    candidates: Vec<(u32, f32)>,
    /// The logits after the repetition penalty (the caller's stay as the model produced them).
    penalized: Vec<f32>,
}

pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, v) in logits.iter().enumerate() {
        if *v > logits[best] {
            best = i;
        }
    }
    best as u32
}

impl Sampler {
    pub fn new(params: SamplingParams) -> Self {
        let rng = ChaCha8Rng::seed_from_u64(params.seed);
        Self {
            params,
            rng,
            candidates: Vec::new(),
            penalized: Vec::new(),
        }
    }

    /// Picks the next token; `history` is every token the session holds (for the repetition penalty).
    pub fn sample(&mut self, logits: &[f32], history: &[u32]) -> u32 {
        self.sample_allowed(logits, history, None)
    }

    /// [`Sampler::sample`] among the tokens `allowed` sets (all when `None`; an output constraint's mask, applied
    /// before the chain as llama.cpp applies a grammar). The mask must allow at least one id below `logits.len()`.
    pub fn sample_allowed(
        &mut self,
        logits: &[f32],
        history: &[u32],
        allowed: Option<&SimpleVob>,
    ) -> u32 {
        let d = self.distribution(logits, history, allowed);
        self.draw(&d)
    }

    /// The distribution the chain leaves for the next token: a single token when greedy, else the candidates
    /// with their weights after penalties, mask, top-k, top-p, min-p and temperature.
    pub fn distribution(
        &mut self,
        logits: &[f32],
        history: &[u32],
        allowed: Option<&SimpleVob>,
    ) -> Distribution {
        let p = &self.params;
        let penalized =
            p.repetition_penalty != 1.0 || p.presence_penalty != 0.0 || p.frequency_penalty != 0.0;
        let logits: &[f32] = if !penalized {
            logits
        } else {
            self.penalized.clear();
            self.penalized.extend_from_slice(logits);
            let logits = &mut self.penalized;
            let recent = &history[history.len().saturating_sub(p.repetition_last_n)..];
            let mut seen = recent.to_vec();
            seen.sort_unstable();
            for run in seen.chunk_by(|a, b| a == b) {
                let Some(l) = logits.get_mut(run[0] as usize) else {
                    continue;
                };
                if p.repetition_penalty != 1.0 {
                    *l = if *l > 0.0 {
                        *l / p.repetition_penalty
                    } else {
                        *l * p.repetition_penalty
                    };
                }
                *l -= p.presence_penalty + p.frequency_penalty * run.len() as f32;
            }
            logits
        };
        let c = &mut self.candidates;
        c.clear();
        match allowed {
            None if p.temperature == 0.0 => return Distribution::single(argmax(logits)),
            None => c.extend(logits.iter().enumerate().map(|(i, l)| (i as u32, *l))),
            Some(mask) => {
                mask.iter_set_entries(|i| {
                    if let Some(l) = logits.get(i) {
                        c.push((i as u32, *l));
                    }
                });
                if c.is_empty() {
                    // Nothing allowed is a logit: the caller broke the contract; fall back to the model's choice.
                    return Distribution::single(argmax(logits));
                }
                if p.temperature == 0.0 {
                    // The first best, as `argmax` picks among ties.
                    let mut best = c[0];
                    for &(i, l) in c.iter() {
                        if l > best.1 {
                            best = (i, l);
                        }
                    }
                    return Distribution::single(best.0);
                }
            }
        }
        let by_logit_desc =
            |a: &(u32, f32), b: &(u32, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
        if p.top_k > 0 && p.top_k < c.len() {
            c.select_nth_unstable_by(p.top_k - 1, by_logit_desc);
            c.truncate(p.top_k);
        }
        c.sort_unstable_by(by_logit_desc);
        // Probabilities before temperature, as llama.cpp's default chain computes top-p and min-p.
        let max = c[0].1;
        let mut probs: Vec<f32> = c.iter().map(|(_, l)| (l - max).exp()).collect();
        let sum: f32 = probs.iter().sum();
        probs.iter_mut().for_each(|q| *q /= sum);
        let mut keep = c.len();
        if p.top_p < 1.0 {
            let mut cumulative = 0.0;
            for (i, q) in probs.iter().enumerate() {
                cumulative += q;
                if cumulative >= p.top_p {
                    keep = i + 1;
                    break;
                }
            }
        }
        if p.min_p > 0.0 {
            let threshold = p.min_p * probs[0];
            keep = keep.min(probs.iter().take_while(|q| **q >= threshold).count().max(1));
        }
        c.truncate(keep);
        let weighted: Vec<(u32, f32)> = c
            .iter()
            .map(|(id, l)| (*id, ((l - max) / p.temperature).exp()))
            .collect();
        let total = weighted.iter().map(|(_, w)| w).sum();
        Distribution {
            weighted,
            total,
            certain: false,
        }
    }

    /// A token drawn from `d` (a single token takes no draw from the generator).
    pub fn draw(&mut self, d: &Distribution) -> u32 {
        if d.certain {
            return d.weighted[0].0;
        }
        let mut r = self.rng.random::<f32>() * d.total;
        for (id, w) in &d.weighted {
            if r < *w {
                return *id;
            }
            r -= w;
        }
        d.weighted[d.weighted.len() - 1].0
    }

    /// The token at a position where a draft proposed `draft`, drawn as `draft` from `q`: speculative sampling
    /// (Leviathan et al.; Chen et al.), whose output follows `p` exactly. With `q` a single token (a greedy or
    /// prompt-lookup draft) that is a plain draw from `p`, the draw plain decoding makes; otherwise `draft` is kept
    /// with probability min(1, p/q), and on rejection a token is drawn from the normalised max(0, p - q).
    pub fn draw_speculative(&mut self, p: &Distribution, draft: u32, q: &Distribution) -> u32 {
        if q.certain {
            return self.draw(p);
        }
        let (p_draft, q_draft) = (p.probability(draft), q.probability(draft));
        if q_draft > 0.0 && self.rng.random::<f32>() * q_draft < p_draft {
            return draft;
        }
        let q_of: std::collections::HashMap<u32, f32> = q
            .weighted
            .iter()
            .map(|&(id, w)| (id, w / q.total))
            .collect();
        let weighted: Vec<(u32, f32)> = p
            .weighted
            .iter()
            .map(|&(id, w)| {
                let q = q_of.get(&id).copied().unwrap_or(0.0);
                (id, (w / p.total - q).max(0.0))
            })
            .filter(|&(_, w)| w > 0.0)
            .collect();
        let total: f32 = weighted.iter().map(|(_, w)| w).sum();
        if weighted.is_empty() || total <= 0.0 {
            // p <= q wherever p has mass, i.e. p = q up to rounding: the draft would have been kept.
            return self.draw(p);
        }
        self.draw(&Distribution {
            weighted,
            total,
            certain: false,
        })
    }
}

/// What the sampler draws the next token from: candidates with non-negative weights summing to `total`.
#[derive(Clone, Debug, PartialEq)]
pub struct Distribution {
    weighted: Vec<(u32, f32)>,
    total: f32,
    /// Greedy: the one candidate is taken without a draw (a sampled distribution of one candidate still draws,
    /// so a seed's stream of draws does not depend on how many candidates the chain left).
    certain: bool,
}

impl Distribution {
    /// Certainty: `token` with probability 1.
    pub fn single(token: u32) -> Self {
        Self {
            weighted: vec![(token, 1.0)],
            total: 1.0,
            certain: true,
        }
    }

    /// Every candidate with its probability.
    pub fn probabilities(&self) -> impl Iterator<Item = (u32, f32)> + '_ {
        self.weighted.iter().map(|&(id, w)| (id, w / self.total))
    }

    /// The probability of `token` (0 if it is not a candidate).
    pub fn probability(&self, token: u32) -> f32 {
        self.weighted
            .iter()
            .find(|(id, _)| *id == token)
            .map_or(0.0, |(_, w)| w / self.total)
    }
}

/// The log-probability of a token under the model's distribution (softmax of the raw logits, before penalties
/// and temperature, as OpenAI reports it), with the `top` most likely tokens.
#[derive(Clone, Debug, PartialEq)]
pub struct TokenLogprobs {
    pub logprob: f32,
    /// `(token, logprob)`, most likely first (ties by lower id).
    pub top: Vec<(u32, f32)>,
}

impl TokenLogprobs {
    pub fn of(logits: &[f32], token: u32, top: usize) -> Self {
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let log_sum = max + logits.iter().map(|l| (l - max).exp()).sum::<f32>().ln();
        let logprob = logits
            .get(token as usize)
            .map_or(f32::NEG_INFINITY, |l| l - log_sum);
        let mut best: Vec<(u32, f32)> = Vec::with_capacity(top + 1);
        if top > 0 {
            for (i, &l) in logits.iter().enumerate() {
                if best.len() == top && l <= best[top - 1].1 {
                    continue;
                }
                let at = best.partition_point(|&(_, b)| b >= l);
                best.insert(at, (i as u32, l));
                best.truncate(top);
            }
        }
        Self {
            logprob,
            top: best.into_iter().map(|(i, l)| (i, l - log_sum)).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn logits() -> Vec<f32> {
        (0..100).map(|i| ((i * 37) % 100) as f32 / 10.0).collect()
    }

    #[test]
    fn temperature_zero_is_argmax() {
        let mut s = Sampler::new(SamplingParams {
            temperature: 0.0,
            ..Default::default()
        });
        let l = logits();
        assert_eq!(s.sample(&l, &[]), argmax(&logits()));
    }

    #[test]
    fn same_seed_same_tokens_and_top_k_one_is_greedy() {
        let run = |seed| {
            let mut s = Sampler::new(SamplingParams {
                temperature: 1.5,
                top_k: 0,
                top_p: 1.0,
                min_p: 0.0,
                seed,
                ..Default::default()
            });
            (0..50)
                .map(|_| s.sample(&logits(), &[]))
                .collect::<Vec<_>>()
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
        let mut s = Sampler::new(SamplingParams {
            temperature: 5.0,
            top_k: 1,
            ..Default::default()
        });
        assert_eq!(s.sample(&logits(), &[]), argmax(&logits()));
    }

    #[test]
    fn repetition_penalty_demotes_seen_tokens() {
        let mut s = Sampler::new(SamplingParams {
            temperature: 0.0,
            repetition_penalty: 100.0,
            ..Default::default()
        });
        let best = argmax(&logits());
        assert_ne!(s.sample(&logits(), &[best]), best);
    }

    #[test]
    fn presence_and_frequency_penalties_subtract_per_seen_token() {
        let mut l = vec![0.0f32; 8];
        l[3] = 1.0;
        l[5] = 0.9;
        let greedy = |presence, frequency, history: &[u32]| {
            Sampler::new(SamplingParams {
                temperature: 0.0,
                presence_penalty: presence,
                frequency_penalty: frequency,
                ..Default::default()
            })
            .sample(&l, history)
        };
        assert_eq!(greedy(0.0, 0.0, &[3, 3]), 3);
        // Presence: 1.0 - 0.2 < 0.9.
        assert_eq!(greedy(0.2, 0.0, &[3]), 5);
        // Frequency counts repeats: once costs 0.06 (still 3), three times 0.18 (5 wins).
        assert_eq!(greedy(0.0, 0.06, &[3]), 3);
        assert_eq!(greedy(0.0, 0.06, &[3, 3, 3]), 5);
        // Negative values encourage repeats.
        assert_eq!(greedy(-1.5, 0.0, &[1]), 1);
        assert!(SamplingParams {
            presence_penalty: 2.5,
            ..Default::default()
        }
        .validate()
        .is_err());
    }

    #[test]
    fn logprobs_are_a_log_softmax_with_the_top_tokens_in_order() {
        let l = [1.0f32, 3.0, 2.0, 3.0];
        let r = TokenLogprobs::of(&l, 2, 3);
        let z: f32 = l.iter().map(|x| x.exp()).sum();
        assert!((r.logprob - (2.0f32.exp() / z).ln()).abs() < 1e-6);
        let ids: Vec<u32> = r.top.iter().map(|t| t.0).collect();
        assert_eq!(ids, vec![1, 3, 2]);
        assert!((r.top[0].1 - (3.0f32.exp() / z).ln()).abs() < 1e-6);
        assert!(TokenLogprobs::of(&l, 0, 0).top.is_empty());
    }

    #[test]
    fn a_mask_limits_the_choice_and_an_all_allowing_mask_changes_nothing() {
        let l = logits();
        let chain = |seed| SamplingParams {
            temperature: 1.0,
            seed,
            ..Default::default()
        };
        let mut every = SimpleVob::alloc(l.len());
        every.set_all(true);
        for seed in 0..20 {
            let plain = Sampler::new(chain(seed)).sample(&l, &[]);
            let masked = Sampler::new(chain(seed)).sample_allowed(&l, &[], Some(&every));
            assert_eq!(plain, masked);
        }
        // Three low-scoring tokens allowed: greedy takes the best of them, sampling never leaves them.
        let mut few = SimpleVob::alloc(l.len());
        for id in [0u32, 1, 2] {
            few.allow_token(id);
        }
        let best_of_few = (0..3u32).max_by(|a, b| l[*a as usize].total_cmp(&l[*b as usize]));
        let greedy = Sampler::new(SamplingParams {
            temperature: 0.0,
            ..Default::default()
        })
        .sample_allowed(&l, &[], Some(&few));
        assert_eq!(Some(greedy), best_of_few);
        let mut s = Sampler::new(SamplingParams {
            temperature: 10.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            ..Default::default()
        });
        let drawn: std::collections::BTreeSet<u32> = (0..200)
            .map(|_| s.sample_allowed(&l, &[], Some(&few)))
            .collect();
        assert_eq!(drawn, [0, 1, 2].into_iter().collect());
    }

    #[test]
    fn speculative_draws_follow_the_target_distribution() {
        // p and q differ (q favours token 0, p token 2, q has a token p lacks); drafts drawn from q, kept or
        // replaced by the rule, come out distributed as p.
        let p = Distribution {
            weighted: vec![(2, 5.0), (0, 2.0), (1, 3.0)],
            total: 10.0,
            certain: false,
        };
        let q = Distribution {
            weighted: vec![(0, 6.0), (1, 1.0), (2, 2.0), (3, 1.0)],
            total: 10.0,
            certain: false,
        };
        let mut drafter = Sampler::new(SamplingParams {
            seed: 1,
            ..Default::default()
        });
        let mut target = Sampler::new(SamplingParams {
            seed: 2,
            ..Default::default()
        });
        const N: usize = 200_000;
        let mut counts = [0usize; 4];
        for _ in 0..N {
            let draft = drafter.draw(&q);
            counts[target.draw_speculative(&p, draft, &q) as usize] += 1;
        }
        for (token, count) in counts.iter().enumerate() {
            let expected = p.probability(token as u32) as f64;
            let sd = (expected * (1.0 - expected) / N as f64).sqrt().max(1e-9);
            let seen = *count as f64 / N as f64;
            assert!(
                (seen - expected).abs() < 5.0 * sd,
                "token {token}: {seen} vs {expected}"
            );
        }
        // A certain draft (greedy, prompt lookup) leaves the plain draw, with the same generator state.
        let mut a = Sampler::new(SamplingParams::default());
        let mut b = Sampler::new(SamplingParams::default());
        for draft in 0..50u32 {
            assert_eq!(
                a.draw_speculative(&p, draft % 4, &Distribution::single(draft % 4)),
                b.draw(&p)
            );
        }
    }
}
