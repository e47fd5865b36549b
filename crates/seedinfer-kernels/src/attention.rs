//! Causal attention of query heads over one KV head's cached keys and values (f32), the grouped-query way: the
//! query heads that share a KV head (a GQA group) read each key and value row together, once.
//!
//! [`attend_range`] dispatches to the AVX2 kernel (`attention_avx2`: vector dot products, a vector `exp`, value
//! rows accumulated for the whole group in registers) when the head size is a multiple of 32;
//! [`attend_range_scalar`] is the reference. Softmax is exact (max subtracted); outputs are divided by the weight
//! sum at the end, which lets ranges of positions be computed apart and [`merge`]d (flash-decoding).

use crate::isa::{detected, Isa};
use std::ops::Range;

/// One KV head's keys and values: position `p`'s key is `keys[p * stride + offset..][..head_dim]`.
#[derive(Clone, Copy)]
pub struct KvHead<'a> {
    pub keys: &'a [f32],
    pub values: &'a [f32],
    pub stride: usize,
    pub offset: usize,
    pub head_dim: usize,
}

impl KvHead<'_> {
    #[inline(always)]
    fn key(&self, p: usize) -> &[f32] {
        &self.keys[p * self.stride + self.offset..][..self.head_dim]
    }

    #[inline(always)]
    fn value(&self, p: usize) -> &[f32] {
        &self.values[p * self.stride + self.offset..][..self.head_dim]
    }
}

/// The largest group the vector kernel takes in one pass (larger groups are done in parts).
pub const MAX_GROUP: usize = 4;

/// Softmax statistics of one query over a range of positions: the largest score and the sum of
/// `e^(score - max)` over the range.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Partial {
    pub max: f32,
    pub sum: f32,
}

/// `outs[g] = softmax(queries[g] · keys[..visible] * scale) · values[..visible]` for each query head `g` of one
/// group. `scores` is scratch (resized as needed). Panics if `visible` exceeds the cached positions or the
/// slices disagree with `kv.head_dim`.
pub fn attend(
    kv: &KvHead,
    visible: usize,
    scale: f32,
    queries: &[&[f32]],
    outs: &mut [&mut [f32]],
    scores: &mut Vec<f32>,
) {
    for (queries, outs) in queries.chunks(MAX_GROUP).zip(outs.chunks_mut(MAX_GROUP)) {
        let mut partials = [Partial::default(); MAX_GROUP];
        let partials = &mut partials[..queries.len()];
        attend_range(kv, 0..visible, scale, queries, outs, scores, partials);
        for (out, partial) in outs.iter_mut().zip(partials.iter()) {
            let inverse = 1.0 / partial.sum;
            out.iter_mut().for_each(|o| *o *= inverse);
        }
    }
}

/// Attention of each query over the cached `positions` only, not normalised: `outs[g] = sum over p of
/// e^(score_p - max) * value_p`, with `partials[g]` holding that `max` and the sum of the weights. Ranges that
/// together cover `0..visible` combine into the full result with [`merge`], which is how a long cache is split
/// across threads while decoding.
pub fn attend_range(
    kv: &KvHead,
    positions: Range<usize>,
    scale: f32,
    queries: &[&[f32]],
    outs: &mut [&mut [f32]],
    scores: &mut Vec<f32>,
    partials: &mut [Partial],
) {
    check(kv, positions.end, queries, outs);
    assert!(!positions.is_empty(), "at least one position");
    assert_eq!(partials.len(), queries.len(), "one partial per query");
    #[cfg(target_arch = "x86_64")]
    if detected() >= Isa::Avx2 && kv.head_dim.is_multiple_of(32) {
        for ((queries, outs), partials) in queries
            .chunks(MAX_GROUP)
            .zip(outs.chunks_mut(MAX_GROUP))
            .zip(partials.chunks_mut(MAX_GROUP))
        {
            scores.resize(queries.len() * positions.len(), 0.0);
            // SAFETY: `detected` reports AVX2/FMA/F16C; `check` verified every slice length.
            unsafe {
                crate::attention_avx2::attend_range(
                    kv,
                    positions.clone(),
                    scale,
                    queries,
                    outs,
                    scores,
                    partials,
                )
            };
        }
        return;
    }
    attend_range_scalar(kv, positions, scale, queries, outs, scores, partials)
}

