//! ThinK, query-driven key-channel pruning (METHODS.md, "ThinK"): once a prompt is prefilled, each layer's KV heads
//! keep only the key channels its latest queries use, and the cached keys of every older token are stored with
//! those channels only, so the cache really shrinks.
//!
//! Per layer and KV head, channel `c` scores `mean over the last `recent` queries (every query head of the GQA
//! group) of q_c²` × `mean over the cached keys of k_c²` (keys as stored, after RoPE, with an int8 cache's channel
//! scales put back); the lowest `⌊ratio · head_dim⌋` are dropped, rounded down to whole eights of storage (the
//! vector kernels read keys eight channels at a time: with 64-channel heads, λ = 0.4 drops 24 channels, not 25).
//! Every full block wholly before the last `recent` tokens then holds its keys as the kept channels only (`KvBlock`
//! with [`KeptChannels`], in place when no one else holds the block, else a pruned copy while the prefix cache keeps
//! the original for other sessions); the recent tokens and every later one (decode) keep full keys. Attention
//! reads a pruned block with the queries gathered to its kept channels (`attention.rs`): `q[kept] · k[kept]`, no
//! zero-filled rebuild. Later prompts of the session prune the blocks they complete with channels chosen from
//! their own queries; a block keeps the channels it was pruned with.
//!
//! Sliding-window layers keep whole keys (their queries see a few blocks at most; their old rows are given back).
//!
//! Exactness switch: `ratio = 0` drops nothing and every result is the unpruned session's.

use crate::config::LlamaConfig;
use crate::error::{EngineError, Result};
use crate::kv_cache::{KvStore, PagedKv};
use seedinfer_kernels::attention::kv_rows;
use std::sync::Arc;

/// A session's ThinK settings (`kvCache: { think: { ratio, recent } }`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Think {
    /// Share of key channels dropped (λ).
    pub ratio: f64,
    /// Latest tokens whose queries score the channels and whose keys stay whole.
    pub recent: usize,
}

impl Default for Think {
    fn default() -> Self {
        Self {
            ratio: 0.4,
            recent: 32,
        }
    }
}

/// Vector kernels read key rows in steps of this many channels.
const CHANNEL_STEP: usize = 8;

impl Think {
    pub fn validate(&self) -> Result<()> {
        if !(0.0..1.0).contains(&self.ratio) {
            return Err(EngineError::InvalidOption(format!(
                "kvCache.think.ratio must be in [0, 1), got {}",
                self.ratio
            )));
        }
        if !(1..=4096).contains(&self.recent) {
            return Err(EngineError::InvalidOption(format!(
                "kvCache.think.recent must be in [1, 4096], got {}",
                self.recent
            )));
        }
        Ok(())
    }

    /// Key channels kept of `head_dim`: all but `⌊ratio · head_dim⌋`, rounded up to a multiple of eight.
    pub fn kept_channels(&self, head_dim: usize) -> usize {
        let dropped = (self.ratio * head_dim as f64).floor() as usize;
        (head_dim - dropped.min(head_dim))
            .next_multiple_of(CHANNEL_STEP)
            .clamp(1, head_dim)
    }
}

/// The key channels a pruned block keeps: per (layer, KV head), `width` channel indices in ascending order.
#[derive(Debug, PartialEq, Eq)]
pub struct KeptChannels {
    pub width: usize,
    kv_heads: usize,
    index: Vec<u16>,
}

impl KeptChannels {
    /// Kept channels read from a session file: per (layer, KV head), `width` distinct channels below `head_dim`
    /// in ascending order; `None` if `index` is not that.
    pub(crate) fn from_index(
        width: usize,
        layers: usize,
        kv_heads: usize,
        head_dim: usize,
        index: Vec<u16>,
    ) -> Option<Self> {
        let valid = (1..=head_dim).contains(&width)
            && index.len() == layers * kv_heads * width
            && index.chunks_exact(width).all(|group| {
                group.windows(2).all(|w| w[0] < w[1])
                    && group.last().is_some_and(|&c| usize::from(c) < head_dim)
            });
        valid.then_some(Self {
            width,
            kv_heads,
            index,
        })
    }

