//! ggml block formats (Q4_0, Q4_1, Q8_0), their dequantizers, and the reference
//! quantizers from ggml-quants.c (`quantize_row_*_ref`), reproduced bit-exactly so
//! that files written here are indistinguishable from llama.cpp's.
//!
//! Blocks in files are not necessarily aligned for `f16`, so they are always read
//! with `bytemuck::pod_read_unaligned` instead of casting slices in place.

use bytemuck::{Pod, Zeroable};
use half::{bf16, f16};

use crate::error::{FormatError, Result};
use crate::tensor_type::TensorType;

/// Elements per quantization block for every Q* type this crate supports.
pub const QK: usize = 32;

// GGUF is little-endian and the block structs below mirror file bytes directly.
#[cfg(target_endian = "big")]
compile_error!("seedinfer-formats assumes a little-endian target");

/// 32 weights as 4-bit signed offsets around 8: `x = (q - 8) * d`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct BlockQ4_0 {
    pub d: f16,
    /// Element j (0..16) in the low nibble of `qs[j]`, element j+16 in the high nibble.
    pub qs: [u8; QK / 2],
}

/// 32 weights as 4-bit unsigned steps above a minimum: `x = q * d + m`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct BlockQ4_1 {
    pub d: f16,
    pub m: f16,
    /// Same nibble layout as [`BlockQ4_0::qs`].
    pub qs: [u8; QK / 2],
}

/// 32 weights as signed bytes: `x = q * d`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct BlockQ8_0 {
    pub d: f16,
    pub qs: [i8; QK],
}

pub const BLOCK_Q4_0_BYTES: usize = 18;
pub const BLOCK_Q4_1_BYTES: usize = 20;
pub const BLOCK_Q8_0_BYTES: usize = 34;

// The on-disk layout is fixed by ggml; any padding would silently break files.
const _: () = assert!(std::mem::size_of::<BlockQ4_0>() == BLOCK_Q4_0_BYTES);
const _: () = assert!(std::mem::size_of::<BlockQ4_1>() == BLOCK_Q4_1_BYTES);
const _: () = assert!(std::mem::size_of::<BlockQ8_0>() == BLOCK_Q8_0_BYTES);

/// f32 → bf16 exactly like ggml's `ggml_compute_fp32_to_bf16`: round to nearest
/// even, NaNs forced quiet (and never rounded into infinity).
pub fn f32_to_bf16(value: f32) -> bf16 {
    let bits = value.to_bits();
    if bits & 0x7fff_ffff > 0x7f80_0000 {
        return bf16::from_bits(((bits >> 16) | 64) as u16);
    }
    let rounding_bias = 0x7fff + ((bits >> 16) & 1);
    bf16::from_bits((bits.wrapping_add(rounding_bias) >> 16) as u16)
}

/// f32 → f16 with round-to-nearest-even (what ggml gets from F16C / `vcvt`).
pub fn f32_to_f16(value: f32) -> f16 {
    f16::from_f32(value)
}

fn check_row(tensor_type: TensorType, bytes_len: usize, elements: usize) -> Result<()> {
    let expected = tensor_type.row_bytes(elements)?;
    if expected != bytes_len {
        return Err(FormatError::invalid_argument(format!(
            "{} row of {elements} elements needs {expected} bytes, got {bytes_len}",
            tensor_type.name()
        )));
    }
    Ok(())
}