/// Scalar reference of [`attend_range`].
pub fn attend_range_scalar(
    kv: &KvHead,
    positions: Range<usize>,
    scale: f32,
    queries: &[&[f32]],
    outs: &mut [&mut [f32]],
    scores: &mut Vec<f32>,
    partials: &mut [Partial],
) {
    check(kv, positions.end, queries, outs);
    for ((query, out), partial) in queries.iter().zip(outs.iter_mut()).zip(partials) {
        scores.clear();
        scores.extend(positions.clone().map(|p| {
            let dot: f32 = query.iter().zip(kv.key(p)).map(|(a, b)| a * b).sum();
            dot * scale
        }));
        let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut sum = 0.0f32;
        for s in scores.iter_mut() {
            *s = (*s - max).exp();
            sum += *s;
        }
        out.fill(0.0);
        for (p, s) in positions.clone().zip(scores.iter()) {
            for (o, v) in out.iter_mut().zip(kv.value(p)) {
                *o += s * v;
            }
        }
        *partial = Partial { max, sum };
    }
}

/// Folds one more range's [`attend_range`] result (`partial`, `part`) into a running one (`running`, `out`),
/// both unnormalised: the online softmax of flash attention. Divide `out` by `running.sum` at the end.
pub fn merge_into(running: &mut Partial, out: &mut [f32], partial: Partial, part: &[f32]) {
    let max = running.max.max(partial.max);
    let (keep, add) = ((running.max - max).exp(), (partial.max - max).exp());
    for (o, p) in out.iter_mut().zip(part) {
        *o = *o * keep + p * add;
    }
    *running = Partial {
        max,
        sum: running.sum * keep + partial.sum * add,
    };
}

/// Combines the [`attend_range`] results of ranges that together cover the visible positions into the
/// normalised attention output.
pub fn merge<'a>(parts: impl Iterator<Item = (Partial, &'a [f32])> + Clone, out: &mut [f32]) {
    let max = parts
        .clone()
        .map(|(p, _)| p.max)
        .fold(f32::NEG_INFINITY, f32::max);
    out.fill(0.0);
    let mut sum = 0.0f32;
    for (partial, part) in parts {
        let weight = (partial.max - max).exp();
        sum += partial.sum * weight;
        for (o, v) in out.iter_mut().zip(part) {
            *o += weight * v;
        }
    }
    let inverse = 1.0 / sum;
    out.iter_mut().for_each(|o| *o *= inverse);
}

