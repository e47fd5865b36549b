//! Prompt token pruning (METHODS.md, "LazyLLM" and "PromptDistill / FEATHER criteria"): one mechanism, three
//! selection criteria.
//!
//! Tokens are computed layer by layer over the whole prompt (not prompt chunk by chunk), so that after a chosen
//! layer the last token's attention can score every token and the least important ones leave the batch: later
//! layers never compute them, and attention there skips them. Every position keeps its original position id.
//!
//! - **LazyLLM**: at each stage of a schedule, keep the top `keep` fraction by the last token's attention
//!   probabilities averaged over all query heads. A dropped token's hidden state goes to the aux cache. Decode
//!   steps select again at every stage; a selected token lacking the next layer's keys and values is computed
//!   from its aux-cache state, from the layer after the one it was dropped at (never from layer 0, never twice
//!   for one layer).
//! - **PromptDistill**: once, at a middle layer, keep the top `keep_tokens` context tokens by pre-softmax q·k
//!   logits (averaged over heads, average-pooled), plus every question token (the prompt's tail). The others are
//!   trimmed from the earlier layers' KV too.
//! - **FEATHER**: score by attention computed without RoPE (no positional bias), keep the top tokens plus a
//!   uniform stride sample for coverage, in two stages.
//!
//! Exactness switch: keeping every token at every stage computes what the dense forward pass computes, bit for bit
//! (attention does not depend on how tokens are batched).

use crate::config::LlamaConfig;
use crate::error::{EngineError, Result};
use crate::forward::{layer_step, output_logits, LogitsFor, Scratch};
use crate::kv_cache::{KvStore, PagedKv, Positions};
use crate::kv_pool::KvDtype;
use crate::ops_seedinfer::{apply_rope, RopeTable, SeedinferOps};
use crate::weights::LlamaWeights;
use seedinfer_kernels::attention::{kv_rows, KvHead, KvRows};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};

/// Tokens run through one layer at a time (bounds the activation scratch).
const LAYER_CHUNK: usize = 256;

/// Depth of a position whose keys and values no layer holds (not computed yet, or trimmed).
const NO_LAYER: i32 = -1;

/// One pruning stage: after layer `layer` (0-based) keep `keep` (a fraction in (0, 1]) of the positions.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Stage {
    pub layer: usize,
    pub keep: f64,
}

/// How a prompt's prefill (and, for LazyLLM, each decode step) chooses the tokens it computes.
#[derive(Clone, Debug, PartialEq)]
pub enum PrefillStrategy {
    Dense,
    LazyLlm {
        schedule: Vec<Stage>,
        /// Decode steps select again at every stage, reviving dropped tokens they pick (the method as
        /// published); `false` keeps the prefill's selection for the whole generation.
        reselect_in_decode: bool,
    },
    PromptDistill {
        layer: usize,
        keep_tokens: usize,
        question_tokens: usize,
        pooling: usize,
    },
    Feather {
        schedule: Vec<Stage>,
        uniform_share: f64,
    },
}

/// Stages at fractions of the model's depth: `(depth fraction, keep)`, clamped to the layers that have a next one.
fn schedule_at(layers: usize, stages: &[(f64, f64)]) -> Vec<Stage> {
    let mut out: Vec<Stage> = Vec::new();
    for &(depth, keep) in stages {
        let layer = ((depth * layers as f64) as usize).min(layers.saturating_sub(2));
        if out.last().is_none_or(|s| s.layer < layer) {
            out.push(Stage { layer, keep });
        }
    }
    out
}

impl PrefillStrategy {
    /// PromptDistill's default context budget (METHODS.md).
    pub const PROMPTDISTILL_KEEP_TOKENS: usize = 1024;
    /// Prompt tokens at the end PromptDistill treats as the question and always keeps, unless told.
    pub const PROMPTDISTILL_QUESTION_TOKENS: usize = 64;
    /// PromptDistill's average-pooling width.
    pub const PROMPTDISTILL_POOLING: usize = 5;
    /// FEATHER's share of the kept tokens sampled uniformly for coverage.
    pub const FEATHER_UNIFORM_SHARE: f64 = 0.25;

