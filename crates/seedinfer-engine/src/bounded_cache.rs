//! Bounded KV caches for endless chats (METHODS.md, "StreamingLLM and SirLLM"): a session whose history would
//! exceed `max_tokens` evicts tokens from its cache and goes on, its memory flat.
//!
//! - **StreamingLLM**: keep the first `sinks` tokens (attention sinks: softmax needs somewhere to put its mass,
//!   and a model trained with a BOS puts it there) and the most recent ones.
//! - **SirLLM**: keep the sinks, the `recent` latest tokens, and in between the tokens with the highest score:
//!   the surprisal `-log p(x_i | prefix)` the model gave the token when it was processed (the first token of a
//!   fed segment gets the segment's maximum), multiplied by `decay` at every eviction, so old surprises fade.
//!
//! Kept tokens stay in their original order and take positions `0..len` again: their keys are re-rotated (the
//! cache stores keys after RoPE, so each moved key's rotation is undone and its new one applied, "K-shift"), values
//! are copied, in place (only blocks shared with a fork are copied first). Evictions free more than the next tokens
//! need (an eighth of `max_tokens` extra), so a re-rotation happens once per many tokens rather than at every step. Exactness switch: while the history fits in
//! `max_tokens` nothing is evicted and every result is the unbounded session's.

use crate::config::LlamaConfig;
use crate::error::{EngineError, Result};
use crate::kv_cache::{KvStore, PagedKv, Positions};
use crate::ops_seedinfer::{apply_rope, RopeScratch, RopeTable};
use crate::token_pruning::read_position;

/// SirLLM's settings: which earlier tokens a bounded cache keeps besides its sinks.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SirLlm {
    /// The latest tokens, always kept.
    pub recent: usize,
    /// Kept tokens' scores are multiplied by this at each eviction (0.7 for dialogue, 1 for none).
    pub decay: f64,
}

/// A session's cache bound.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BoundedCache {
    /// Most tokens the cache holds.
    pub max_tokens: usize,
    /// First tokens always kept.
    pub sinks: usize,
    /// `None`: StreamingLLM (sinks and the latest tokens); `Some`: SirLLM.
    pub sirllm: Option<SirLlm>,
}

impl BoundedCache {
    pub const DEFAULT_SINKS: usize = 4;
    pub const DEFAULT_DECAY: f64 = 0.7;
    /// The fewest tokens a bounded cache may hold.
    pub const MIN_TOKENS: usize = 64;

    /// SirLLM's default recent window: a quarter of the cache.
    pub fn default_recent(max_tokens: usize) -> usize {
        max_tokens / 4
    }

    /// Checks the bound against a session of `context_size` positions.
    pub fn validate(&self, context_size: usize) -> Result<()> {
        let invalid = |m: String| Err(EngineError::InvalidOption(m));
        if self.max_tokens < Self::MIN_TOKENS || self.max_tokens > context_size {
            return invalid(format!(
                "kvCache.maxTokens must be in [{}, {context_size}] (the session's context size), got {}",
                Self::MIN_TOKENS,
                self.max_tokens
            ));
        }
        if self.sinks > self.max_tokens / 4 {
            return invalid(format!(
                "kvCache.sinks must be at most a quarter of maxTokens ({}), got {}",
                self.max_tokens / 4,
                self.sinks
            ));
        }
        if let Some(s) = self.sirllm {
            if s.recent == 0 || self.sinks + s.recent > self.max_tokens / 2 {
                return invalid(format!(
                    "kvCache.recent must be at least 1 and, with the sinks, at most half of maxTokens ({}), got {}",
                    self.max_tokens / 2,
                    s.recent
                ));
            }
            if !(s.decay > 0.0 && s.decay <= 1.0) {
                return invalid(format!("kvCache.decay must be in (0, 1], got {}", s.decay));
            }
        }
        Ok(())
    }

    /// The most tokens fed in one pass, so that an eviction can always make room for them.
    pub fn max_chunk(&self) -> usize {
        self.max_tokens / 4
    }

    /// The positions of a cache of `len` tokens to keep so that `room` more fit, or `None` when they already
    /// do. `scores` (SirLLM) has one score per cached token.
    pub(crate) fn keep(&self, len: usize, room: usize, scores: &[f32]) -> Option<Vec<usize>> {
        if len + room <= self.max_tokens {
            return None;
        }
        let target = (self.max_tokens - room).saturating_sub(self.max_tokens / 8);
        let sinks = self.sinks.min(target);
        let mut keep: Vec<usize> = (0..sinks).collect();
        match self.sirllm {
            None => keep.extend(len - (target - sinks)..len),
            Some(s) => {
                let recent = s.recent.min(target - sinks);
                let middle = sinks..len - recent;
                let mut best: Vec<usize> = middle.collect();
                let wanted = target - sinks - recent;
                // Highest score first; among equals the later token (closer to the present).
                best.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(b.cmp(&a)));
                best.truncate(wanted);
                best.sort_unstable();
                keep.extend(best);
                keep.extend(len - recent..len);
            }
        }
        Some(keep)
    }
}

