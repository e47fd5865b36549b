//! Causal attention of query heads over one KV head's cached keys and values, the grouped-query way: the query
//! heads that share a KV head (a GQA group) read each key and value row together, once. Keys and values are
//! stored as f32, f16 or int8 with one f32 scale per row ([`KvRows`]; [`quantize_row_i8`] makes such rows); each
//! element is widened to f32 as it is read, and an int8 row's scale is applied to its dot product (keys) or to its
//! softmax weight (values).
//!
//! [`attend_range`] dispatches to the vector kernel (`x86_avx2/attention.rs`: vector dot products, a vector `exp`,
//! value rows accumulated for the whole group in registers; `x86_avx512/attention.rs` gives its bits with
//! 512-bit steps) when the head size is a multiple of 32;
//! [`attend_range_scalar`] is the reference. Softmax is exact (max subtracted); outputs are divided by the weight
//! sum at the end, which lets ranges of positions be computed apart and [`merge`]d (flash-decoding).

use crate::isa::{detected, Isa};
use crate::widen::Widen;
use half::f16;
use std::ops::Range;

/// Rows of one KV head's keys or values in their storage type.
#[derive(Clone, Copy)]
pub enum KvRows<'a> {
    F32(&'a [f32]),
    F16(&'a [f16]),
    /// int8 rows with one f32 scale per row: element = scales[p * scale_stride] * rows[p * stride + offset + c].
    I8 {
        rows: &'a [i8],
        scales: &'a [f32],
        scale_stride: usize,
    },
}

impl KvRows<'_> {
    fn len(&self) -> usize {
        match self {
            KvRows::F32(rows) => rows.len(),
            KvRows::F16(rows) => rows.len(),
            KvRows::I8 { rows, .. } => rows.len(),
        }
    }
}

/// One KV head's keys and values: position `p`'s value is `values[p * stride + offset..][..head_dim]` and its key
/// `keys[p * key_stride + key_offset..][..key_dim]` (times the row's scale for int8). Keys usually have the values'
/// layout ([`KvHead::new`]); pruned keys (ThinK: some channels only, [`KvHead::with_pruned_keys`]) have fewer
/// channels, and the queries attending over them carry the same channels. Keys and values must have the same
/// storage type.
#[derive(Clone, Copy)]
pub struct KvHead<'a> {
    pub keys: KvRows<'a>,
    pub values: KvRows<'a>,
    /// Elements between consecutive positions' value rows.
    pub stride: usize,
    /// Element offset of this head inside a value row.
    pub offset: usize,
    pub head_dim: usize,
    /// Elements between consecutive positions' key rows.
    pub key_stride: usize,
    /// Element offset of this head inside a key row.
    pub key_offset: usize,
    /// Channels of a key row (and of the queries).
    pub key_dim: usize,
}

impl<'a> KvHead<'a> {
    /// Keys and values of `head_dim` channels each, rows `stride` elements apart, this head at `offset` in a row.
    pub fn new(
        keys: KvRows<'a>,
        values: KvRows<'a>,
        stride: usize,
        offset: usize,
        head_dim: usize,
    ) -> Self {
        Self {
            keys,
            values,
            stride,
            offset,
            head_dim,
            key_stride: stride,
            key_offset: offset,
            key_dim: head_dim,
        }
    }

    /// The same values with keys of `key_dim` channels, one packed row per position.
    pub fn with_pruned_keys(self, keys: KvRows<'a>, key_dim: usize) -> Self {
        Self {
            keys,
            key_stride: key_dim,
            key_offset: 0,
            key_dim,
            ..self
        }
    }
}

/// Quantises one row (one token, one head) to int8 with a symmetric per-row scale: returns the scale
/// (max |x| / 127, or 0 for an all-zero row) and writes round(x / scale) clamped to [-127, 127].
pub fn quantize_row_i8(x: &[f32], out: &mut [i8]) -> f32 {
    assert_eq!(x.len(), out.len(), "one int8 per value");
    let max = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    if max == 0.0 {
        out.fill(0);
        return 0.0;
    }
    let scale = max / 127.0;
    for (o, v) in out.iter_mut().zip(x) {
        *o = (v / scale).round().clamp(-127.0, 127.0) as i8;
    }
    scale
}

/// Position `p`'s key and value of one KV head, widened to f32 (int8 rows times their scale) into `key` and
/// `value` (`head_dim` long each). For reading the cache outside the fused kernel (token pruning).
pub fn kv_rows(kv: &KvHead, p: usize, key: &mut [f32], value: &mut [f32]) {
    with_rows!(kv, |keys, values| {
        for (rows, row, out) in [
            (keys, keys.key_row(kv, p), key),
            (values, values.row(kv, p), value),
        ] {
            let scale = if rows.scales.is_empty() {
                1.0
            } else {
                rows.scale(p)
            };
            for (o, x) in out.iter_mut().zip(row) {
                *o = x.widen() * scale;
            }
        }
    })
}