/// Decodes one row (or any whole number of blocks) of `tensor_type` into `out`.
/// `out.len()` is the element count; `bytes` must be exactly that many elements.
pub fn dequantize_row(tensor_type: TensorType, bytes: &[u8], out: &mut [f32]) -> Result<()> {
    check_row(tensor_type, bytes.len(), out.len())?;
    match tensor_type {
        TensorType::F32 => {
            for (dst, src) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                *dst = bytemuck::pod_read_unaligned::<f32>(src);
            }
        }
        TensorType::F16 => {
            for (dst, src) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *dst = f16::from_bits(bytemuck::pod_read_unaligned(src)).to_f32();
            }
        }
        TensorType::BF16 => {
            for (dst, src) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *dst = bf16::from_bits(bytemuck::pod_read_unaligned(src)).to_f32();
            }
        }
        TensorType::Q4_0 => {
            for (dst, src) in out
                .chunks_exact_mut(QK)
                .zip(bytes.chunks_exact(BLOCK_Q4_0_BYTES))
            {
                let block: BlockQ4_0 = bytemuck::pod_read_unaligned(src);
                let d = block.d.to_f32();
                let (low, high) = dst.split_at_mut(QK / 2);
                for ((lo, hi), &q) in low.iter_mut().zip(high.iter_mut()).zip(&block.qs) {
                    *lo = ((q & 0x0f) as i32 - 8) as f32 * d;
                    *hi = ((q >> 4) as i32 - 8) as f32 * d;
                }
            }
        }
        TensorType::Q4_1 => {
            for (dst, src) in out
                .chunks_exact_mut(QK)
                .zip(bytes.chunks_exact(BLOCK_Q4_1_BYTES))
            {
                let block: BlockQ4_1 = bytemuck::pod_read_unaligned(src);
                let d = block.d.to_f32();
                let m = block.m.to_f32();
                let (low, high) = dst.split_at_mut(QK / 2);
                for ((lo, hi), &q) in low.iter_mut().zip(high.iter_mut()).zip(&block.qs) {
                    *lo = (q & 0x0f) as f32 * d + m;
                    *hi = (q >> 4) as f32 * d + m;
                }
            }
        }
        TensorType::Q8_0 => {
            for (dst, src) in out
                .chunks_exact_mut(QK)
                .zip(bytes.chunks_exact(BLOCK_Q8_0_BYTES))
            {
                let block: BlockQ8_0 = bytemuck::pod_read_unaligned(src);
                let d = block.d.to_f32();
                for (x, &q) in dst.iter_mut().zip(&block.qs) {
                    *x = q as f32 * d;
                }
            }
        }
        TensorType::Q3Rtn => crate::q3_rtn::dequantize(bytes, out),
        TensorType::SeedLm4 | TensorType::SeedLm3 => {
            return Err(FormatError::invalid_argument(format!(
                "{tensor_type} rows need their tensor's exponent base: decode them with seedlm::decode_row"
            )))
        }
    }
    Ok(())
}

/// Encodes `values` as `tensor_type` and appends the bytes to `out`.
///
/// Quantized types follow ggml's `quantize_row_q4_0_ref`, `_q4_1_ref` and
/// `_q8_0_ref` exactly (same scale choice, same rounding, same clamping), so the
/// output is byte-identical to llama.cpp's reference quantizer.
pub fn quantize_row(tensor_type: TensorType, values: &[f32], out: &mut Vec<u8>) -> Result<()> {
    let bytes_needed = tensor_type.row_bytes(values.len())?;
    out.reserve(bytes_needed);
    match tensor_type {
        TensorType::F32 => {
            for v in values {
                out.extend_from_slice(&v.to_le_bytes());
            }
        }
        TensorType::F16 => {
            for &v in values {
                out.extend_from_slice(&f32_to_f16(v).to_le_bytes());
            }
        }
        TensorType::BF16 => {
            for &v in values {
                out.extend_from_slice(&f32_to_bf16(v).to_le_bytes());
            }
        }
        TensorType::Q4_0 => {
            for chunk in values.chunks_exact(QK) {
                out.extend_from_slice(bytemuck::bytes_of(&quantize_block_q4_0(chunk)));
            }
        }
        TensorType::Q4_1 => {
            for chunk in values.chunks_exact(QK) {
                out.extend_from_slice(bytemuck::bytes_of(&quantize_block_q4_1(chunk)));
            }
        }
        TensorType::Q8_0 => {
            for chunk in values.chunks_exact(QK) {
                out.extend_from_slice(bytemuck::bytes_of(&quantize_block_q8_0(chunk)));
            }
        }
        TensorType::Q3Rtn => crate::q3_rtn::quantize(values, out),
        TensorType::SeedLm4 | TensorType::SeedLm3 => {
            return Err(FormatError::invalid_argument(format!(
                "{tensor_type} is encoded a tensor at a time: use seedlm::encode_matrix"
            )))
        }
    }
    Ok(())
}

/// C's `(int8_t)x` for the in-range values ggml produces, then `MIN(15, ..)` and the
/// implicit conversion to `uint8_t`. Rust's saturating cast keeps out-of-range
/// inputs (NaN/inf weights) from being undefined behaviour as they are in C.
fn nibble_from(x: f32) -> u8 {
    ((x as i8).min(15)) as u8
}

