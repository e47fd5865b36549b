//! Timing the engine's attention on given shapes, outside a model: a paged KV cache of `context` positions filled
//! with deterministic random keys and values, and `tokens` queries at the positions after them, run through the
//! same scheduler the forward pass uses ([`crate::attention`]: tiles for prompts, one task per head or a split
//! over ranges of blocks for a decoded token). Used by `seedinfer/bench`'s `timeAttention`.

use crate::attention::{attention, SplitScratch};
use crate::config::LlamaConfig;
use crate::error::{EngineError, Result};
use crate::kv_cache::{KvStore, PagedKv, Positions};
use crate::kv_pool::{BlockLayout, KvDtype, KvPool};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::time::Instant;

/// The shape of a timed attention.
#[derive(Clone, Copy, Debug)]
pub struct AttentionShape {
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    /// Cached positions before the queries.
    pub context: usize,
    /// New queries: 1 is a decode step, more a prompt chunk.
    pub tokens: usize,
    pub dtype: KvDtype,
    pub block_size: usize,
}

/// Most bytes of keys and values a bench may allocate.
const MAX_CACHE_BYTES: usize = 2 << 30;

/// A filled cache, queries and a thread pool, ready to time.
pub struct AttentionBench {
    cfg: LlamaConfig,
    shape: AttentionShape,
    cache: PagedKv,
    queries: Vec<f32>,
    out: Vec<f32>,
    split: SplitScratch,
    pool: rayon::ThreadPool,
    cache_bytes: usize,
}

fn invalid(message: String) -> EngineError {
    EngineError::InvalidOption(message)
}

impl AttentionBench {
    pub fn new(shape: AttentionShape, threads: usize) -> Result<Self> {
        let s = shape;
        if s.heads == 0 || s.kv_heads == 0 || !s.heads.is_multiple_of(s.kv_heads) {
            return Err(invalid(format!(
                "heads ({}) must be a positive multiple of kvHeads ({})",
                s.heads, s.kv_heads
            )));
        }
        if s.head_dim == 0 || !s.head_dim.is_multiple_of(2) || s.head_dim > 1024 {
            return Err(invalid(format!(
                "headDim must be even and in [2, 1024], got {}",
                s.head_dim
            )));
        }
        if s.tokens == 0 || s.block_size == 0 || !s.block_size.is_multiple_of(8) || threads == 0 {
            return Err(invalid(
                "tokens and threads must be at least 1 and the block size a multiple of 8".into(),
            ));
        }
        let positions = s
            .context
            .checked_add(s.tokens)
            .ok_or_else(|| invalid("context + tokens is too large".into()))?;
        let layout = BlockLayout::new(1, s.kv_heads, s.head_dim, s.block_size, s.dtype, None);
        let blocks = positions.div_ceil(s.block_size);
        let cache_bytes = (0..blocks.min(1))
            .map(|i| layout.block_bytes_at(i))
            .sum::<usize>()
            .checked_add(
                blocks
                    .saturating_sub(1)
                    .saturating_mul(layout.block_bytes()),
            )
            .filter(|b| *b <= MAX_CACHE_BYTES)
            .ok_or_else(|| invalid("the cache would need more than 2 GiB".into()))?;
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .map_err(|e| EngineError::Internal(format!("cannot start {threads} threads: {e}")))?;
        let cfg = LlamaConfig::attention_shape(1, s.heads, s.kv_heads, s.head_dim, positions);
        let mut cache = PagedKv::new(KvPool::new(layout, cache_bytes, false), positions);
        cache.reserve(positions)?;
        let mut rng = ChaCha8Rng::seed_from_u64(0x5eed);
        let kv_dim = cfg.kv_dim();
        // Written a block at a time, as a prompt chunk would be.
        for first in (0..positions).step_by(s.block_size) {
            let n = s.block_size.min(positions - first);
            let keys: Vec<f32> = (0..n * kv_dim)
                .map(|_| rng.random_range(-1.0..1.0))
                .collect();
            let values: Vec<f32> = (0..n * kv_dim)
                .map(|_| rng.random_range(-1.0..1.0))
                .collect();
            cache.write(0, Positions::From(first), &keys, &values);
            cache.commit(n);
        }
        let queries = (0..s.tokens * cfg.q_dim())
            .map(|_| rng.random_range(-1.0..1.0))
            .collect();
        Ok(Self {
            out: vec![0.0; s.tokens * cfg.q_dim()],
            cfg,
            shape,
            cache,
            queries,
            split: SplitScratch::default(),
            pool,
            cache_bytes,
        })
    }

    /// Runs the attention `iterations` times; returns the seconds it took.
    pub fn run(&mut self, iterations: usize) -> f64 {
        let Self {
            cfg,
            shape,
            cache,
            queries,
            out,
            split,
            pool,
            ..
        } = self;
        pool.install(|| {
            let start = Instant::now();
            for _ in 0..iterations {
                attention(
                    cfg,
                    queries,
                    &*cache,
                    0,
                    Positions::From(shape.context),
                    None,
                    None,
                    shape.tokens,
                    out,
                    split,
                );
            }
            start.elapsed().as_secs_f64()
        })
    }

    /// Bytes of keys and values the cache holds (all of them are read by the last query).
    pub fn cache_bytes(&self) -> usize {
        self.cache_bytes
    }

    /// The outputs of the last run, `[tokens, heads * head_dim]`.
    pub fn output(&self) -> &[f32] {
        &self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(context: usize, tokens: usize, dtype: KvDtype) -> AttentionShape {
        AttentionShape {
            heads: 4,
            kv_heads: 2,
            head_dim: 64,
            context,
            tokens,
            dtype,
            block_size: 32,
        }
    }

    #[test]
    fn timed_attention_gives_the_bits_of_any_thread_count() {
        for dtype in [KvDtype::F32, KvDtype::F16, KvDtype::Int8] {
            for (context, tokens) in [(0, 1), (300, 1), (100, 7), (40, 64)] {
                let mut one = AttentionBench::new(shape(context, tokens, dtype), 1).unwrap();
                let mut two = AttentionBench::new(shape(context, tokens, dtype), 2).unwrap();
                assert!(one.run(1) >= 0.0 && two.run(2) >= 0.0);
                assert!(one.output().iter().all(|v| v.is_finite() && *v != 0.0));
                assert_eq!(one.output(), two.output(), "{dtype:?} {context} {tokens}");
            }
        }
    }

    #[test]
    fn bad_shapes_are_invalid_options() {
        let mut s = shape(10, 1, KvDtype::F16);
        s.kv_heads = 3;
        let err = AttentionBench::new(s, 1).err().unwrap();
        assert_eq!(err.code(), "INVALID_OPTION");
        let mut s = shape(1 << 40, 1, KvDtype::F32);
        s.head_dim = 1024;
        assert_eq!(
            AttentionBench::new(s, 1).err().unwrap().code(),
            "INVALID_OPTION"
        );
    }
}