/// The first `rows` positions' keys and values of an f16 KV head widened to f32 (exactly) into `keys` and
/// `values`, as a KV head of its own (rows `head_dim` apart): for a cached block that many queries attend over, so
/// each element is converted once rather than once per kernel call. The kernels give the same bits over either
/// head. `None` for other storage types.
pub fn widened<'a>(
    kv: &KvHead,
    rows: usize,
    keys: &'a mut Vec<f32>,
    values: &'a mut Vec<f32>,
) -> Option<KvHead<'a>> {
    let (KvRows::F16(k), KvRows::F16(v)) = (kv.keys, kv.values) else {
        return None;
    };
    let (hd, kd) = (kv.head_dim, kv.key_dim);
    for (source, out, stride, offset, dim) in [
        (k, &mut *keys, kv.key_stride, kv.key_offset, kd),
        (v, &mut *values, kv.stride, kv.offset, hd),
    ] {
        out.resize(rows * dim, 0.0);
        let rows_in = |p: usize| &source[p * stride + offset..][..dim];
        #[cfg(target_arch = "x86_64")]
        if detected().has_avx2() && dim.is_multiple_of(8) {
            // SAFETY: `detected` reports F16C (part of the AVX2 set); rows are sliced with bounds checks.
            unsafe { crate::x86_avx2::attention::widen_f16_rows(source, stride, offset, dim, out) };
            continue;
        }
        for (p, row) in out.chunks_exact_mut(dim).enumerate() {
            for (o, h) in row.iter_mut().zip(rows_in(p)) {
                *o = h.to_f32();
            }
        }
    }
    let wide = KvHead::new(KvRows::F32(keys), KvRows::F32(values), hd, 0, hd);
    Some(if kd == hd {
        wide
    } else {
        wide.with_pruned_keys(wide.keys, kd)
    })
}

/// Asks the CPU to start loading the key rows of positions `positions` (a hint for the block attended next:
/// no effect on any result; a no-op without SSE).
pub fn prefetch_keys(kv: &KvHead, positions: Range<usize>) {
    #[cfg(target_arch = "x86_64")]
    with_rows!(kv, |keys, _values| {
        let base = keys.data.as_ptr().wrapping_add(kv.key_offset);
        let end = positions
            .end
            .min(keys.data.len().saturating_sub(kv.key_offset) / kv.key_stride.max(1));
        // SAFETY: prefetching is only a hint and never faults; the rows are inside `keys` anyway.
        unsafe {
            crate::x86_avx2::attention::prefetch_rows(
                base,
                positions.start..end,
                kv.key_stride,
                kv.key_dim,
            )
        }
    });
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (kv, positions);
}

/// A stored element type of keys and values.
pub(crate) trait KvElement: Widen {
    /// Rows carry one f32 scale each (int8).
    const SCALED: bool;
}

impl KvElement for f32 {
    const SCALED: bool = false;
}

impl KvElement for f16 {
    const SCALED: bool = false;
}

impl KvElement for i8 {
    const SCALED: bool = true;
}

/// Keys or values of one KV head in their element type; `scales` is empty unless `T::SCALED`.
#[derive(Clone, Copy)]
pub(crate) struct Rows<'a, T> {
    pub data: &'a [T],
    pub scales: &'a [f32],
    pub scale_stride: usize,
}

impl<'a, T: KvElement> Rows<'a, T> {
    pub(crate) fn plain(data: &'a [T]) -> Self {
        Rows {
            data,
            scales: &[],
            scale_stride: 0,
        }
    }

    /// Position `p`'s value row.
    #[inline(always)]
    fn row(&self, kv: &KvHead, p: usize) -> &'a [T] {
        &self.data[p * kv.stride + kv.offset..][..kv.head_dim]
    }

    /// Position `p`'s key row.
    #[inline(always)]
    fn key_row(&self, kv: &KvHead, p: usize) -> &'a [T] {
        &self.data[p * kv.key_stride + kv.key_offset..][..kv.key_dim]
    }

    /// Scale of position `p`'s row (int8 only).
    #[inline(always)]
    pub(crate) fn scale(&self, p: usize) -> f32 {
        self.scales[p * self.scale_stride]
    }
}

impl<'a> Rows<'a, i8> {
    pub(crate) fn int8(rows: &'a [i8], scales: &'a [f32], scale_stride: usize) -> Self {
        Rows {
            data: rows,
            scales,
            scale_stride,
        }
    }
}

/// Calls `$body` with `$keys` and `$values` bound to the KV head's [`Rows`] in their element type.
macro_rules! with_rows {
    ($kv:expr, |$keys:ident, $values:ident| $body:expr) => {{
        use $crate::attention::{KvRows, Rows, MIXED_STORAGE};
        match ($kv.keys, $kv.values) {
            (KvRows::F32(k), KvRows::F32(v)) => {
                let ($keys, $values) = (Rows::plain(k), Rows::plain(v));
                $body
            }
            (KvRows::F16(k), KvRows::F16(v)) => {
                let ($keys, $values) = (Rows::plain(k), Rows::plain(v));
                $body
            }
            (
                KvRows::I8 {
                    rows: k,
                    scales: ks,
                    scale_stride: kss,
                },
                KvRows::I8 {
                    rows: v,
                    scales: vs,
                    scale_stride: vss,
                },
            ) => {
                let ($keys, $values) = (Rows::int8(k, ks, kss), Rows::int8(v, vs, vss));
                $body
            }
            _ => panic!("{MIXED_STORAGE}"),
        }
    }};
}
pub(crate) use with_rows;