/// `quantize_row_q4_0_ref` for one block: the scale comes from the element with
/// the largest magnitude *keeping its sign* (d = max / -8), so that element maps
/// exactly to -8 and the asymmetric range [-8, 7] is used fully.
pub fn quantize_block_q4_0(x: &[f32]) -> BlockQ4_0 {
    let mut amax = 0.0f32;
    let mut max = 0.0f32;
    for &v in x.iter().take(QK) {
        if amax < v.abs() {
            amax = v.abs();
            max = v;
        }
    }
    let d = max / -8.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let mut block = BlockQ4_0 {
        d: f32_to_f16(d),
        qs: [0; QK / 2],
    };
    for (j, q) in block.qs.iter_mut().enumerate() {
        let x0 = x.get(j).copied().unwrap_or(0.0) * id;
        let x1 = x.get(j + QK / 2).copied().unwrap_or(0.0) * id;
        *q = nibble_from(x0 + 8.5) | (nibble_from(x1 + 8.5) << 4);
    }
    block
}

/// `quantize_row_q4_1_ref` for one block: d = (max - min) / 15, m = min.
pub fn quantize_block_q4_1(x: &[f32]) -> BlockQ4_1 {
    let mut min = f32::MAX;
    let mut max = -f32::MAX;
    for &v in x.iter().take(QK) {
        if v < min {
            min = v;
        }
        if v > max {
            max = v;
        }
    }
    let d = (max - min) / 15.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let mut block = BlockQ4_1 {
        d: f32_to_f16(d),
        m: f32_to_f16(min),
        qs: [0; QK / 2],
    };
    for (j, q) in block.qs.iter_mut().enumerate() {
        let x0 = (x.get(j).copied().unwrap_or(0.0) - min) * id;
        let x1 = (x.get(j + QK / 2).copied().unwrap_or(0.0) - min) * id;
        *q = nibble_from(x0 + 0.5) | (nibble_from(x1 + 0.5) << 4);
    }
    block
}