fn check(kv: &KvHead, visible: usize, queries: &[&[f32]], outs: &[&mut [f32]]) {
    let hd = kv.head_dim;
    assert!(kv.offset + hd <= kv.stride, "head inside a cache row");
    let needed = (visible.max(1) - 1) * kv.stride + kv.offset + hd;
    assert!(
        visible == 0 || (kv.keys.len() >= needed && kv.values.len() >= needed),
        "{visible} positions cached"
    );
    assert_eq!(queries.len(), outs.len(), "one output per query");
    assert!(queries.iter().all(|q| q.len() == hd) && outs.iter().all(|o| o.len() == hd));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_values::values;

    #[test]
    fn vector_kernel_equals_the_scalar_reference() {
        for (head_dim, kv_heads, group, visible) in [
            (64, 3, 3, 1),
            (64, 3, 3, 37),
            (128, 2, 4, 300),
            (32, 1, 6, 9),
            (8, 2, 2, 5),
        ] {
            let stride = head_dim * kv_heads;
            let keys = values(visible * stride, 1);
            let vals = values(visible * stride, 2);
            let queries = values(group * head_dim, 3);
            let queries: Vec<&[f32]> = queries.chunks(head_dim).collect();
            for kv_head in 0..kv_heads {
                let kv = KvHead {
                    keys: &keys,
                    values: &vals,
                    stride,
                    offset: kv_head * head_dim,
                    head_dim,
                };
                let (mut fast, mut reference) =
                    (vec![0.0; group * head_dim], vec![0.0; group * head_dim]);
                let mut scores = Vec::new();
                let mut outs: Vec<&mut [f32]> = fast.chunks_mut(head_dim).collect();
                attend(&kv, visible, 0.125, &queries, &mut outs, &mut scores);
                let mut outs: Vec<&mut [f32]> = reference.chunks_mut(head_dim).collect();
                let mut partials = vec![Partial::default(); group];
                attend_range_scalar(
                    &kv,
                    0..visible,
                    0.125,
                    &queries,
                    &mut outs,
                    &mut scores,
                    &mut partials,
                );
                for (out, partial) in reference.chunks_mut(head_dim).zip(&partials) {
                    out.iter_mut().for_each(|o| *o /= partial.sum);
                }
                for (f, r) in fast.iter().zip(&reference) {
                    assert!(
                        (f - r).abs() <= 1e-5 * r.abs().max(1.0),
                        "hd={head_dim} group={group} visible={visible}: {f} vs {r}"
                    );
                }
            }
        }
    }

    #[test]
    fn ranges_merged_equal_attention_over_all_positions() {
        let (head_dim, stride, visible, group) = (64, 192, 301, 3);
        let keys = values(visible * stride, 8);
        let vals = values(visible * stride, 9);
        let kv = KvHead {
            keys: &keys,
            values: &vals,
            stride,
            offset: 64,
            head_dim,
        };
        let queries = values(group * head_dim, 10);
        let queries: Vec<&[f32]> = queries.chunks(head_dim).collect();
        let mut whole = vec![0.0; group * head_dim];
        let mut outs: Vec<&mut [f32]> = whole.chunks_mut(head_dim).collect();
        attend(&kv, visible, 0.125, &queries, &mut outs, &mut Vec::new());
        let ranges = [0..100, 100..101, 101..301];
        let mut parts = vec![vec![0.0f32; group * head_dim]; ranges.len()];
        let mut partials = vec![[Partial::default(); 3]; ranges.len()];
        for ((range, part), partial) in ranges.iter().zip(&mut parts).zip(&mut partials) {
            let mut outs: Vec<&mut [f32]> = part.chunks_mut(head_dim).collect();
            attend_range(
                &kv,
                range.clone(),
                0.125,
                &queries,
                &mut outs,
                &mut Vec::new(),
                partial,
            );
        }
        for g in 0..group {
            // Online: fold the ranges one by one into a running result.
            let mut running = partials[0][g];
            let mut online = parts[0][g * head_dim..(g + 1) * head_dim].to_vec();
            for (part, partial) in parts.iter().zip(&partials).skip(1) {
                merge_into(
                    &mut running,
                    &mut online,
                    partial[g],
                    &part[g * head_dim..(g + 1) * head_dim],
                );
            }
            for (o, w) in online.iter().zip(&whole[g * head_dim..(g + 1) * head_dim]) {
                let o = o / running.sum;
                assert!(
                    (o - w).abs() <= 1e-5 * w.abs().max(1.0),
                    "online {o} vs {w}"
                );
            }
            let mut merged = vec![0.0; head_dim];
            let pieces = parts
                .iter()
                .zip(&partials)
                .map(|(part, partial)| (partial[g], &part[g * head_dim..(g + 1) * head_dim]));
            merge(pieces, &mut merged);
            for (m, w) in merged.iter().zip(&whole[g * head_dim..(g + 1) * head_dim]) {
                assert!((m - w).abs() <= 1e-5 * w.abs().max(1.0), "{m} vs {w}");
            }
        }
    }

    #[test]
    fn one_visible_position_returns_its_value() {
        let kv_values = values(64, 5);
        let keys = values(64, 6);
        let kv = KvHead {
            keys: &keys,
            values: &kv_values,
            stride: 64,
            offset: 0,
            head_dim: 64,
        };
        let query = values(64, 7);
        let mut out = vec![0.0; 64];
        attend(&kv, 1, 0.125, &[&query], &mut [&mut out], &mut Vec::new());
        for (o, v) in out.iter().zip(&kv_values) {
            assert!((o - v).abs() <= 1e-6 * v.abs().max(1.0));
        }
    }
}