    pub fn name(&self) -> &'static str {
        match self {
            PrefillStrategy::Dense => "dense",
            PrefillStrategy::LazyLlm { .. } => "lazyllm",
            PrefillStrategy::PromptDistill { .. } => "promptdistill",
            PrefillStrategy::Feather { .. } => "feather",
        }
    }

    /// LazyLLM's default: three stages at 35%, 60% and 85% of the depth keeping 70%, 50% and 30% of the tokens.
    pub fn lazyllm_default_schedule(layers: usize) -> Vec<Stage> {
        schedule_at(layers, &[(0.35, 0.7), (0.6, 0.5), (0.85, 0.3)])
    }

    /// FEATHER's default: an early and a middle stage (25% and 50% of the depth) keeping 60% and 30%.
    pub fn feather_default_schedule(layers: usize) -> Vec<Stage> {
        schedule_at(layers, &[(0.25, 0.6), (0.5, 0.3)])
    }

    /// PromptDistill's default selection layer: the middle one.
    pub fn promptdistill_default_layer(layers: usize) -> usize {
        (layers / 2).min(layers.saturating_sub(2))
    }

    /// Checks the options against a model of `layers` layers.
    pub fn validate(&self, layers: usize) -> Result<()> {
        let invalid = |m: String| Err(EngineError::InvalidOption(m));
        let check_layer = |layer: usize| {
            if layer + 1 >= layers {
                return invalid(format!(
                    "prefill stage layer {layer} must be below {} (the model's last layer, after which nothing is left to prune)",
                    layers.saturating_sub(1)
                ));
            }
            Ok(())
        };
        let check_schedule = |schedule: &[Stage]| {
            for (i, stage) in schedule.iter().enumerate() {
                check_layer(stage.layer)?;
                if !(stage.keep > 0.0 && stage.keep <= 1.0) {
                    return invalid(format!(
                        "prefill stage keep must be in (0, 1], got {}",
                        stage.keep
                    ));
                }
                if i > 0 && schedule[i - 1].layer >= stage.layer {
                    return invalid("prefill schedule layers must be strictly ascending".into());
                }
            }
            Ok(())
        };
        match self {
            PrefillStrategy::Dense => Ok(()),
            PrefillStrategy::LazyLlm { schedule, .. } => check_schedule(schedule),
            PrefillStrategy::Feather {
                schedule,
                uniform_share,
            } => {
                check_schedule(schedule)?;
                if !(0.0..=1.0).contains(uniform_share) {
                    return invalid(format!(
                        "prefill uniformShare must be in [0, 1], got {uniform_share}"
                    ));
                }
                Ok(())
            }
            PrefillStrategy::PromptDistill {
                layer,
                keep_tokens,
                pooling,
                ..
            } => {
                check_layer(*layer)?;
                if *keep_tokens == 0 {
                    return invalid("prefill keepTokens must be at least 1".into());
                }
                if *pooling == 0 || pooling.is_multiple_of(2) {
                    return invalid(format!(
                        "prefill pooling must be an odd width (1 = none), got {pooling}"
                    ));
                }
                Ok(())
            }
        }
    }

    /// The selections this strategy makes in a pass: prefill makes all of them; a decode step only LazyLLM's.
    fn selections(&self, decode: bool) -> Vec<Selection> {
        match self {
            PrefillStrategy::Dense => Vec::new(),
            PrefillStrategy::LazyLlm { schedule, .. } => schedule
                .iter()
                .map(|s| Selection {
                    layer: s.layer,
                    keep: Keep::Fraction(s.keep),
                    criterion: Criterion::Attention,
                    dropped: Dropped::Aux,
                })
                .collect(),
            _ if decode => Vec::new(),
            PrefillStrategy::Feather {
                schedule,
                uniform_share,
            } => schedule
                .iter()
                .map(|s| Selection {
                    layer: s.layer,
                    keep: Keep::Fraction(s.keep),
                    criterion: Criterion::UnrotatedAttention {
                        uniform_share: *uniform_share,
                    },
                    dropped: Dropped::KeepsKv,
                })
                .collect(),
            PrefillStrategy::PromptDistill {
                layer,
                keep_tokens,
                question_tokens,
                pooling,
            } => vec![Selection {
                layer: *layer,
                keep: Keep::Tokens {
                    context: *keep_tokens,
                    question: *question_tokens,
                },
                criterion: Criterion::Logits { pooling: *pooling },
                dropped: Dropped::Trimmed,
            }],
        }
    }

    /// Whether decode steps select (and revive) tokens with this strategy.
    fn revives(&self) -> bool {
        matches!(self, PrefillStrategy::LazyLlm { .. })
    }
}