pub(crate) const MIXED_STORAGE: &str =
    "keys and values must have the same storage type (f32, f16 or int8)";

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
    attend_range_on(
        detected(),
        kv,
        positions,
        scale,
        queries,
        outs,
        scores,
        partials,
        false,
    )
}

/// [`attend_range`] for rows read once, straight from memory (a decoded token's pass over the cache): the
/// kernel also asks for the rows ahead of use. The results are the same bit for bit.
pub fn attend_range_streaming(
    kv: &KvHead,
    positions: Range<usize>,
    scale: f32,
    queries: &[&[f32]],
    outs: &mut [&mut [f32]],
    scores: &mut Vec<f32>,
    partials: &mut [Partial],
) {
    attend_range_on(
        detected(),
        kv,
        positions,
        scale,
        queries,
        outs,
        scores,
        partials,
        true,
    )
}

/// [`attend_range`] with the kernel of `isa` (or of the widest instruction set below it that this machine has):
/// AVX-512 and AVX2 give the same bits; the scalar reference differs in rounding.
#[allow(clippy::too_many_arguments)]
pub fn attend_range_on(
    isa: Isa,
    kv: &KvHead,
    positions: Range<usize>,
    scale: f32,
    queries: &[&[f32]],
    outs: &mut [&mut [f32]],
    scores: &mut Vec<f32>,
    partials: &mut [Partial],
    streaming: bool,
) {
    check(kv, positions.end, queries, outs);
    assert!(!positions.is_empty(), "at least one position");
    assert_eq!(partials.len(), queries.len(), "one partial per query");
    let isa = isa.usable();
    #[cfg(target_arch = "x86_64")]
    if isa.has_avx2() && kv.head_dim.is_multiple_of(32) && kv.key_dim.is_multiple_of(8) {
        let kernel = if isa == Isa::Avx512 {
            crate::x86_avx512::attention::attend_range
        } else {
            crate::x86_avx2::attention::attend_range
        };
        for ((queries, outs), partials) in queries
            .chunks(MAX_GROUP)
            .zip(outs.chunks_mut(MAX_GROUP))
            .zip(partials.chunks_mut(MAX_GROUP))
        {
            scores.resize(queries.len() * positions.len(), 0.0);
            // SAFETY: `usable` gives an instruction set this machine has (AVX-512 includes AVX2/FMA/F16C);
            // `check` verified every slice length.
            unsafe {
                kernel(
                    kv,
                    positions.clone(),
                    scale,
                    queries,
                    outs,
                    scores,
                    partials,
                    streaming,
                )
            };
        }
        return;
    }
    let _ = (streaming, isa);
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
    with_rows!(kv, |keys, values| scalar_rows(
        kv, keys, values, positions, scale, queries, outs, scores, partials
    ))
}

#[allow(clippy::too_many_arguments)]
fn scalar_rows<T: KvElement>(
    kv: &KvHead,
    keys: Rows<T>,
    values: Rows<T>,
    positions: Range<usize>,
    scale: f32,
    queries: &[&[f32]],
    outs: &mut [&mut [f32]],
    scores: &mut Vec<f32>,
    partials: &mut [Partial],
) {
    for ((query, out), partial) in queries.iter().zip(outs.iter_mut()).zip(partials) {
        scores.clear();
        scores.extend(positions.clone().map(|p| {
            let mut dot: f32 = query
                .iter()
                .zip(keys.key_row(kv, p))
                .map(|(a, b)| a * b.widen())
                .sum();
            if T::SCALED {
                dot *= keys.scale(p);
            }
            dot * scale
        }));
        let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut sum = 0.0f32;
        for s in scores.iter_mut() {
            *s = (*s - max).exp();
            sum += *s;
        }
        out.fill(0.0);
        for (p, &s) in positions.clone().zip(scores.iter()) {
            let w = if T::SCALED { s * values.scale(p) } else { s };
            for (o, v) in out.iter_mut().zip(values.row(kv, p)) {
                *o += w * v.widen();
            }
        }
        *partial = Partial { max, sum };
    }
}

/// Folds one more range's [`attend_range`] result (`partial`, `part`) into a running one (`running`, `out`),
/// both unnormalised: the online softmax of flash attention. Divide `out` by `running.sum` at the end.
pub fn merge_into(running: &mut Partial, out: &mut [f32], partial: Partial, part: &[f32]) {
    let max = running.max.max(partial.max);
    let (keep, add) = (exp_below(running.max - max), exp_below(partial.max - max));
    scale_and_add(out, keep, part, add);
    *running = Partial {
        max,
        sum: running.sum * keep + partial.sum * add,
    };
}

