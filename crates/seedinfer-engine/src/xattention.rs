//! XAttention (METHODS.md, "XAttention"): block-sparse attention for the prefill. Each prompt chunk's queries are
//! split into blocks of `block_size` rows, the cached keys likewise; a query block attends only to the key blocks
//! that an antidiagonal estimate says hold most of its attention mass. The estimate is cheap: with stride S, the
//! dot product of a query row group (S consecutive queries, concatenated in reverse order) with a key row group (S
//! consecutive keys, concatenated in order) sums one antidiagonal of the S x S block of scores, so one product of
//! length S·d stands for S² scores. Scaled by the attention scale over S, causally masked, softmaxed per query
//! group and summed into block scores, it ranks the key blocks of each query block; the sink block (0) and the
//! diagonal block are always kept, then the best until their share of the row's mass reaches `threshold`. The
//! query heads of a GQA group share one selection (their scores are summed).
//!
//! Attention then runs exactly, with the same kernels, over the selected blocks only (`crate::attention` skips the
//! others entirely); decode steps stay dense, and so do sliding-window layers (a query there sees its window only,
//! already a few blocks at most: the global layers are where a long prompt's attention grows). Rows are the ones a query sees (`KvStore::visible`), so under token
//! pruning blocks are counted over the positions a layer holds. Exactness switch: `threshold >= 1` computes no
//! selection and gives the dense prefill's bits.

use crate::config::LlamaConfig;
use crate::error::{EngineError, Result};
use crate::kv_cache::{KvStore, Positions};
use rayon::prelude::*;
use seedinfer_kernels::attention::{kv_rows, widened, KvRows};

/// XAttention's settings for a prefill.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct XAttention {
    /// Rows per antidiagonal group (S).
    pub stride: usize,
    /// Rows per query and key block (B): a multiple of the stride and of the cache's block size.
    pub block_size: usize,
    /// Share of each query block's estimated attention mass the selected key blocks must reach (τ, in (0, 1];
    /// 1 selects every block: the dense prefill).
    pub threshold: f64,
    /// The query block holding the prompt's last token attends to every block (not in the method as published).
    /// Its estimate sums over the block's queries, mostly text before the question, which out-vote the few that
    /// ask it: on passkey prompts (bench:longctx, SmolLM2, 2K) the published selection found 2 of 9 keys where
    /// dense found 7, and this 7, for a little more density (0.53 -> 0.60 at 2K, less at longer prompts).
    pub dense_last_block: bool,
}

impl Default for XAttention {
    fn default() -> Self {
        Self {
            stride: Self::DEFAULT_STRIDE,
            block_size: Self::DEFAULT_BLOCK_SIZE,
            threshold: Self::DEFAULT_THRESHOLD,
            dense_last_block: true,
        }
    }
}

impl XAttention {
    pub const DEFAULT_STRIDE: usize = 8;
    pub const DEFAULT_BLOCK_SIZE: usize = 128;
    pub const DEFAULT_THRESHOLD: f64 = 0.9;

    /// Checks the settings against a cache of `cache_block` positions per block.
    pub fn validate(&self, cache_block: usize) -> Result<()> {
        let invalid = |m: String| Err(EngineError::InvalidOption(m));
        if !(1..=64).contains(&self.stride) {
            return invalid(format!(
                "xattention stride must be 1 to 64, got {}",
                self.stride
            ));
        }
        if self.block_size == 0
            || !self.block_size.is_multiple_of(self.stride)
            || !self.block_size.is_multiple_of(cache_block)
            || self.block_size > 8192
        {
            return invalid(format!(
                "xattention blockSize must be a multiple of the stride ({}) and of the cache's block size ({cache_block}), at most 8192; got {}",
                self.stride, self.block_size
            ));
        }
        if !(self.threshold > 0.0 && self.threshold <= 1.0) {
            return invalid(format!(
                "xattention threshold must be in (0, 1], got {}",
                self.threshold
            ));
        }
        Ok(())
    }

    /// Whether every block is selected (the exactness switch): no estimate is computed.
    pub fn is_dense(&self) -> bool {
        self.threshold >= 1.0
    }
}

/// The key blocks each query block of one chunk attends to, per KV head.
pub(crate) struct BlockMask {
    block_size: usize,
    first_query_block: usize,
    query_blocks: usize,
    key_blocks: usize,
    /// `[kv_head][query block - first_query_block][key block]`.
    shown: Vec<bool>,
}