/// How many positions a selection keeps.
#[derive(Clone, Copy)]
enum Keep {
    /// This fraction of all positions (rounded up).
    Fraction(f64),
    /// This many of the pass's context tokens, plus its last `question` tokens and every earlier position.
    Tokens { context: usize, question: usize },
}

/// How a selection scores positions from the last token's query.
#[derive(Clone, Copy)]
enum Criterion {
    /// Attention probabilities averaged over query heads (LazyLLM).
    Attention,
    /// Pre-softmax logits averaged over heads, average-pooled over `pooling` neighbours (PromptDistill).
    Logits { pooling: usize },
    /// Attention probabilities without RoPE, plus a uniform stride sample of `uniform_share` of the kept (FEATHER).
    UnrotatedAttention { uniform_share: f64 },
}

/// What becomes of a dropped token.
#[derive(Clone, Copy, PartialEq)]
enum Dropped {
    /// Its hidden state goes to the aux cache; a later selection may revive it (LazyLLM).
    Aux,
    /// It keeps the keys and values of the layers it was computed at (FEATHER).
    KeepsKv,
    /// Its keys and values leave every layer (PromptDistill).
    Trimmed,
}

struct Selection {
    layer: usize,
    keep: Keep,
    criterion: Criterion,
    dropped: Dropped,
}

/// What token pruning leaves in a session's cache: which layers hold each position, and the aux cache.
#[derive(Clone, Debug)]
pub struct PrunedPositions {
    layers: usize,
    /// Per position, the last layer holding its keys and values (`layers - 1`: all; [`NO_LAYER`]: none).
    depth: Vec<i32>,
    /// Hidden states (after layer `depth[p]`) of dropped positions that may be revived.
    aux: HashMap<usize, Vec<f32>>,
}

impl PrunedPositions {
    /// `len` positions, all computed at every layer.
    pub fn new(len: usize, layers: usize) -> Self {
        Self {
            layers,
            depth: vec![layers as i32 - 1; len],
            aux: HashMap::new(),
        }
    }

    pub fn truncate(&mut self, len: usize) {
        self.depth.truncate(len);
        self.aux.retain(|&p, _| p < len);
    }

    /// Whether some position lacks some layer's keys and values.
    pub fn has_holes(&self) -> bool {
        self.depth.iter().any(|&d| d != self.layers as i32 - 1)
    }

    /// Positions whose keys and values layer `layer` holds.
    pub fn held_at(&self, layer: usize) -> usize {
        self.depth.iter().filter(|&&d| d >= layer as i32).count()
    }

    /// Positions with a hidden state in the aux cache.
    pub fn aux_len(&self) -> usize {
        self.aux.len()
    }

    /// Whether position `p`'s state is in the aux cache.
    pub fn in_aux(&self, p: usize) -> bool {
        self.aux.contains_key(&p)
    }

    /// The last layer holding position `p`'s keys and values, if any.
    pub fn depth(&self, p: usize) -> Option<usize> {
        self.depth
            .get(p)
            .and_then(|&d| (d >= 0).then_some(d as usize))
    }
}

/// What one pass computed.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PassReport {
    /// Tokens computed at each layer (new ones and revived ones).
    pub layer_tokens: Vec<usize>,
    /// Earlier positions computed from the aux cache.
    pub revived: usize,
    /// Tokens that left the batch at a selection.
    pub dropped: usize,
    /// XAttention: query block x key block pairs the prefill attended (over layers and KV heads), and those
    /// causal attention covers; equal (or both 0) without it.
    pub selected_blocks: u64,
    pub causal_blocks: u64,
}

