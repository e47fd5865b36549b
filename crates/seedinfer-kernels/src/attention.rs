//! Causal attention of query heads over one KV head's cached keys and values (f32), the grouped-query way: the
//! query heads that share a KV head (a GQA group) read each key and value row together, once.
//!
//! [`attend`] dispatches to the AVX2 kernel (`attention_avx2`: vector dot products, a vector `exp`, value rows
//! accumulated for the whole group in registers) when the head size is a multiple of 32; [`attend_scalar`] is the
//! reference. Softmax is exact (max subtracted) and normalised before it weights the values, as llama.cpp does.

use crate::isa::{detected, Isa};

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
    check(kv, visible, queries, outs);
    #[cfg(target_arch = "x86_64")]
    if detected() >= Isa::Avx2 && kv.head_dim.is_multiple_of(32) && visible > 0 {
        for (queries, outs) in queries.chunks(MAX_GROUP).zip(outs.chunks_mut(MAX_GROUP)) {
            scores.resize(queries.len() * visible, 0.0);
            // SAFETY: `detected` reports AVX2/FMA/F16C; `check` verified every slice length.
            unsafe { crate::attention_avx2::attend(kv, visible, scale, queries, outs, scores) };
        }
        return;
    }
    attend_scalar(kv, visible, scale, queries, outs, scores)
}

/// Scalar reference of [`attend`].
pub fn attend_scalar(
    kv: &KvHead,
    visible: usize,
    scale: f32,
    queries: &[&[f32]],
    outs: &mut [&mut [f32]],
    scores: &mut Vec<f32>,
) {
    check(kv, visible, queries, outs);
    for (query, out) in queries.iter().zip(outs.iter_mut()) {
        scores.clear();
        scores.extend((0..visible).map(|p| {
            let dot: f32 = query.iter().zip(kv.key(p)).map(|(a, b)| a * b).sum();
            dot * scale
        }));
        let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut sum = 0.0f32;
        for s in scores.iter_mut() {
            *s = (*s - max).exp();
            sum += *s;
        }
        let inverse = 1.0 / sum;
        out.fill(0.0);
        for (p, s) in scores.iter().enumerate() {
            let weight = s * inverse;
            for (o, v) in out.iter_mut().zip(kv.value(p)) {
                *o += weight * v;
            }
        }
    }
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
                attend_scalar(&kv, visible, 0.125, &queries, &mut outs, &mut scores);
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