impl BlockMask {
    /// Whether the query at row `query_row` of KV head `kv_head`'s group attends to the key at `key_row`.
    #[inline]
    pub(crate) fn shows(&self, kv_head: usize, query_row: usize, key_row: usize) -> bool {
        let qb = query_row / self.block_size - self.first_query_block;
        let kb = key_row / self.block_size;
        debug_assert!(qb < self.query_blocks && kb < self.key_blocks);
        self.shown[(kv_head * self.query_blocks + qb) * self.key_blocks + kb]
    }
}

/// A prefill's XAttention: its settings while a prompt runs, the last chunk's mask, buffers, and the blocks
/// counted so far (for the report).
#[derive(Default)]
pub(crate) struct XAttentionState {
    pub(crate) active: Option<XAttention>,
    /// The prompt's last position: its query block attends to every block.
    pub(crate) last_position: usize,
    mask: Option<BlockMask>,
    /// One per KV head: the estimate for each head's group runs as its own parallel task.
    heads: Vec<HeadScratch>,
    /// Query block x key block pairs attended, and those causal attention would attend, over the prefill.
    pub(crate) selected_blocks: u64,
    pub(crate) causal_blocks: u64,
}

/// One KV head's buffers for the estimate.
#[derive(Default)]
struct HeadScratch {
    /// Key row groups: `[key groups, stride * head_dim]`.
    keys: Vec<f32>,
    /// One cache block's keys and values widened from f16.
    wide_keys: Vec<f32>,
    wide_values: Vec<f32>,
    value: Vec<f32>,
    /// Query row groups of each head of the group: `[heads of group, query groups, stride * head_dim]`.
    queries: Vec<f32>,
    scores: Vec<f32>,
    block_scores: Vec<f64>,
    order: Vec<usize>,
}

/// The shape of one chunk's estimate.
struct Shape {
    stride: usize,
    block: usize,
    threshold: f64,
    last_row: usize,
    first_group: usize,
    key_groups: usize,
    first_query_block: usize,
    query_blocks: usize,
    key_blocks: usize,
    /// The query block that attends to every block (the prompt's last), if in this chunk.
    dense_block: Option<usize>,
}

impl XAttentionState {
    /// Starts a prefill with `settings` (`None`: dense), counting from zero.
    pub(crate) fn start(&mut self, settings: Option<XAttention>, last_position: usize) {
        self.active = settings.filter(|x| !x.is_dense());
        self.last_position = last_position;
        self.selected_blocks = 0;
        self.causal_blocks = 0;
    }

    /// Ends the prefill: later passes (decode steps) attend densely. Returns the blocks counted.
    pub(crate) fn finish(&mut self) -> (u64, u64) {
        self.active = None;
        self.mask = None;
        (self.selected_blocks, self.causal_blocks)
    }

    /// The block mask for the `tokens` queries `q` (at `positions`) of `layer`, or `None` when every block is
    /// attended (no prefill running, fewer tokens than a stride, or every query block has only its sink and
    /// diagonal blocks to see).
    pub(crate) fn select<C: KvStore>(
        &mut self,
        cfg: &LlamaConfig,
        q: &[f32],
        cache: &C,
        layer: usize,
        positions: Positions,
        tokens: usize,
    ) -> Option<&BlockMask> {
        let x = self.active?;
        if tokens < x.stride || cfg.layer_window(layer).is_some() {
            return None;
        }
        let rows: Vec<usize> = (0..tokens)
            .map(|t| cache.visible(positions.at(t)) - 1)
            .collect();
        let (first_row, last_row) = (rows[0], rows[tokens - 1]);
        let (stride, block) = (x.stride, x.block_size);
        let shape = Shape {
            stride,
            block,
            threshold: x.threshold,
            last_row,
            first_group: first_row / stride,
            key_groups: last_row / stride + 1,
            first_query_block: first_row / block,
            query_blocks: last_row / block + 1 - first_row / block,
            key_blocks: last_row / block + 1,
            dense_block: (x.dense_last_block && positions.at(tokens - 1) == self.last_position)
                .then_some(last_row / block),
        };
        let causal: u64 = (shape.first_query_block..shape.key_blocks)
            .map(|qb| qb as u64 + 1)
            .sum::<u64>()
            * cfg.kv_heads as u64;
        self.causal_blocks += causal;
        if shape.key_blocks <= 2 {
            self.selected_blocks += causal;
            return None;
        }
        let per_head = shape.query_blocks * shape.key_blocks;
        let mut mask = BlockMask {
            block_size: block,
            first_query_block: shape.first_query_block,
            query_blocks: shape.query_blocks,
            key_blocks: shape.key_blocks,
            shown: vec![false; cfg.kv_heads * per_head],
        };
        self.heads.resize_with(cfg.kv_heads, HeadScratch::default);
        let shape = &shape;
        let rows = &rows;
        self.selected_blocks += mask
            .shown
            .par_chunks_mut(per_head)
            .zip(self.heads.par_iter_mut())
            .enumerate()
            .map(|(kv_head, (shown, s))| {
                s.estimate(cfg, shape, q, rows, cache, layer, kv_head);
                s.select(shape, shown)
            })
            .sum::<u64>();
        self.mask = Some(mask);
        self.mask.as_ref()
    }
}