/// Runs `tokens` through the model at positions `cache.len()..` layer by layer, with the selections of
/// `strategy` (a prefill's, or a decode step's when `decode`), and commits them to `cache` (reserved beforehand).
/// Logits go to `logits` for the last token, or for every new token with `LogitsFor::All` when none was dropped.
/// Returns `None` when `abort` stopped the pass between layers; then, as on an error, the new positions are
/// forgotten and revived ones go back to the aux cache at the layer they reached.
#[allow(clippy::too_many_arguments)]
pub(crate) fn forward_pruned(
    cfg: &LlamaConfig,
    w: &LlamaWeights,
    tokens: &[u32],
    cache: &mut PagedKv,
    state: &mut PrunedPositions,
    strategy: &PrefillStrategy,
    decode: bool,
    s: &mut Scratch,
    logits: &mut Vec<f32>,
    logits_for: LogitsFor,
    abort: &AtomicBool,
) -> Result<Option<PassReport>> {
    let d = cfg.hidden_size;
    let start = cache.len();
    let total = start + tokens.len();
    if tokens.is_empty() || state.depth.len() != start {
        return Err(EngineError::Internal(
            "token pruning: cache and pruning state disagree".into(),
        ));
    }
    let selections = strategy.selections(decode);
    if logits_for == LogitsFor::All && !selections.is_empty() {
        return Err(EngineError::InvalidOption(
            "logits for every token need every token computed (a dense pass)".into(),
        ));
    }
    state.depth.resize(total, NO_LAYER);
    let mut batch: Vec<usize> = (start..total).collect();
    let mut x = std::mem::take(&mut s.x);
    x.resize(tokens.len() * d, 0.0);
    crate::forward::embed(cfg, w, tokens, &mut x);
    let run = Pass {
        cfg,
        w,
        start,
        total,
        selections,
        revive: strategy.revives(),
        // An int8 cache takes its key channel scales from the complete first block (see `KvStore::write`).
        protected: if cache.pool_dtype() == KvDtype::Int8 {
            cache.block_size()
        } else {
            0
        },
    };
    let outcome = run.layers(&mut batch, &mut x, cache, state, s, abort);
    let report = match outcome {
        Ok(Some(report)) => report,
        other => {
            // Forget the new positions; revived earlier ones keep what they reached, their state back in aux.
            for (i, &p) in batch.iter().enumerate() {
                if p < start {
                    state.aux.insert(p, x[i * d..(i + 1) * d].to_vec());
                }
            }
            state.truncate(start);
            cache.truncate(start);
            s.x = x;
            return other;
        }
    };
    cache.commit(tokens.len());
    // Without selections every new token reaches the last layer.
    let rows: Vec<usize> = match logits_for {
        LogitsFor::Last => vec![batch.len() - 1],
        LogitsFor::All => (0..batch.len()).filter(|&i| batch[i] >= start).collect(),
    };
    let mut out_x = Vec::with_capacity(rows.len() * d);
    for i in rows {
        out_x.extend_from_slice(&x[i * d..(i + 1) * d]);
    }
    output_logits::<SeedinferOps>(cfg, w, &out_x, s, logits);
    s.x = x;
    Ok(Some(report))
}

struct Pass<'a> {
    cfg: &'a LlamaConfig,
    w: &'a LlamaWeights,
    start: usize,
    total: usize,
    selections: Vec<Selection>,
    revive: bool,
    /// Positions below this are never dropped.
    protected: usize,
}