    /// Every (layer, KV head)'s kept channels, in that order.
    pub(crate) fn index(&self) -> &[u16] {
        &self.index
    }

    /// The kept channels of one layer's KV head.
    pub fn of(&self, layer: usize, kv_head: usize) -> &[u16] {
        let at = (layer * self.kv_heads + kv_head) * self.width;
        &self.index[at..at + self.width]
    }
}

/// The queries of the latest prompt positions, per layer, recorded while a prompt is prefilled (the attention
/// operation hands every layer's rotated queries to [`QueryTap::record`]).
#[derive(Default)]
pub(crate) struct QueryTap {
    /// Rows kept per layer; 0: not recording.
    recent: usize,
    /// Per layer: the latest rows (at most `recent`), `[rows, q_dim]`.
    rows: Vec<Vec<f32>>,
}

impl QueryTap {
    /// Starts recording the latest `recent` queries of each layer (`None`: stops).
    pub(crate) fn start(&mut self, recent: Option<usize>) {
        self.recent = recent.unwrap_or(0);
        self.rows.clear();
    }

    /// Whether it records.
    pub(crate) fn recording(&self) -> bool {
        self.recent > 0
    }

    /// Keeps the latest of `q` (`[tokens, q_dim]`, the rotated queries of `layer`).
    pub(crate) fn record(&mut self, layer: usize, q: &[f32], q_dim: usize) {
        if self.recent == 0 {
            return;
        }
        if self.rows.len() <= layer {
            self.rows.resize(layer + 1, Vec::new());
        }
        let rows = &mut self.rows[layer];
        let take = q.len().min(self.recent * q_dim);
        rows.extend_from_slice(&q[q.len() - take..]);
        let extra = rows.len().saturating_sub(self.recent * q_dim);
        rows.drain(..extra);
    }

    /// The recorded rows per layer; recording stops.
    pub(crate) fn finish(&mut self) -> Vec<Vec<f32>> {
        self.recent = 0;
        std::mem::take(&mut self.rows)
    }
}

/// What a pruning did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ThinkReport {
    /// Blocks whose keys were pruned now.
    pub pruned_blocks: usize,
    /// Key channels kept per KV head.
    pub kept_channels: usize,
}

/// Prunes the keys of `cache`'s full blocks before its last `think.recent` positions that are not pruned yet, with
/// the channels `queries` (per layer, the latest rotated queries, `[rows, q_dim]`) and those blocks' keys choose.
/// Nothing happens when the settings keep every channel or no block qualifies. Fails with `KV_BUDGET_EXCEEDED`
/// when a shared block's pruned copy does not fit (the blocks pruned before stay pruned; the cache stays valid).
pub(crate) fn prune(
    cfg: &LlamaConfig,
    think: &Think,
    cache: &mut PagedKv,
    queries: &[Vec<f32>],
) -> Result<ThinkReport> {
    let (hd, kv_heads, layers) = (cfg.head_dim, cfg.kv_heads, cfg.layers);
    let width = think.kept_channels(hd);
    let bs = cache.block_size();
    let blocks: Vec<usize> = (0..cache.len().saturating_sub(think.recent) / bs)
        .filter(|&b| !cache.block_pruned(b))
        .collect();
    if width == hd || blocks.is_empty() || queries.len() < layers {
        return Ok(ThinkReport::default());
    }
    let mut index = Vec::with_capacity(layers * kv_heads * width);
    let (mut key, mut value) = (vec![0.0f32; hd], vec![0.0f32; hd]);
    for (layer, q) in queries.iter().enumerate().take(layers) {
        if cfg.layer_window(layer).is_some() {
            // A sliding-window layer keeps whole keys: its entries (the first channels) are never read.
            for _ in 0..kv_heads {
                index.extend(0..width as u16);
            }
            continue;
        }
        let key_channels = cache.key_channels(layer);
        for h in 0..kv_heads {
            let query_energy = query_energy(cfg, q, h);
            let mut key_energy = vec![0.0f64; hd];
            let mut count = 0usize;
            for &b in &blocks {
                let kv = cache.head(layer, h, b, bs);
                // An int8 cache stores the keys of every block but the first divided by its channel scales.
                let scales = key_channels
                    .filter(|_| b > 0)
                    .map(|c| &c[h * hd..(h + 1) * hd]);
                for p in 0..bs {
                    kv_rows(&kv, p, &mut key, &mut value);
                    for (c, (e, k)) in key_energy.iter_mut().zip(&key).enumerate() {
                        let k = f64::from(*k) * scales.map_or(1.0, |s| f64::from(s[c]));
                        *e += k * k;
                    }
                }
                count += bs;
            }
            let mut order: Vec<usize> = (0..hd).collect();
            let score = |c: usize| query_energy[c] * key_energy[c] / count as f64;
            // Highest score first; ties keep the lower channel.
            order.sort_by(|&a, &b| score(b).total_cmp(&score(a)).then(a.cmp(&b)));
            let mut kept: Vec<u16> = order[..width].iter().map(|&c| c as u16).collect();
            kept.sort_unstable();
            index.extend(kept);
        }
    }
    let kept = Arc::new(KeptChannels {
        width,
        kv_heads,
        index,
    });
    cache.prune_keys(&blocks, &kept)?;
    Ok(ThinkReport {
        pruned_blocks: blocks.len(),
        kept_channels: width,
    })
}