impl HeadScratch {
    /// The block scores of KV head `kv_head`'s group (into `block_scores`, `[query blocks, key blocks]`): each
    /// query group's softmax over the key groups it may see, of its antidiagonal sums, summed per block and over
    /// the group's heads.
    #[allow(clippy::too_many_arguments)]
    fn estimate<C: KvStore>(
        &mut self,
        cfg: &LlamaConfig,
        shape: &Shape,
        q: &[f32],
        rows: &[usize],
        cache: &C,
        layer: usize,
        kv_head: usize,
    ) {
        let (hd, group, q_dim) = (cfg.head_dim, cfg.heads / cfg.kv_heads, cfg.q_dim());
        let (stride, key_groups) = (shape.stride, shape.key_groups);
        let width = stride * hd;
        let query_groups = key_groups - shape.first_group;
        // Key row groups: S consecutive keys each, concatenated (zeros past the last row).
        self.keys.clear();
        self.keys.resize(key_groups * width, 0.0);
        self.value.resize(hd, 0.0);
        let channels = cache
            .key_channels(layer)
            .map(|c| &c[kv_head * hd..(kv_head + 1) * hd]);
        let bs = cache.block_size();
        for b in 0..(shape.last_row + 1).div_ceil(bs) {
            let n = bs.min(shape.last_row + 1 - b * bs);
            let kv = cache.head(layer, kv_head, b, n);
            let out = &mut self.keys[b * bs * hd..(b * bs + n) * hd];
            if let Some(wide) = widened(&kv, n, &mut self.wide_keys, &mut self.wide_values) {
                let KvRows::F32(keys) = wide.keys else {
                    unreachable!("widened rows are f32")
                };
                out.copy_from_slice(keys);
            } else {
                for (i, key) in out.chunks_exact_mut(hd).enumerate() {
                    kv_rows(&kv, i, key, &mut self.value);
                }
            }
            if let (true, Some(channels)) = (b > 0, channels) {
                for key in out.chunks_exact_mut(hd) {
                    key.iter_mut().zip(channels).for_each(|(k, c)| *k *= c);
                }
            }
        }
        // Query row groups of each head of the group: S consecutive queries in reverse order (zeros for rows
        // outside the chunk), so that a product with a key group sums an antidiagonal.
        self.queries.clear();
        self.queries.resize(group * query_groups * width, 0.0);
        for (t, &r) in rows.iter().enumerate() {
            let (g, s) = (r / stride - shape.first_group, stride - 1 - r % stride);
            for h in 0..group {
                let head = kv_head * group + h;
                let at = (h * query_groups + g) * width + s * hd;
                self.queries[at..at + hd].copy_from_slice(&q[t * q_dim + head * hd..][..hd]);
            }
        }
        self.scores.resize(group * query_groups * key_groups, 0.0);
        seedinfer_kernels::dense_f32::matmul(
            &self.keys,
            key_groups,
            width,
            &self.queries,
            group * query_groups,
            &mut self.scores,
        );
        // Softmax of each query group over the key groups it may see, summed into block scores.
        let scale = cfg.attention_scale / stride as f32;
        let (block, key_blocks) = (shape.block, shape.key_blocks);
        self.block_scores.clear();
        self.block_scores
            .resize(shape.query_blocks * key_blocks, 0.0);
        for (i, scores) in self.scores.chunks_exact_mut(key_groups).enumerate() {
            let g = shape.first_group + i % query_groups;
            let seen = &mut scores[..=g];
            let max = seen.iter().fold(f32::NEG_INFINITY, |m, &s| m.max(s));
            let mut sum = 0.0f64;
            for s in seen.iter_mut() {
                *s = ((*s - max) * scale).exp();
                sum += *s as f64;
            }
            let qb = g * stride / block - shape.first_query_block;
            let row_scores = &mut self.block_scores[qb * key_blocks..(qb + 1) * key_blocks];
            for (kb, weights) in seen.chunks(block / stride).enumerate() {
                row_scores[kb] += weights.iter().map(|&w| w as f64).sum::<f64>() / sum;
            }
        }
    }