impl Pass<'_> {
    /// The layer loop of [`forward_pruned`]: `batch` (ascending positions) and `x` (their hidden states) are
    /// what is left to compute; on return they hold the last layer's survivors (or, on abort or error, the
    /// tokens in flight).
    fn layers(
        &self,
        batch: &mut Vec<usize>,
        x: &mut Vec<f32>,
        cache: &mut PagedKv,
        state: &mut PrunedPositions,
        s: &mut Scratch,
        abort: &AtomicBool,
    ) -> Result<Option<PassReport>> {
        let (cfg, d, total) = (self.cfg, self.cfg.hidden_size, self.total);
        let mut report = PassReport {
            layer_tokens: vec![0; cfg.layers],
            ..Default::default()
        };
        // The current selection (all positions until the first stage).
        let mut selected: Option<Vec<bool>> = None;
        let mut mask = vec![false; total];
        for l in 0..cfg.layers {
            if l > 0 && abort.load(Ordering::Relaxed) {
                return Ok(None);
            }
            if self.revive {
                let joining: Vec<usize> = (0..self.start)
                    .filter(|&p| {
                        state.depth[p] == l as i32 - 1
                            && selected.as_ref().is_none_or(|m| m[p])
                            && state.aux.contains_key(&p)
                    })
                    .collect();
                if !joining.is_empty() {
                    cache.make_writable(&joining)?;
                    let mut rows: Vec<(usize, Vec<f32>)> = joining
                        .iter()
                        .filter_map(|&p| state.aux.remove(&p).map(|h| (p, h)))
                        .collect();
                    report.revived += rows.len();
                    rows.extend(
                        batch
                            .iter()
                            .enumerate()
                            .map(|(i, &p)| (p, x[i * d..(i + 1) * d].to_vec())),
                    );
                    rows.sort_by_key(|(p, _)| *p);
                    batch.clear();
                    x.clear();
                    for (p, h) in rows {
                        batch.push(p);
                        x.extend_from_slice(&h);
                    }
                }
            }
            for (p, shown) in mask.iter_mut().enumerate() {
                *shown = state.depth[p] >= l as i32 && selected.as_ref().is_none_or(|m| m[p]);
            }
            for &p in batch.iter() {
                if state.depth[p] != l as i32 - 1 {
                    return Err(EngineError::Internal(format!(
                        "token pruning: position {p} would be computed twice at layer {l}"
                    )));
                }
                mask[p] = true;
            }
            let last = batch[batch.len() - 1];
            let all_shown = mask[..=last].iter().all(|&m| m);
            // A layer with hidden positions: several tokens attend over a gathered copy of the shown ones (which
            // skips the hidden ones' work entirely); a single decoded token reads the cache in place, run by run.
            let chunks = batch.chunks(LAYER_CHUNK).zip(x.chunks_mut(LAYER_CHUNK * d));
            let layer = &self.w.layers[l];
            if !all_shown && batch.len() > 1 {
                let mut gathered = GatheredLayer::new(cfg, cache, l, &mask[..=last], batch);
                for (positions, rows) in chunks {
                    let positions = Positions::List(positions);
                    layer_step::<SeedinferOps, _>(
                        cfg,
                        layer,
                        l,
                        rows,
                        positions,
                        None,
                        &mut gathered,
                        s,
                    );
                }
            } else {
                let in_place_mask = (!all_shown).then_some(mask.as_slice());
                for (positions, rows) in chunks {
                    let positions = Positions::List(positions);
                    layer_step::<SeedinferOps, _>(
                        cfg,
                        layer,
                        l,
                        rows,
                        positions,
                        in_place_mask,
                        cache,
                        s,
                    );
                }
            }
            for &p in batch.iter() {
                state.depth[p] = l as i32;
            }
            report.layer_tokens[l] += batch.len();
            let Some(selection) = self.selections.iter().find(|sel| sel.layer == l) else {
                continue;
            };
            let q_dim = cfg.q_dim();
            let query = s.q[s.q.len() - q_dim..].to_vec();
            let candidates: Vec<usize> = (0..=last).filter(|&p| mask[p]).collect();
            let scores = score(cfg, cache, l, &query, last, &candidates, selection, s);
            let keep = self.choose(&candidates, &scores, selection, last);
            let (mut kept, mut kept_x) = (Vec::new(), Vec::new());
            for (i, &p) in batch.iter().enumerate() {
                let row = &x[i * d..(i + 1) * d];
                if keep[p] {
                    kept.push(p);
                    kept_x.extend_from_slice(row);
                    continue;
                }
                report.dropped += 1;
                match selection.dropped {
                    Dropped::Aux => {
                        state.aux.insert(p, row.to_vec());
                    }
                    Dropped::KeepsKv => {}
                    Dropped::Trimmed => state.depth[p] = NO_LAYER,
                }
            }
            *batch = kept;
            *x = kept_x;
            selected = Some(keep);
        }
        Ok(Some(report))
    }

    /// The positions a selection keeps, as a mask over all positions: the best-scored candidates, plus those
    /// never dropped (the last token; earlier positions and question tokens under a token budget; an int8 cache's
    /// first block).
    fn choose(
        &self,
        candidates: &[usize],
        scores: &[f32],
        selection: &Selection,
        last: usize,
    ) -> Vec<bool> {
        let mut keep = vec![false; self.total];
        let forced = |p: usize| {
            p == last
                || p < self.protected
                || match selection.keep {
                    Keep::Fraction(_) => false,
                    Keep::Tokens { question, .. } => p < self.start || p + question >= self.total,
                }
        };
        let mut open: Vec<(usize, f32)> = Vec::new();
        let mut kept = 0;
        for (&p, &score) in candidates.iter().zip(scores) {
            if forced(p) {
                keep[p] = true;
                kept += 1;
            } else {
                open.push((p, score));
            }
        }
        let budget = match selection.keep {
            Keep::Fraction(f) => ((f * self.total as f64).ceil() as usize).saturating_sub(kept),
            Keep::Tokens { context, .. } => context,
        }
        .min(open.len());
        // FEATHER: a uniform stride sample first, for coverage.
        let mut taken = 0;
        if let Criterion::UnrotatedAttention { uniform_share } = selection.criterion {
            let sample = ((uniform_share * budget as f64).round() as usize).min(budget);
            for i in 0..sample {
                let (p, _) = open[(2 * i + 1) * open.len() / (2 * sample)];
                if !keep[p] {
                    keep[p] = true;
                    taken += 1;
                }
            }
        }
        open.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        for &(p, _) in &open {
            if taken >= budget {
                break;
            }
            if !keep[p] {
                keep[p] = true;
                taken += 1;
            }
        }
        keep
    }
}