/// `e^d` for a difference `d <= 0` to the running maximum. One of each merge's two differences is 0, whose
/// exponential is exactly 1: it skips the libm call (a prefill calls this once per query, head and cache block).
/// (The vectorisable `activation::exp_approx` was tried here: one call at a time, its polynomial's latency made it
/// no faster than libm's `expf`.)
#[inline(always)]
fn exp_below(d: f32) -> f32 {
    if d == 0.0 {
        1.0
    } else {
        d.exp()
    }
}

/// `out[i] = out[i] · keep + part[i] · add`, compiled once per instruction set: Rust does not fuse the multiplies
/// and the add, so every width gives the same bits (the baseline build ran this 4 lanes wide: 6% of a long prefill).
fn scale_and_add(out: &mut [f32], keep: f32, part: &[f32], add: f32) {
    #[cfg(target_arch = "x86_64")]
    match detected() {
        // SAFETY: `detected` only reports instruction sets this machine has.
        Isa::Avx512 => return unsafe { scale_and_add_avx512(out, keep, part, add) },
        isa if isa.has_avx2() => return unsafe { scale_and_add_avx2(out, keep, part, add) },
        _ => {}
    }
    scale_and_add_plain(out, keep, part, add)
}

#[inline(always)]
fn scale_and_add_plain(out: &mut [f32], keep: f32, part: &[f32], add: f32) {
    for (o, p) in out.iter_mut().zip(part) {
        *o = *o * keep + p * add;
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn scale_and_add_avx2(out: &mut [f32], keep: f32, part: &[f32], add: f32) {
    scale_and_add_plain(out, keep, part, add)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,avx512f")]
unsafe fn scale_and_add_avx512(out: &mut [f32], keep: f32, part: &[f32], add: f32) {
    scale_and_add_plain(out, keep, part, add)
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
        let weight = exp_below(partial.max - max);
        sum += partial.sum * weight;
        for (o, v) in out.iter_mut().zip(part) {
            *o += weight * v;
        }
    }
    let inverse = 1.0 / sum;
    out.iter_mut().for_each(|o| *o *= inverse);
}

fn check(kv: &KvHead, visible: usize, queries: &[&[f32]], outs: &[&mut [f32]]) {
    assert!(
        std::mem::discriminant(&kv.keys) == std::mem::discriminant(&kv.values),
        "{MIXED_STORAGE}"
    );
    let hd = kv.head_dim;
    assert!(kv.offset + hd <= kv.stride, "head inside a cache row");
    assert!(
        kv.key_offset + kv.key_dim <= kv.key_stride,
        "head inside a key row"
    );
    if visible > 0 {
        let needed =
            |stride: usize, offset: usize, dim: usize| (visible - 1) * stride + offset + dim;
        for (rows, needed) in [
            (kv.keys, needed(kv.key_stride, kv.key_offset, kv.key_dim)),
            (kv.values, needed(kv.stride, kv.offset, hd)),
        ] {
            assert!(rows.len() >= needed, "{visible} positions cached");
            if let KvRows::I8 {
                scales,
                scale_stride,
                ..
            } = rows
            {
                assert!(
                    scales.len() > (visible - 1) * scale_stride,
                    "{visible} row scales cached"
                );
            }
        }
    }
    assert_eq!(queries.len(), outs.len(), "one output per query");
    assert!(queries.iter().all(|q| q.len() == kv.key_dim) && outs.iter().all(|o| o.len() == hd));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_values::values;

    #[derive(Clone, Copy, Debug)]
    enum Dtype {
        F32,
        F16,
        I8,
    }

    const DTYPES: [Dtype; 3] = [Dtype::F32, Dtype::F16, Dtype::I8];

    /// Cache rows of `heads` heads of `head_dim` values each, in one storage type; int8 has one scale per
    /// position and head (`scales[p * heads + head]`).
    enum Stored {
        F32(Vec<f32>),
        F16(Vec<f16>),
        I8 {
            rows: Vec<i8>,
            scales: Vec<f32>,
            heads: usize,
        },
    }

    impl Stored {
        fn new(data: &[f32], dtype: Dtype, head_dim: usize, heads: usize) -> Self {
            match dtype {
                Dtype::F32 => Stored::F32(data.to_vec()),
                Dtype::F16 => Stored::F16(data.iter().map(|&x| f16::from_f32(x)).collect()),
                Dtype::I8 => {
                    let mut rows = vec![0i8; data.len()];
                    let scales = data
                        .chunks_exact(head_dim)
                        .zip(rows.chunks_exact_mut(head_dim))
                        .map(|(x, out)| quantize_row_i8(x, out))
                        .collect();
                    Stored::I8 {
                        rows,
                        scales,
                        heads,
                    }
                }
            }
        }

        fn rows(&self, head: usize) -> KvRows<'_> {
            match self {
                Stored::F32(rows) => KvRows::F32(rows),
                Stored::F16(rows) => KvRows::F16(rows),
                Stored::I8 {
                    rows,
                    scales,
                    heads,
                } => KvRows::I8 {
                    rows,
                    scales: &scales[head..],
                    scale_stride: *heads,
                },
            }
        }
    }

    /// Keys and values of `visible` positions of `heads` heads, stored as `dtype`.
    fn cache(
        dtype: Dtype,
        head_dim: usize,
        heads: usize,
        visible: usize,
        seed: u32,
    ) -> (Stored, Stored) {
        let n = visible * heads * head_dim;
        (
            Stored::new(&values(n, seed), dtype, head_dim, heads),
            Stored::new(&values(n, seed + 1), dtype, head_dim, heads),
        )
    }

    fn kv_head<'a>(
        (keys, vals): &'a (Stored, Stored),
        head: usize,
        head_dim: usize,
        heads: usize,
    ) -> KvHead<'a> {
        KvHead::new(
            keys.rows(head),
            vals.rows(head),
            head_dim * heads,
            head * head_dim,
            head_dim,
        )
    }

    /// Normalised attention of each query over `0..visible`, written into one buffer.
    fn attention(kv: &KvHead, visible: usize, queries: &[&[f32]]) -> Vec<f32> {
        let mut out = vec![0.0; queries.len() * kv.head_dim];
        let mut outs: Vec<&mut [f32]> = out.chunks_mut(kv.head_dim).collect();
        attend(kv, visible, 0.125, queries, &mut outs, &mut Vec::new());
        out
    }

    #[test]
    fn vector_kernel_equals_the_scalar_reference() {
        for dtype in DTYPES {
            for (head_dim, kv_heads, group, visible) in [
                (64, 3, 3, 1),
                (64, 3, 3, 37),
                (128, 2, 4, 300),
                (32, 1, 6, 9),
                (8, 2, 2, 5),
            ] {
                let stored = cache(dtype, head_dim, kv_heads, visible, 1);
                let queries = values(group * head_dim, 3);
                let queries: Vec<&[f32]> = queries.chunks(head_dim).collect();
                for head in 0..kv_heads {
                    let kv = kv_head(&stored, head, head_dim, kv_heads);
                    let fast = attention(&kv, visible, &queries);
                    let mut reference = vec![0.0; group * head_dim];
                    let mut outs: Vec<&mut [f32]> = reference.chunks_mut(head_dim).collect();
                    let mut partials = vec![Partial::default(); group];
                    attend_range_scalar(
                        &kv,
                        0..visible,
                        0.125,
                        &queries,
                        &mut outs,
                        &mut Vec::new(),
                        &mut partials,
                    );
                    for (out, partial) in reference.chunks_mut(head_dim).zip(&partials) {
                        out.iter_mut().for_each(|o| *o /= partial.sum);
                    }
                    for (f, r) in fast.iter().zip(&reference) {
                        assert!(
                            (f - r).abs() <= 1e-5 * r.abs().max(1.0),
                            "{dtype:?} hd={head_dim} group={group} visible={visible}: {f} vs {r}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn half_and_int8_caches_are_close_to_f32() {
        for (head_dim, kv_heads, group, visible) in [(64, 3, 3, 37), (128, 2, 4, 300), (8, 2, 2, 5)]
        {
            let queries = values(group * head_dim, 3);
            let queries: Vec<&[f32]> = queries.chunks(head_dim).collect();
            let exact = cache(Dtype::F32, head_dim, kv_heads, visible, 1);
            for (dtype, tolerance) in [(Dtype::F16, 2e-3), (Dtype::I8, 2e-2)] {
                let stored = cache(dtype, head_dim, kv_heads, visible, 1);
                for head in 0..kv_heads {
                    let want = attention(
                        &kv_head(&exact, head, head_dim, kv_heads),
                        visible,
                        &queries,
                    );
                    let got = attention(
                        &kv_head(&stored, head, head_dim, kv_heads),
                        visible,
                        &queries,
                    );
                    let largest = want.iter().fold(0.0f32, |m, w| m.max(w.abs()));
                    let error = got
                        .iter()
                        .zip(&want)
                        .fold(0.0f32, |m, (g, w)| m.max((g - w).abs()));
                    assert!(
                        error <= tolerance * largest,
                        "{dtype:?} hd={head_dim} visible={visible}: error {error}, max |out| {largest}"
                    );
                }
            }
        }
    }

    #[test]
    fn int8_rows_round_trip_within_half_a_step() {
        let x = values(96, 11);
        let mut q = vec![0i8; x.len()];
        let scale = quantize_row_i8(&x, &mut q);
        let largest = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        assert_eq!(scale, largest / 127.0);
        assert_eq!(q.iter().map(|q| q.unsigned_abs()).max(), Some(127));
        for (x, q) in x.iter().zip(&q) {
            let error = (x - scale * *q as f32).abs();
            assert!(
                error <= scale * 0.5 * (1.0 + 1e-5),
                "{x} -> {q}: error {error}"
            );
        }
        let mut q = vec![5i8; 8];
        assert_eq!(quantize_row_i8(&[0.0; 8], &mut q), 0.0);
        assert_eq!(q, [0; 8]);
    }

    /// Outputs and softmax statistics of [`attend_range_on`] as bits.
    fn bits_on(
        isa: Isa,
        kv: &KvHead,
        positions: Range<usize>,
        queries: &[&[f32]],
        streaming: bool,
    ) -> (Vec<u32>, Vec<(u32, u32)>) {
        let mut out = vec![0.0f32; queries.len() * kv.head_dim];
        let mut outs: Vec<&mut [f32]> = out.chunks_mut(kv.head_dim).collect();
        let mut partials = vec![Partial::default(); queries.len()];
        attend_range_on(
            isa,
            kv,
            positions,
            0.125,
            queries,
            &mut outs,
            &mut Vec::new(),
            &mut partials,
            streaming,
        );
        let stats = partials
            .iter()
            .map(|p| (p.max.to_bits(), p.sum.to_bits()))
            .collect();
        (out.iter().map(|v| v.to_bits()).collect(), stats)
    }

    /// The AVX-512 kernel gives the AVX2 kernel's bits for every storage type, head size (one or two 64-column
    /// passes, a 32-column rest), group size (1 to 4 and a split of 6), and block length (whole eights, sixteens
    /// and every tail).
    #[test]
    fn avx512_gives_the_avx2_bits() {
        if detected() != Isa::Avx512 {
            println!(
                "notice: this machine (or SEEDINFER_ISA) gives {:?}, not AVX-512: the AVX-512 attention is not checked",
                detected()
            );
            return;
        }
        for dtype in DTYPES {
            for head_dim in [32, 64, 96, 128, 256] {
                let heads = 2;
                let stored = cache(dtype, head_dim, heads, 90, 7);
                let kv = kv_head(&stored, 1, head_dim, heads);
                for group in [1, 2, 3, 4, 6] {
                    let queries = values(group * head_dim, 13 + group as u32);
                    let queries: Vec<&[f32]> = queries.chunks(head_dim).collect();
                    for positions in [
                        0..1,
                        3..10,
                        0..8,
                        5..21,
                        0..16,
                        7..31,
                        0..32,
                        2..35,
                        0..57,
                        1..90,
                    ] {
                        for streaming in [false, true] {
                            assert_eq!(
                                bits_on(Isa::Avx512, &kv, positions.clone(), &queries, streaming),
                                bits_on(Isa::Avx2, &kv, positions.clone(), &queries, streaming),
                                "{dtype:?} hd={head_dim} group={group} positions={positions:?}"
                            );
                        }
                    }
                }
            }
        }
    }

    /// The rows of `pruned` (`kept.len()` channels each, one head) put back at channels `kept` of `head_dim`-wide
    /// rows, the others zero, with the same int8 row scales.
    fn zero_filled(pruned: &Stored, kept: &[usize], head_dim: usize) -> Stored {
        fn scatter<T: Copy + Default>(rows: &[T], kept: &[usize], head_dim: usize) -> Vec<T> {
            rows.chunks_exact(kept.len())
                .flat_map(|row| {
                    let mut full = vec![T::default(); head_dim];
                    kept.iter().zip(row).for_each(|(&c, &x)| full[c] = x);
                    full
                })
                .collect()
        }
        match pruned {
            Stored::F32(rows) => Stored::F32(scatter(rows, kept, head_dim)),
            Stored::F16(rows) => Stored::F16(scatter(rows, kept, head_dim)),
            Stored::I8 {
                rows,
                scales,
                heads,
            } => Stored::I8 {
                rows: scatter(rows, kept, head_dim),
                scales: scales.clone(),
                heads: *heads,
            },
        }
    }

    /// Pruned keys (ThinK) attended with queries of their channels give what the full-width keys with the dropped
    /// channels zeroed give, on every kernel (key widths of whole sixteens and of an odd number of eights, every
    /// tail of positions), and the AVX-512 kernel gives the AVX2 bits.
    #[test]
    fn pruned_keys_equal_zero_filled_keys() {
        let (head_dim, visible, group) = (64, 45, 3);
        for dtype in DTYPES {
            for key_dim in [40, 48, 24] {
                // Every channel but a spread of dropped ones, in ascending order.
                let kept: Vec<usize> = (0..head_dim)
                    .filter(|c| (c * 7 + 3) % head_dim >= head_dim - key_dim)
                    .collect();
                assert_eq!(kept.len(), key_dim);
                let full_keys = values(visible * head_dim, 5);
                let gathered: Vec<f32> = full_keys
                    .chunks_exact(head_dim)
                    .flat_map(|row| kept.iter().map(|&c| row[c]))
                    .collect();
                let pruned_keys = Stored::new(&gathered, dtype, key_dim, 1);
                let stored_values = Stored::new(&values(visible * head_dim, 6), dtype, head_dim, 1);
                let zero_filled_keys = zero_filled(&pruned_keys, &kept, head_dim);
                let dense = KvHead::new(
                    zero_filled_keys.rows(0),
                    stored_values.rows(0),
                    head_dim,
                    0,
                    head_dim,
                );
                let pruned = dense.with_pruned_keys(pruned_keys.rows(0), key_dim);
                let queries = values(group * head_dim, 7);
                let narrow: Vec<f32> = queries
                    .chunks_exact(head_dim)
                    .flat_map(|q| kept.iter().map(|&c| q[c]))
                    .collect();
                let queries: Vec<&[f32]> = queries.chunks(head_dim).collect();
                let narrow: Vec<&[f32]> = narrow.chunks(key_dim).collect();
                for positions in [0..45, 3..40, 9..10, 0..8, 1..17] {
                    let want = bits_on(Isa::Scalar, &dense, positions.clone(), &queries, false);
                    for isa in [Isa::Scalar, Isa::Avx2, Isa::Avx512] {
                        let got = bits_on(isa, &pruned, positions.clone(), &narrow, false);
                        for (g, w) in got.0.iter().zip(&want.0) {
                            let (g, w) = (f32::from_bits(*g), f32::from_bits(*w));
                            assert!(
                                (g - w).abs() <= 1e-5 * w.abs().max(1.0),
                                "{dtype:?} {isa:?} key_dim={key_dim} {positions:?}: {g} vs {w}"
                            );
                        }
                    }
                    if detected() == Isa::Avx512 {
                        for streaming in [false, true] {
                            assert_eq!(
                                bits_on(
                                    Isa::Avx512,
                                    &pruned,
                                    positions.clone(),
                                    &narrow,
                                    streaming
                                ),
                                bits_on(Isa::Avx2, &pruned, positions.clone(), &narrow, streaming),
                                "{dtype:?} key_dim={key_dim} {positions:?}"
                            );
                        }
                    }
                }
                // Widening an f16 head keeps its pruned keys.
                let (mut wide_keys, mut wide_values) = (Vec::new(), Vec::new());
                if let Some(wide) = widened(&pruned, visible, &mut wide_keys, &mut wide_values) {
                    assert_eq!(
                        bits_on(Isa::Avx2, &wide, 0..visible, &narrow, false),
                        bits_on(Isa::Avx2, &pruned, 0..visible, &narrow, false)
                    );
                }
            }
        }
    }

    /// A widened f16 head gives the f16 head's bits on every kernel.
    #[test]
    fn widened_f16_rows_give_the_same_bits() {
        for head_dim in [32, 64, 8] {
            let heads = 3;
            let stored = cache(Dtype::F16, head_dim, heads, 45, 21);
            let kv = kv_head(&stored, 2, head_dim, heads);
            let (mut keys, mut values) = (Vec::new(), Vec::new());
            let wide = widened(&kv, 45, &mut keys, &mut values).unwrap();
            let queries = values_for(head_dim);
            let queries: Vec<&[f32]> = queries.chunks(head_dim).collect();
            for isa in [Isa::Scalar, Isa::Avx2, Isa::Avx512] {
                for positions in [0..45, 3..40, 9..10] {
                    assert_eq!(
                        bits_on(isa, &wide, positions.clone(), &queries, false),
                        bits_on(isa, &kv, positions.clone(), &queries, false),
                        "{isa:?} hd={head_dim} {positions:?}"
                    );
                }
            }
        }
        let stored = cache(Dtype::I8, 32, 1, 4, 1);
        assert!(widened(
            &kv_head(&stored, 0, 32, 1),
            4,
            &mut Vec::new(),
            &mut Vec::new()
        )
        .is_none());
    }

    fn values_for(head_dim: usize) -> Vec<f32> {
        values(5 * head_dim, 23)
    }

    #[test]
    fn merges_give_the_same_bits_at_every_width() {
        for len in [64, 7, 33, 128] {
            let (out, part) = (values(len, 31), values(len, 37));
            let mut plain = out.clone();
            scale_and_add_plain(&mut plain, 0.37, &part, 0.91);
            let mut wide = out.clone();
            scale_and_add(&mut wide, 0.37, &part, 0.91);
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&wide), bits(&plain), "len {len}");
        }
        assert_eq!(exp_below(0.0), 1.0);
        assert!(exp_below(f32::NEG_INFINITY) < 1e-37);
        assert_eq!(exp_below(-1.0), (-1.0f32).exp());
    }

    #[test]
    fn streaming_and_prefetching_give_the_same_bits() {
        for dtype in DTYPES {
            for (head_dim, positions) in [(64, 3..40), (128, 0..17), (32, 5..6), (8, 0..11)] {
                let heads = 2;
                let stored = cache(dtype, head_dim, heads, positions.end, 4);
                let kv = kv_head(&stored, 1, head_dim, heads);
                prefetch_keys(&kv, 0..positions.end + 100);
                let queries = values(3 * head_dim, 9);
                let queries: Vec<&[f32]> = queries.chunks(head_dim).collect();
                let results = [attend_range, attend_range_streaming].map(|attend| {
                    let mut out = vec![0.0f32; queries.len() * head_dim];
                    let mut outs: Vec<&mut [f32]> = out.chunks_mut(head_dim).collect();
                    let mut partials = vec![Partial::default(); queries.len()];
                    attend(
                        &kv,
                        positions.clone(),
                        0.125,
                        &queries,
                        &mut outs,
                        &mut Vec::new(),
                        &mut partials,
                    );
                    let bits: Vec<u32> = out.iter().map(|v| v.to_bits()).collect();
                    let stats: Vec<(u32, u32)> = partials
                        .iter()
                        .map(|p| (p.max.to_bits(), p.sum.to_bits()))
                        .collect();
                    (bits, stats)
                });
                assert_eq!(results[0], results[1], "{dtype:?} hd={head_dim}");
            }
        }
    }

    #[test]
    fn a_query_gives_the_same_bits_alone_or_in_a_group() {
        for dtype in DTYPES {
            for (head_dim, positions) in [(64, 3..40), (128, 0..17), (32, 5..6), (8, 0..11)] {
                let heads = 2;
                let stored = cache(dtype, head_dim, heads, positions.end, 4);
                let kv = kv_head(&stored, 1, head_dim, heads);
                let queries = values(MAX_GROUP * head_dim, 6);
                let queries: Vec<&[f32]> = queries.chunks(head_dim).collect();
                let run = |queries: &[&[f32]]| {
                    let mut out = vec![0.0f32; queries.len() * head_dim];
                    let mut outs: Vec<&mut [f32]> = out.chunks_mut(head_dim).collect();
                    let mut partials = vec![Partial::default(); queries.len()];
                    attend_range(
                        &kv,
                        positions.clone(),
                        0.125,
                        queries,
                        &mut outs,
                        &mut Vec::new(),
                        &mut partials,
                    );
                    (out, partials)
                };
                let (together, together_partials) = run(&queries);
                for (g, query) in queries.iter().enumerate() {
                    let (alone, alone_partials) = run(&[query]);
                    let together = &together[g * head_dim..(g + 1) * head_dim];
                    assert!(
                        alone
                            .iter()
                            .zip(together)
                            .all(|(a, t)| a.to_bits() == t.to_bits()),
                        "{dtype:?} hd={head_dim} query {g}: outputs differ"
                    );
                    assert_eq!(
                        (
                            alone_partials[0].max.to_bits(),
                            alone_partials[0].sum.to_bits()
                        ),
                        (
                            together_partials[g].max.to_bits(),
                            together_partials[g].sum.to_bits()
                        ),
                        "{dtype:?} hd={head_dim} query {g}: partials differ"
                    );
                }
            }
        }
    }

    #[test]
    #[should_panic(expected = "same storage type")]
    fn keys_and_values_of_different_types_panic() {
        let keys = values(64, 1);
        let vals: Vec<f16> = values(64, 2).into_iter().map(f16::from_f32).collect();
        let kv = KvHead::new(KvRows::F32(&keys), KvRows::F16(&vals), 64, 0, 64);
        let query = values(64, 3);
        attend(
            &kv,
            1,
            0.125,
            &[&query],
            &mut [&mut [0.0; 64]],
            &mut Vec::new(),
        );
    }

    #[test]
    #[should_panic(expected = "row scales cached")]
    fn too_few_int8_row_scales_panic() {
        let (rows, scales) = (vec![1i8; 3 * 64], vec![1.0f32; 3]);
        let kv = KvHead::new(
            KvRows::I8 {
                rows: &rows,
                scales: &scales,
                scale_stride: 1,
            },
            KvRows::I8 {
                rows: &rows,
                scales: &scales[1..],
                scale_stride: 1,
            },
            64,
            0,
            64,
        );
        let query = values(64, 3);
        attend(
            &kv,
            3,
            0.125,
            &[&query],
            &mut [&mut [0.0; 64]],
            &mut Vec::new(),
        );
    }

    #[test]
    fn ranges_merged_equal_attention_over_all_positions() {
        let (head_dim, heads, visible, group) = (64, 3, 301, 3);
        for dtype in DTYPES {
            let stored = cache(dtype, head_dim, heads, visible, 8);
            let kv = kv_head(&stored, 1, head_dim, heads);
            let queries = values(group * head_dim, 10);
            let queries: Vec<&[f32]> = queries.chunks(head_dim).collect();
            let whole = attention(&kv, visible, &queries);
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
                        "{dtype:?} online {o} vs {w}"
                    );
                }
                let mut merged = vec![0.0; head_dim];
                let pieces = parts
                    .iter()
                    .zip(&partials)
                    .map(|(part, partial)| (partial[g], &part[g * head_dim..(g + 1) * head_dim]));
                merge(pieces, &mut merged);
                for (m, w) in merged.iter().zip(&whole[g * head_dim..(g + 1) * head_dim]) {
                    assert!(
                        (m - w).abs() <= 1e-5 * w.abs().max(1.0),
                        "{dtype:?} {m} vs {w}"
                    );
                }
            }
        }
    }

    #[test]
    fn one_visible_position_returns_its_value() {
        let kv_values = values(64, 5);
        let keys = values(64, 6);
        let kv = KvHead::new(KvRows::F32(&keys), KvRows::F32(&kv_values), 64, 0, 64);
        let query = values(64, 7);
        let mut out = vec![0.0; 64];
        attend(&kv, 1, 0.125, &[&query], &mut [&mut out], &mut Vec::new());
        for (o, v) in out.iter().zip(&kv_values) {
            assert!((o - v).abs() <= 1e-6 * v.abs().max(1.0));
        }
    }
}