    /// Marks in `shown` (`[query blocks, key blocks]`) the key blocks each query block attends to: the sink, the
    /// diagonal, then the best-scored until `threshold` of the row's mass. Returns how many.
    fn select(&mut self, shape: &Shape, shown: &mut [bool]) -> u64 {
        let key_blocks = shape.key_blocks;
        let mut selected = 0;
        for qb in 0..shape.query_blocks {
            let diagonal = shape.first_query_block + qb;
            let row_scores = &self.block_scores[qb * key_blocks..][..=diagonal];
            let shown = &mut shown[qb * key_blocks..][..=diagonal];
            if shape.dense_block == Some(diagonal) {
                shown.fill(true);
                selected += shown.len() as u64;
                continue;
            }
            let total: f64 = row_scores.iter().sum();
            shown[0] = true;
            shown[diagonal] = true;
            let mut mass = row_scores[0]
                + if diagonal > 0 {
                    row_scores[diagonal]
                } else {
                    0.0
                };
            self.order.clear();
            self.order.extend(1..diagonal);
            self.order
                .sort_by(|&a, &b| row_scores[b].total_cmp(&row_scores[a]));
            for &kb in &self.order {
                if mass >= shape.threshold * total {
                    break;
                }
                shown[kb] = true;
                mass += row_scores[kb];
            }
            selected += shown.iter().filter(|&&s| s).count() as u64;
        }
        selected
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attention::{attention, SplitScratch};
    use crate::kv_cache::ContiguousKv;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    const HEAD_DIM: usize = 16;

    fn config(heads: usize, kv_heads: usize) -> LlamaConfig {
        LlamaConfig::attention_shape(1, heads, kv_heads, HEAD_DIM, 4096)
    }

    /// A cache of `len` positions whose keys lean towards one of a few directions per 64-position stretch, and
    /// `tokens` queries at the end leaning towards them too: attention mass concentrates on some blocks.
    fn scene(cfg: &LlamaConfig, len: usize, tokens: usize, seed: u64) -> (ContiguousKv, Vec<f32>) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let directions: Vec<Vec<f32>> = (0..4)
            .map(|_| (0..HEAD_DIM).map(|_| rng.random_range(-2.0..2.0)).collect())
            .collect();
        let row = |stretch: usize, rng: &mut ChaCha8Rng| -> Vec<f32> {
            let d = &directions[(stretch * 7 + 3) % 4];
            (0..HEAD_DIM)
                .map(|c| d[c] * 0.8 + rng.random_range(-1.0..1.0))
                .collect()
        };
        let mut cache = ContiguousKv::new(1, cfg.kv_dim(), HEAD_DIM, 16);
        for p in 0..len {
            let keys: Vec<f32> = (0..cfg.kv_heads)
                .flat_map(|_| row(p / 64, &mut rng))
                .collect();
            let values: Vec<f32> = (0..cfg.kv_dim())
                .map(|_| rng.random_range(-1.0..1.0))
                .collect();
            cache.write(0, Positions::From(p), &keys, &values);
            cache.commit(1);
        }
        let queries = (0..tokens * cfg.heads)
            .flat_map(|i| row(i % 5, &mut rng))
            .collect();
        (cache, queries)
    }

    fn key(cache: &ContiguousKv, kv_head: usize, p: usize) -> Vec<f32> {
        let (mut k, mut v) = (vec![0.0; HEAD_DIM], vec![0.0; HEAD_DIM]);
        kv_rows(&cache.head(0, kv_head, 0, p + 1), p, &mut k, &mut v);
        k
    }

    fn value(cache: &ContiguousKv, kv_head: usize, p: usize) -> Vec<f32> {
        let (mut k, mut v) = (vec![0.0; HEAD_DIM], vec![0.0; HEAD_DIM]);
        kv_rows(&cache.head(0, kv_head, 0, p + 1), p, &mut k, &mut v);
        v
    }

    fn dot(a: &[f32], b: &[f32]) -> f64 {
        a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum()
    }