/// Scores `candidates` (positions holding layer `layer`'s keys) from the last token's rotated `query` (all
/// heads) at position `last`, by `selection`'s criterion. The last row of attention is computed here on its own
/// (the fused kernel never forms probabilities).
#[allow(clippy::too_many_arguments)]
fn score(
    cfg: &LlamaConfig,
    cache: &PagedKv,
    layer: usize,
    query: &[f32],
    last: usize,
    candidates: &[usize],
    selection: &Selection,
    s: &mut Scratch,
) -> Vec<f32> {
    let (hd, group) = (cfg.head_dim, cfg.heads / cfg.kv_heads);
    let scale = cfg.attention_scale;
    let unrotated = matches!(selection.criterion, Criterion::UnrotatedAttention { .. });
    let mut query = query.to_vec();
    if unrotated {
        apply_rope(
            &mut query,
            cfg,
            RopeTable {
                layer,
                context: cache.capacity(),
            },
            cfg.heads,
            Positions::From(last),
            -1.0,
            &mut s.ops.rope,
        );
    }
    let n = candidates.len();
    let channels = cache.key_channels(layer);
    // logits[h * n + c]: head h's scaled q·k for candidate c.
    let mut logits = vec![0.0f32; cfg.heads * n];
    let (mut key, mut value) = (vec![0.0f32; cfg.kv_dim()], vec![0.0f32; cfg.kv_dim()]);
    for (c, &p) in candidates.iter().enumerate() {
        read_position(cfg, cache, channels, layer, p, &mut key, &mut value);
        if unrotated {
            apply_rope(
                &mut key,
                cfg,
                RopeTable {
                    layer,
                    context: cache.capacity(),
                },
                cfg.kv_heads,
                Positions::From(p),
                -1.0,
                &mut s.ops.rope,
            );
        }
        for h in 0..cfg.heads {
            let k = &key[(h / group) * hd..(h / group + 1) * hd];
            let q = &query[h * hd..(h + 1) * hd];
            logits[h * n + c] = q.iter().zip(k).map(|(a, b)| a * b).sum::<f32>() * scale;
        }
    }
    let mut out = vec![0.0f32; n];
    match selection.criterion {
        Criterion::Attention | Criterion::UnrotatedAttention { .. } => {
            for head in logits.chunks(n.max(1)) {
                let max = head.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
                let weights: Vec<f64> = head.iter().map(|&v| ((v - max) as f64).exp()).collect();
                let sum: f64 = weights.iter().sum();
                for (o, w) in out.iter_mut().zip(&weights) {
                    *o += (w / sum) as f32 / cfg.heads as f32;
                }
            }
        }
        Criterion::Logits { pooling } => {
            let mut mean = vec![0.0f32; n];
            for head in logits.chunks(n.max(1)) {
                for (m, &v) in mean.iter_mut().zip(head) {
                    *m += v / cfg.heads as f32;
                }
            }
            let half = pooling / 2;
            for (c, o) in out.iter_mut().enumerate() {
                let window = &mean[c.saturating_sub(half)..(c + half + 1).min(n)];
                *o = window.iter().sum::<f32>() / window.len() as f32;
            }
        }
    }
    out
}