/// `quantize_row_q8_0_ref` for one block: d = amax / 127, q = roundf(x / d)
/// (round half away from zero, which is what Rust's `f32::round` does too).
pub fn quantize_block_q8_0(x: &[f32]) -> BlockQ8_0 {
    let mut amax = 0.0f32;
    for &v in x.iter().take(QK) {
        // MAX(a, b) in C is `a > b ? a : b`.
        let abs = v.abs();
        amax = if amax > abs { amax } else { abs };
    }
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let mut block = BlockQ8_0 {
        d: f32_to_f16(d),
        qs: [0; QK],
    };
    for (q, &v) in block.qs.iter_mut().zip(x) {
        *q = (v * id).round() as i8;
    }
    block
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp(n: usize, scale: f32, offset: f32) -> Vec<f32> {
        (0..n)
            .map(|i| ((i as f32 * 0.37).sin() * scale) + offset)
            .collect()
    }

    fn round_trip(t: TensorType, values: &[f32]) -> Vec<f32> {
        let mut bytes = Vec::new();
        quantize_row(t, values, &mut bytes).unwrap();
        assert_eq!(bytes.len(), t.row_bytes(values.len()).unwrap());
        let mut out = vec![0.0; values.len()];
        dequantize_row(t, &bytes, &mut out).unwrap();
        out
    }

    #[test]
    fn round_trip_error_bounds() {
        let values = ramp(256, 2.0, 0.25);
        for (t, bound_fraction_of_range) in [
            (TensorType::F32, 0.0),
            (TensorType::F16, 1e-3),
            (TensorType::BF16, 8e-3),
            // 4-bit: error at most half a step plus f16 rounding of the scale.
            (TensorType::Q4_0, 1.0 / 16.0 + 1e-2),
            (TensorType::Q4_1, 1.0 / 30.0 + 1e-2),
            (TensorType::Q8_0, 1.0 / 254.0 + 1e-3),
        ] {
            let back = round_trip(t, &values);
            for block in 0..values.len() / 32 {
                let chunk = &values[block * 32..block * 32 + 32];
                let amax = chunk.iter().fold(0f32, |a, v| a.max(v.abs()));
                let range = chunk.iter().cloned().fold(f32::MIN, f32::max)
                    - chunk.iter().cloned().fold(f32::MAX, f32::min);
                let scale = if t == TensorType::Q4_1 { range } else { amax };
                for i in block * 32..block * 32 + 32 {
                    let err = (back[i] - values[i]).abs();
                    assert!(
                        err <= bound_fraction_of_range * scale * 2.0 + f32::EPSILON,
                        "{t}: value {} decoded as {} (err {err})",
                        values[i],
                        back[i]
                    );
                }
            }
        }
    }

    #[test]
    fn q4_0_scale_comes_from_signed_max_magnitude() {
        let mut x = vec![0.5f32; 32];
        x[3] = -4.0; // largest magnitude, negative
        x[20] = 3.0;
        let b = quantize_block_q4_0(&x);
        assert_eq!(b.d.to_f32(), 0.5); // -4 / -8
                                       // -4 * (1/0.5) + 8.5 = 0.5 -> 0; low nibble of qs[3]
        assert_eq!(b.qs[3] & 0x0f, 0);
        // element 20 = high nibble of qs[4]: 3*2 + 8.5 = 14.5 -> 14
        assert_eq!(b.qs[4] >> 4, 14);
        let mut out = vec![0.0; 32];
        dequantize_row(TensorType::Q4_0, bytemuck::bytes_of(&b), &mut out).unwrap();
        assert_eq!(out[3], -4.0);
        assert_eq!(out[20], 3.0);

        // Positive max maps to -8 as well (d negative), which is ggml's quirk.
        let mut y = vec![0.0f32; 32];
        y[0] = 8.0;
        let b = quantize_block_q4_0(&y);
        assert_eq!(b.d.to_f32(), -1.0);
        assert_eq!(b.qs[0] & 0x0f, 0);
        assert_eq!(b.qs[1] & 0x0f, 8); // zero -> 8
    }

    #[test]
    fn q4_0_clamps_to_15() {
        // max magnitude -1 -> d = 0.125, id = 8; +1 maps to 8 + 8.5 = 16.5 -> clamp 15.
        let mut x = vec![0.0f32; 32];
        x[0] = -1.0;
        x[1] = 1.0;
        let b = quantize_block_q4_0(&x);
        assert_eq!(b.qs[1] & 0x0f, 15);
    }

    #[test]
    fn q4_1_uses_min_and_range() {
        let x: Vec<f32> = (0..32).map(|i| 1.0 + i as f32 * 0.5).collect(); // 1 ..= 16.5
        let b = quantize_block_q4_1(&x);
        assert_eq!(b.m.to_f32(), 1.0);
        assert_eq!(b.d.to_f32(), f32_to_f16(15.5 / 15.0).to_f32());
        assert_eq!(b.qs[0] & 0x0f, 0);
        assert_eq!(b.qs[15] >> 4, 15); // element 31 is the max
    }

    #[test]
    fn q8_0_scale_and_rounding() {
        let mut x = vec![0.0f32; 32];
        x[0] = -127.0;
        x[1] = 2.5; // round half away from zero -> 3
        x[2] = -2.5; // -> -3
        x[3] = 1.4;
        let b = quantize_block_q8_0(&x);
        assert_eq!(b.d.to_f32(), 1.0);
        assert_eq!(&b.qs[..4], &[-127, 3, -3, 1]);
    }

    #[test]
    fn all_zero_blocks_quantize_to_zero() {
        let x = [0.0f32; 32];
        for t in [TensorType::Q4_0, TensorType::Q4_1, TensorType::Q8_0] {
            assert!(round_trip(t, &x).iter().all(|&v| v == 0.0), "{t}");
        }
    }

    #[test]
    fn bf16_matches_ggml_rounding() {
        // 1 + 2^-8 is exactly halfway between two bf16 values; ties go to even (1.0).
        assert_eq!(f32_to_bf16(1.0 + 1.0 / 256.0).to_f32(), 1.0);
        // 1 + 3*2^-8 ties to the even neighbour above.
        assert_eq!(f32_to_bf16(1.0 + 3.0 / 256.0).to_f32(), 1.0 + 4.0 / 256.0);
        let nan = f32_to_bf16(f32::from_bits(0x7f80_0001));
        assert!(nan.is_nan());
        assert_eq!(nan.to_bits(), 0x7fc0);
        assert_eq!(f32_to_bf16(f32::INFINITY).to_f32(), f32::INFINITY);
    }

    #[test]
    fn wrong_lengths_are_errors() {
        let mut out = vec![0.0; 32];
        assert!(dequantize_row(TensorType::Q8_0, &[0u8; 33], &mut out).is_err());
        let mut bytes = Vec::new();
        assert!(quantize_row(TensorType::Q4_0, &[0.0; 31], &mut bytes).is_err());
        let mut out = vec![0.0; 3];
        assert!(dequantize_row(TensorType::F32, &[0u8; 8], &mut out).is_err());
    }
}