    /// METHODS.md's definition, written out: the S x S antidiagonal sums of the full score matrix, scaled by
    /// 1/(√d·S), softmax per query group over the groups at or before it, summed per block (and over the group's
    /// heads); then sink, diagonal, and the best blocks until `threshold` of the row's mass.
    fn reference_mask(
        cfg: &LlamaConfig,
        x: &XAttention,
        cache: &ContiguousKv,
        q: &[f32],
        first: usize,
        tokens: usize,
    ) -> Vec<Vec<Vec<bool>>> {
        let (s, b, group) = (x.stride, x.block_size, cfg.heads / cfg.kv_heads);
        let last = first + tokens - 1;
        let query = |h: usize, r: usize| -> Option<&[f32]> {
            (r >= first && r <= last)
                .then(|| &q[(r - first) * cfg.q_dim() + h * HEAD_DIM..][..HEAD_DIM])
        };
        let mut out = Vec::new();
        for kv_head in 0..cfg.kv_heads {
            let mut rows = Vec::new();
            for qb in first / b..=last / b {
                let mut scores = vec![0.0f64; qb + 1];
                for h in kv_head * group..(kv_head + 1) * group {
                    for g in (qb * b / s)..((qb + 1) * b / s) {
                        if g * s + s - 1 < first || g * s > last {
                            continue;
                        }
                        let anti: Vec<f64> = (0..=g)
                            .map(|j| {
                                (0..s)
                                    .filter_map(|i| {
                                        let qr = query(h, g * s + s - 1 - i)?;
                                        let kp = j * s + i;
                                        (kp <= last).then(|| dot(qr, &key(cache, kv_head, kp)))
                                    })
                                    .sum::<f64>()
                                    * cfg.attention_scale as f64
                                    / s as f64
                            })
                            .collect();
                        let max = anti.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                        let sum: f64 = anti.iter().map(|a| (a - max).exp()).sum();
                        for (j, a) in anti.iter().enumerate() {
                            scores[j * s / b] += (a - max).exp() / sum;
                        }
                    }
                }
                let total: f64 = scores.iter().sum();
                let mut shown = vec![false; qb + 1];
                shown[0] = true;
                shown[qb] = true;
                let mut mass = scores[0] + if qb > 0 { scores[qb] } else { 0.0 };
                let mut order: Vec<usize> = (1..qb).collect();
                order.sort_by(|&a, &c| scores[c].total_cmp(&scores[a]));
                for kb in order {
                    if mass >= x.threshold * total {
                        break;
                    }
                    shown[kb] = true;
                    mass += scores[kb];
                }
                rows.push(shown);
            }
            out.push(rows);
        }
        out
    }

    #[test]
    fn the_selection_is_the_antidiagonal_estimate_of_the_method() {
        let cfg = config(6, 2);
        let x = XAttention {
            stride: 4,
            block_size: 32,
            threshold: 0.8,
            dense_last_block: false,
        };
        // A chunk that starts mid-group and mid-block, and one that is aligned.
        for (len, tokens, seed) in [(400, 90, 1), (512, 128, 2)] {
            let (cache, q) = scene(&cfg, len, tokens, seed);
            let first = len - tokens;
            let mut state = XAttentionState::default();
            state.start(Some(x), usize::MAX);
            let mask = state
                .select(&cfg, &q, &cache, 0, Positions::From(first), tokens)
                .expect("sparse");
            let reference = reference_mask(&cfg, &x, &cache, &q, first, tokens);
            let mut hidden = 0;
            for (kv_head, rows) in reference.iter().enumerate() {
                for (i, shown) in rows.iter().enumerate() {
                    let qb = first / x.block_size + i;
                    for (kb, &s) in shown.iter().enumerate() {
                        let row = qb * x.block_size + x.block_size - 1;
                        let row = row.min(len - 1).max(first);
                        assert_eq!(
                            mask.shows(kv_head, row, kb * x.block_size),
                            s,
                            "kv head {kv_head}, query block {qb}, key block {kb}"
                        );
                        hidden += usize::from(!s);
                    }
                }
            }
            assert!(hidden > 0, "the scene leaves some blocks out");
            let (selected, causal) = state.finish();
            assert_eq!(
                causal as usize,
                reference.iter().flatten().map(Vec::len).sum::<usize>()
            );
            assert_eq!(causal - selected, hidden as u64);
        }
    }