/// Position `p`'s keys and values at `layer` (`[kv_dim]` each) as f32, int8 keys times their channel scales.
pub(crate) fn read_position(
    cfg: &LlamaConfig,
    cache: &PagedKv,
    channels: Option<&[f32]>,
    layer: usize,
    p: usize,
    key: &mut [f32],
    value: &mut [f32],
) {
    let (hd, bs) = (cfg.head_dim, cache.block_size());
    for kv_head in 0..cfg.kv_heads {
        let kv = cache.head(layer, kv_head, p / bs, p % bs + 1);
        let heads = kv_head * hd..(kv_head + 1) * hd;
        let key = &mut key[heads.clone()];
        kv_rows(&kv, p % bs, key, &mut value[heads.clone()]);
        if let (Some(channels), true) = (channels, p >= bs) {
            for (k, c) in key.iter_mut().zip(&channels[heads]) {
                *k *= c;
            }
        }
    }
}

/// One layer's shown positions, in position order, copied out of the paged cache as f32 rows: attention over a
/// pruned layer then reads only what it attends to. The batch's own rows are written to both.
struct GatheredLayer<'a> {
    cache: &'a mut PagedKv,
    /// Row of each position in `keys` / `values` (`u32::MAX`: not shown).
    row_of: Vec<u32>,
    rows: usize,
    keys: Vec<f32>,
    values: Vec<f32>,
    kv_dim: usize,
    head_dim: usize,
}

impl<'a> GatheredLayer<'a> {
    /// Gathers layer `layer`'s rows of the positions `shown` marks; those of `batch` are left for `write`.
    fn new(
        cfg: &LlamaConfig,
        cache: &'a mut PagedKv,
        layer: usize,
        shown: &[bool],
        batch: &[usize],
    ) -> Self {
        let kv_dim = cfg.kv_dim();
        let mut row_of = vec![u32::MAX; shown.len()];
        let mut rows = 0;
        for (p, &s) in shown.iter().enumerate() {
            if s {
                row_of[p] = rows as u32;
                rows += 1;
            }
        }
        let (mut keys, mut values) = (vec![0.0; rows * kv_dim], vec![0.0; rows * kv_dim]);
        let channels = cache.key_channels(layer);
        let mut next_in_batch = batch.iter().peekable();
        for (p, &row) in row_of.iter().enumerate() {
            if next_in_batch.next_if_eq(&&p).is_some() || row == u32::MAX {
                continue;
            }
            let span = row as usize * kv_dim..(row as usize + 1) * kv_dim;
            read_position(
                cfg,
                cache,
                channels,
                layer,
                p,
                &mut keys[span.clone()],
                &mut values[span],
            );
        }
        Self {
            cache,
            row_of,
            rows,
            keys,
            values,
            kv_dim,
            head_dim: cfg.head_dim,
        }
    }
}

impl KvStore for GatheredLayer<'_> {
    fn len(&self) -> usize {
        self.rows
    }

    fn block_size(&self) -> usize {
        self.cache.block_size()
    }

    fn context_size(&self) -> usize {
        self.cache.context_size()
    }

    fn visible(&self, position: usize) -> usize {
        self.row_of[position] as usize + 1
    }

    fn write(&mut self, layer: usize, positions: Positions, keys: &[f32], values: &[f32]) {
        self.cache.write(layer, positions, keys, values);
        let kv_dim = self.kv_dim;
        for (t, (k, v)) in keys
            .chunks_exact(kv_dim)
            .zip(values.chunks_exact(kv_dim))
            .enumerate()
        {
            let at = self.row_of[positions.at(t)] as usize * kv_dim;
            self.keys[at..at + kv_dim].copy_from_slice(k);
            self.values[at..at + kv_dim].copy_from_slice(v);
        }
    }

    fn commit(&mut self, _tokens: usize) {}

    fn head(&self, _layer: usize, kv_head: usize, block: usize, count: usize) -> KvHead<'_> {
        let first = block * self.block_size();
        let span = first * self.kv_dim..(first + count) * self.kv_dim;
        KvHead::new(
            KvRows::F32(&self.keys[span.clone()]),
            KvRows::F32(&self.values[span]),
            self.kv_dim,
            kv_head * self.head_dim,
            self.head_dim,
        )
    }
}