/// Moves the positions `keep` (ascending) of `cache` to positions `0..keep.len()`, in place: values copied, keys
/// that moved re-rotated to their new position; then forgets the rest. Only the blocks shared with a fork are
/// copied (copy-on-write), so an eviction needs no more memory than the cache holds.
pub(crate) fn compact(
    cfg: &LlamaConfig,
    cache: &mut PagedKv,
    keep: &[usize],
    rope: &mut RopeScratch,
) -> Result<()> {
    let kv_dim = cfg.kv_dim();
    let n = keep.len();
    // Positions before the first moved one keep their rows and rotations.
    let first_moved = keep
        .iter()
        .enumerate()
        .position(|(i, &p)| i != p)
        .unwrap_or(n);
    let moved = &keep[first_moved..];
    let targets: Vec<usize> = (first_moved..n).collect();
    cache.make_writable(&targets)?;
    let (mut keys, mut values) = (
        vec![0.0; moved.len() * kv_dim],
        vec![0.0; moved.len() * kv_dim],
    );
    let context = cache.context_size();
    for layer in 0..cfg.layers {
        // Every moved row is read before any is written: a target may be another row's source.
        let channels = cache.key_channels(layer);
        for (i, &p) in moved.iter().enumerate() {
            let row = i * kv_dim..(i + 1) * kv_dim;
            read_position(
                cfg,
                cache,
                channels,
                layer,
                p,
                &mut keys[row.clone()],
                &mut values[row],
            );
        }
        let table = RopeTable { layer, context };
        apply_rope(
            &mut keys,
            cfg,
            table,
            cfg.kv_heads,
            Positions::List(moved),
            -1.0,
            rope,
        );
        let new = Positions::From(first_moved);
        apply_rope(&mut keys, cfg, table, cfg.kv_heads, new, 1.0, rope);
        cache.write(layer, new, &keys, &values);
    }
    cache.truncate(n);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn streaming(max_tokens: usize) -> BoundedCache {
        BoundedCache {
            max_tokens,
            sinks: 4,
            sirllm: None,
        }
    }

    #[test]
    fn streaming_keeps_sinks_and_the_latest_tokens_with_room_to_spare() {
        let b = streaming(128);
        assert_eq!(b.keep(100, 28, &[]), None, "fits exactly");
        let keep = b.keep(128, 1, &[]).expect("evicts");
        // 128 - 1 - 16 = 111 kept: 4 sinks and the latest 107.
        assert_eq!(keep.len(), 111);
        assert_eq!(&keep[..5], &[0, 1, 2, 3, 21]);
        assert_eq!(*keep.last().unwrap(), 127);
    }

    #[test]
    fn sirllm_keeps_sinks_the_recent_window_and_the_highest_scores_in_order() {
        let b = BoundedCache {
            max_tokens: 64,
            sinks: 2,
            sirllm: Some(SirLlm {
                recent: 8,
                decay: 0.7,
            }),
        };
        let scores: Vec<f32> = (0..64)
            .map(|p| if p % 10 == 5 { 9.0 } else { p as f32 / 100.0 })
            .collect();
        let keep = b.keep(64, 4, &scores).expect("evicts");
        // 64 - 4 - 8 = 52 kept: 2 sinks, 8 recent (56..64), 42 of the middle: the 5 high ones and the 37 latest.
        assert_eq!(keep.len(), 52);
        assert!(keep.windows(2).all(|w| w[0] < w[1]), "original order");
        assert_eq!(&keep[..2], &[0, 1]);
        assert!(keep.ends_with(&(56..64).collect::<Vec<_>>()));
        for p in [5, 15, 25, 35, 45] {
            assert!(keep.contains(&p), "high score {p} kept");
        }
        assert!(
            !keep.contains(&2) && !keep.contains(&12),
            "the lowest scores go"
        );
    }

    #[test]
    fn bad_bounds_are_refused() {
        let ok = BoundedCache {
            max_tokens: 1024,
            sinks: 4,
            sirllm: Some(SirLlm {
                recent: 256,
                decay: 0.7,
            }),
        };
        assert!(ok.validate(2048).is_ok());
        for bad in [
            BoundedCache {
                max_tokens: 4096,
                ..ok
            },
            BoundedCache {
                max_tokens: 32,
                ..ok
            },
            BoundedCache { sinks: 300, ..ok },
            BoundedCache {
                sirllm: Some(SirLlm {
                    recent: 0,
                    decay: 0.7,
                }),
                ..ok
            },
            BoundedCache {
                sirllm: Some(SirLlm {
                    recent: 600,
                    decay: 0.7,
                }),
                ..ok
            },
            BoundedCache {
                sirllm: Some(SirLlm {
                    recent: 8,
                    decay: 0.0,
                }),
                ..ok
            },
        ] {
            assert!(bad.validate(2048).is_err(), "{bad:?}");
        }
    }
}