    #[test]
    fn attention_is_exact_over_the_selected_blocks() {
        let cfg = config(4, 2);
        let x = XAttention {
            stride: 8,
            block_size: 32,
            threshold: 0.7,
            dense_last_block: true,
        };
        let (len, tokens) = (320, 100);
        let (cache, q) = scene(&cfg, len, tokens, 3);
        let first = len - tokens;
        let mut state = XAttentionState::default();
        state.start(Some(x), usize::MAX);
        let positions = Positions::From(first);
        let mask = state
            .select(&cfg, &q, &cache, 0, positions, tokens)
            .expect("sparse");
        let mut out = vec![0.0; tokens * cfg.q_dim()];
        attention(
            &cfg,
            &q,
            &cache,
            0,
            positions,
            None,
            Some(mask),
            tokens,
            &mut out,
            &mut SplitScratch::default(),
        );
        let group = cfg.heads / cfg.kv_heads;
        for t in 0..tokens {
            let row = first + t;
            for h in 0..cfg.heads {
                let kv_head = h / group;
                let qh = &q[t * cfg.q_dim() + h * HEAD_DIM..][..HEAD_DIM];
                let seen: Vec<usize> = (0..=row).filter(|&p| mask.shows(kv_head, row, p)).collect();
                let logits: Vec<f64> = seen
                    .iter()
                    .map(|&p| dot(qh, &key(&cache, kv_head, p)) * cfg.attention_scale as f64)
                    .collect();
                let max = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let weights: Vec<f64> = logits.iter().map(|l| (l - max).exp()).collect();
                let sum: f64 = weights.iter().sum();
                for c in 0..HEAD_DIM {
                    let want: f64 = seen
                        .iter()
                        .zip(&weights)
                        .map(|(&p, w)| w * value(&cache, kv_head, p)[c] as f64)
                        .sum::<f64>()
                        / sum;
                    let got = out[t * cfg.q_dim() + h * HEAD_DIM + c] as f64;
                    assert!(
                        (got - want).abs() < 1e-5,
                        "token {t} head {h} channel {c}: {got} vs {want}"
                    );
                }
            }
        }
        // Some query saw less than its causal prefix (the test is not the dense case).
        let (selected, causal) = state.finish();
        assert!(selected < causal);
    }

    #[test]
    fn a_threshold_of_one_selects_nothing_and_small_ones_keep_sink_and_diagonal() {
        let cfg = config(4, 2);
        let (cache, q) = scene(&cfg, 512, 64, 4);
        let positions = Positions::From(448);
        let mut state = XAttentionState::default();
        state.start(
            Some(XAttention {
                threshold: 1.0,
                ..XAttention::default()
            }),
            usize::MAX,
        );
        assert!(state.select(&cfg, &q, &cache, 0, positions, 64).is_none());
        let tiny = XAttention {
            stride: 8,
            block_size: 32,
            threshold: 1e-9,
            dense_last_block: false,
        };
        state.start(Some(tiny), 511);
        let mask = state
            .select(&cfg, &q, &cache, 0, positions, 64)
            .expect("sparse");
        for kv_head in 0..2 {
            for row in [448, 479, 480, 511] {
                let shown: Vec<usize> = (0..=row / 32)
                    .filter(|&kb| mask.shows(kv_head, row, kb * 32))
                    .collect();
                assert_eq!(shown, vec![0, row / 32]);
            }
        }
        // With the prompt's last block dense, that block sees everything and the one before it stays sparse.
        state.start(
            Some(XAttention {
                dense_last_block: true,
                ..tiny
            }),
            511,
        );
        let mask = state
            .select(&cfg, &q, &cache, 0, positions, 64)
            .expect("sparse");
        for kv_head in 0..2 {
            let shown = |row: usize| {
                (0..=row / 32)
                    .filter(|&kb| mask.shows(kv_head, row, kb * 32))
                    .count()
            };
            assert_eq!(shown(479), 2);
            assert_eq!(shown(511), 16);
        }
        state.finish();
        assert!(
            state.select(&cfg, &q, &cache, 0, positions, 64).is_none(),
            "decode after the prefill is dense"
        );
    }

    #[test]
    fn bad_settings_are_refused() {
        let ok = XAttention::default();
        assert!(ok.validate(32).is_ok());
        for bad in [
            XAttention { stride: 0, ..ok },
            XAttention {
                block_size: 100,
                ..ok
            },
            XAttention {
                block_size: 48,
                stride: 16,
                ..ok
            },
            XAttention {
                threshold: 0.0,
                ..ok
            },
            XAttention {
                threshold: 1.5,
                ..ok
            },
            XAttention {
                threshold: f64::NAN,
                ..ok
            },
        ] {
            assert!(
                matches!(bad.validate(32), Err(EngineError::InvalidOption(_))),
                "{bad:?}"
            );
        }
    }
}