/// Per channel of KV head `kv_head`: the mean over the rows of `q` and the query heads of its group of q_c².
fn query_energy(cfg: &LlamaConfig, q: &[f32], kv_head: usize) -> Vec<f64> {
    let (hd, q_dim, group) = (cfg.head_dim, cfg.q_dim(), cfg.heads / cfg.kv_heads);
    let mut energy = vec![0.0f64; hd];
    let rows = q.len() / q_dim;
    for row in q.chunks_exact(q_dim) {
        for head in kv_head * group..(kv_head + 1) * group {
            for (e, x) in energy.iter_mut().zip(&row[head * hd..(head + 1) * hd]) {
                *e += f64::from(*x) * f64::from(*x);
            }
        }
    }
    energy
        .iter_mut()
        .for_each(|e| *e /= (rows.max(1) * group) as f64);
    energy
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attention::{attention, SplitScratch};
    use crate::kv_cache::{ContiguousKv, Positions};
    use crate::kv_pool::{BlockLayout, KvDtype, KvPool};
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    const HEAD_DIM: usize = 64;
    const BLOCK: usize = 32;

    /// Random values whose channels differ in size (every fifth channel three times larger, every seventh a tenth).
    fn rows(rng: &mut ChaCha8Rng, count: usize) -> Vec<f32> {
        (0..count * HEAD_DIM)
            .map(|i| {
                let c = i % HEAD_DIM;
                let size = if c.is_multiple_of(5) {
                    3.0
                } else if c.is_multiple_of(7) {
                    0.1
                } else {
                    1.0
                };
                rng.random_range(-1.0f32..1.0) * size
            })
            .collect()
    }

    /// A paged cache of `len` random positions of `cfg`'s layers, and per layer `recent` random query rows.
    fn scene(
        cfg: &LlamaConfig,
        dtype: KvDtype,
        len: usize,
        recent: usize,
    ) -> (PagedKv, Vec<Vec<f32>>) {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let layout = BlockLayout::new(cfg.layers, cfg.kv_heads, HEAD_DIM, BLOCK, dtype, None);
        let pool = KvPool::new(layout, 1 << 30, false);
        let mut cache = PagedKv::new(pool, 4096);
        cache.reserve(len).unwrap();
        for layer in 0..cfg.layers {
            let keys = rows(&mut rng, len * cfg.kv_heads);
            let values = rows(&mut rng, len * cfg.kv_heads);
            cache.write(layer, Positions::From(0), &keys, &values);
        }
        cache.commit(len);
        let queries = (0..cfg.layers)
            .map(|_| rows(&mut rng, recent * cfg.heads))
            .collect();
        (cache, queries)
    }

    /// The keys and values `cache` holds, as f32 rows of whole keys: a pruned block's dropped channels zero, an int8
    /// cache's channel scales multiplied back in.
    fn as_read(cfg: &LlamaConfig, cache: &PagedKv) -> ContiguousKv {
        let mut out = ContiguousKv::new(cfg.layers, cfg.kv_dim(), HEAD_DIM, BLOCK);
        let (mut key, mut value) = (vec![0.0; HEAD_DIM], vec![0.0; HEAD_DIM]);
        for layer in 0..cfg.layers {
            let (mut keys, mut values) = (Vec::new(), Vec::new());
            for p in 0..cache.len() {
                for h in 0..cfg.kv_heads {
                    let (b, i) = (p / BLOCK, p % BLOCK);
                    let kv = cache.head(layer, h, b, i + 1);
                    let width = kv.key_dim;
                    kv_rows(&kv, i, &mut key[..width], &mut value);
                    let mut whole = vec![0.0f32; HEAD_DIM];
                    match cache.kept_channels(layer, h, b) {
                        Some(kept) => kept
                            .iter()
                            .zip(&key)
                            .for_each(|(&c, &k)| whole[usize::from(c)] = k),
                        None => whole.copy_from_slice(&key),
                    }
                    if let Some(scales) = cache.key_channels(layer).filter(|_| b > 0) {
                        whole
                            .iter_mut()
                            .zip(&scales[h * HEAD_DIM..])
                            .for_each(|(k, s)| *k *= s);
                    }
                    keys.extend(whole);
                    values.extend_from_slice(&value);
                }
            }
            out.write(layer, Positions::From(0), &keys, &values);
        }
        out.commit(cache.len());
        out
    }

    fn attend<C: KvStore>(cfg: &LlamaConfig, cache: &C, q: &[f32], tokens: usize) -> Vec<f32> {
        let mut out = vec![0.0; tokens * cfg.q_dim()];
        let first = cache.len() - tokens;
        let mut split = SplitScratch::default();
        attention(
            cfg,
            q,
            cache,
            1,
            Positions::From(first),
            None,
            None,
            tokens,
            &mut out,
            &mut split,
        );
        out
    }

    /// Pruned blocks attended with gathered queries give the attention over whole keys whose dropped channels are
    /// zero (decode, split over ranges of blocks past 256 positions, and a prompt tile), for f32, f16 and int8
    /// caches (whose channel scales apply before the gathering); the bytes held shrink by the dropped channels.
    #[test]
    fn pruned_blocks_attend_as_their_kept_channels() {
        let cfg = LlamaConfig::attention_shape(2, 6, 2, HEAD_DIM, 4096);
        let think = Think::default();
        for dtype in [KvDtype::F32, KvDtype::F16, KvDtype::Int8] {
            let len = 300;
            let (mut cache, queries) = scene(&cfg, dtype, len, think.recent);
            let before = cache.held_bytes();
            let report = prune(&cfg, &think, &mut cache, &queries).unwrap();
            assert_eq!(
                report,
                ThinkReport {
                    pruned_blocks: (len - think.recent) / BLOCK,
                    kept_channels: 40
                }
            );
            let element = if dtype == KvDtype::F32 { 4 } else { 2 };
            // An int8 cache's first block is f16; its others hold one byte per value.
            let saved: usize = (0..report.pruned_blocks)
                .map(|b| {
                    let bytes = if dtype == KvDtype::Int8 && b > 0 {
                        1
                    } else {
                        element
                    };
                    cfg.layers * cfg.kv_heads * BLOCK * (HEAD_DIM - 40) * bytes
                })
                .sum();
            assert_eq!(cache.held_bytes(), before - saved, "{dtype:?}");
            let zeroed = as_read(&cfg, &cache);
            let mut rng = ChaCha8Rng::seed_from_u64(11);
            for tokens in [1, 24] {
                let q = rows(&mut rng, tokens * cfg.heads);
                let got = attend(&cfg, &cache, &q, tokens);
                let want = attend(&cfg, &zeroed, &q, tokens);
                for (g, w) in got.iter().zip(&want) {
                    assert!(
                        (g - w).abs() <= 1e-4 * w.abs().max(1.0),
                        "{dtype:?} tokens={tokens}: {g} vs {w}"
                    );
                }
            }
            // Pruning again finds nothing new.
            assert_eq!(
                prune(&cfg, &think, &mut cache, &queries).unwrap(),
                ThinkReport::default()
            );
        }
    }

    /// The kept channels are the highest by METHODS.md's score, written out: mean over the recent queries of the
    /// group of q_c², times mean over the keys of k_c².
    #[test]
    fn kept_channels_score_queries_and_keys() {
        let cfg = LlamaConfig::attention_shape(2, 6, 2, HEAD_DIM, 4096);
        let think = Think::default();
        let (mut cache, queries) = scene(&cfg, KvDtype::F32, 200, think.recent);
        let blocks = (200 - think.recent) / BLOCK;
        let reference = as_read(&cfg, &cache);
        let group = cfg.heads / cfg.kv_heads;
        let mut want = Vec::new();
        for (layer, q) in queries.iter().enumerate() {
            for h in 0..cfg.kv_heads {
                let score = |c: usize| {
                    let qe: f64 = q
                        .chunks_exact(cfg.q_dim())
                        .flat_map(|row| {
                            (h * group..(h + 1) * group).map(move |g| row[g * HEAD_DIM + c])
                        })
                        .map(|x| f64::from(x) * f64::from(x))
                        .sum();
                    let (mut k, mut v) = (vec![0.0; HEAD_DIM], vec![0.0; HEAD_DIM]);
                    let ke: f64 = (0..blocks * BLOCK)
                        .map(|p| {
                            kv_rows(&reference.head(layer, h, 0, p + 1), p, &mut k, &mut v);
                            f64::from(k[c]) * f64::from(k[c])
                        })
                        .sum();
                    qe * ke
                };
                let mut channels: Vec<usize> = (0..HEAD_DIM).collect();
                channels.sort_by(|&a, &b| score(b).total_cmp(&score(a)));
                let mut kept: Vec<u16> = channels[..40].iter().map(|&c| c as u16).collect();
                kept.sort_unstable();
                want.push(kept);
            }
        }
        prune(&cfg, &think, &mut cache, &queries).unwrap();
        for layer in 0..cfg.layers {
            for h in 0..cfg.kv_heads {
                assert_eq!(
                    cache.kept_channels(layer, h, 0).unwrap(),
                    want[layer * cfg.kv_heads + h].as_slice()
                );
            }
        }
        // The large channels (every fifth) are kept, the small ones (every seventh, not fifth) dropped.
        let kept = cache.kept_channels(0, 0, 0).unwrap();
        assert!((0..HEAD_DIM as u16).step_by(5).all(|c| kept.contains(&c)));
        assert!((7..HEAD_DIM as u16)
            .step_by(7)
            .filter(|c| c % 5 != 0)
            .all(|c| !kept.contains(&c)));
    }

    #[test]
    fn kept_channels_round_up_to_whole_eights() {
        let think = |ratio| Think { ratio, recent: 32 };
        assert_eq!(think(0.0).kept_channels(64), 64);
        assert_eq!(think(0.4).kept_channels(64), 40);
        assert_eq!(think(0.5).kept_channels(64), 32);
        assert_eq!(think(0.4).kept_channels(128), 80);
        assert_eq!(think(0.05).kept_channels(64), 64);
        assert_eq!(think(0.99).kept_channels(8), 8);
        assert!(think(1.0).validate().is_err());
        assert!(think(-0.1).validate().is_err());
        assert!(Think::default().validate().is_ok());
    }

    #[test]
    fn the_tap_keeps_the_latest_rows_of_each_layer() {
        let mut tap = QueryTap::default();
        tap.record(0, &[1.0, 2.0], 2);
        assert!(tap.finish().is_empty(), "records nothing until started");
        tap.start(Some(2));
        tap.record(0, &[1.0, 1.0, 2.0, 2.0], 2);
        tap.record(1, &[5.0, 5.0], 2);
        tap.record(0, &[3.0, 3.0], 2);
        assert_eq!(tap.finish(), vec![vec![2.0, 2.0, 3.0, 3.0], vec![5.0, 5.0]]);
    }
}