#[cfg(test)]
mod compaction_tests {
    use super::*;
    use crate::kv_pool::{BlockLayout, KvDtype, KvPool};
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    const HEAD_DIM: usize = 16;

    fn rotated(cfg: &LlamaConfig, x: &[f32], position: usize, rope: &mut RopeScratch) -> Vec<f32> {
        let mut x = x.to_vec();
        let table = RopeTable {
            layer: 0,
            context: 4096,
        };
        let heads = x.len() / HEAD_DIM;
        apply_rope(
            &mut x,
            cfg,
            table,
            heads,
            Positions::From(position),
            1.0,
            rope,
        );
        x
    }

    fn dot(a: &[f32], b: &[f32]) -> f64 {
        a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum()
    }

    /// RoPE makes a score depend on the distance between query and key only: after compaction, a query at the
    /// next position scores every moved key as a query at the old next position scored it where it was (their
    /// distance is unchanged). Values are copied unchanged; keys that did not move (the sinks) keep their bits.
    #[test]
    fn compaction_keeps_every_scores_distance_and_the_values() {
        let cfg = LlamaConfig::attention_shape(2, 4, 2, HEAD_DIM, 4096);
        let kv_dim = cfg.kv_dim();
        let layout = BlockLayout::new(2, cfg.kv_heads, HEAD_DIM, 16, KvDtype::F32, None);
        let mut cache = PagedKv::new(KvPool::new(layout, 1 << 24, false), 4096);
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let mut rope = RopeScratch::default();
        let n = 300;
        cache.reserve(n).unwrap();
        let raw: Vec<Vec<f32>> = (0..2)
            .map(|_| {
                (0..n * kv_dim)
                    .map(|_| rng.random_range(-1.0..1.0))
                    .collect()
            })
            .collect();
        for (layer, raw) in raw.iter().enumerate() {
            let mut keys = raw.clone();
            let table = RopeTable {
                layer,
                context: 4096,
            };
            apply_rope(
                &mut keys,
                &cfg,
                table,
                cfg.kv_heads,
                Positions::From(0),
                1.0,
                &mut rope,
            );
            let values: Vec<f32> = raw.iter().map(|v| v * 0.5).collect();
            cache.write(layer, Positions::From(0), &keys, &values);
        }
        cache.commit(n);
        let keep: Vec<usize> = (0..4).chain(170..300).collect();
        let row = |c: &PagedKv, layer: usize, p: usize| {
            let (mut k, mut v) = (vec![0.0; kv_dim], vec![0.0; kv_dim]);
            read_position(&cfg, c, None, layer, p, &mut k, &mut v);
            (k, v)
        };
        let before: Vec<Vec<(Vec<f32>, Vec<f32>)>> = (0..2)
            .map(|layer| keep.iter().map(|&p| row(&cache, layer, p)).collect())
            .collect();
        // A fork shares the blocks: compaction copies those it writes and leaves the fork's as they were.
        let fork = cache.clone();
        compact(&cfg, &mut cache, &keep, &mut rope).unwrap();
        assert_eq!(cache.len(), keep.len());
        let query: Vec<f32> = (0..HEAD_DIM).map(|_| rng.random_range(-1.0..1.0)).collect();
        let (old_q, new_q) = (
            rotated(&cfg, &query, n, &mut rope),
            rotated(&cfg, &query, keep.len(), &mut rope),
        );
        for layer in 0..2 {
            for (i, &p) in keep.iter().enumerate() {
                let ((old_k, old_v), (new_k, new_v)) =
                    (before[layer][i].clone(), row(&cache, layer, i));
                assert_eq!(
                    row(&fork, layer, p),
                    before[layer][i],
                    "the fork keeps its rows"
                );
                assert_eq!(old_v, new_v, "values copied");
                if i == p {
                    assert_eq!(old_k, new_k, "sinks untouched");
                    continue;
                }
                for h in 0..cfg.kv_heads {
                    let head = h * HEAD_DIM..(h + 1) * HEAD_DIM;
                    let (before, after) =
                        (dot(&old_q, &old_k[head.clone()]), dot(&new_q, &new_k[head]));
                    assert!(
                        (before - after).abs() < 1e-4,
                        "layer {layer} position {p} -> {i}: {before} vs {after}"
                    );
                }
            }
        }
    }
}
