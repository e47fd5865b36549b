//! ggml block formats, one file each (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, the K-quants Q2_K .. Q6_K, IQ4_NL, IQ4_XS): the
//! `#[repr(C)]` block as stored in GGUF files, its dequantiser, and its reference quantiser from ggml-quants.c
//! (`quantize_row_*_ref`; for IQ4_NL and IQ4_XS the `quantize_iq4_*` that llama.cpp's file quantiser calls; the
//! shared scale searches in [`scale_search`]), reproduced bit-exactly so that files written here are
//! indistinguishable from llama.cpp's. [`BlockCodec`] is what every format provides, [`BlockQuantizer`] what the
//! formats seedinfer can write add; [`dequantize_row`] and [`quantize_row`] are the one table from tensor type to
//! codec.
//!
//! Blocks in files are not necessarily aligned for `f16`, so they are always read with
//! `bytemuck::pod_read_unaligned` instead of casting slices in place.

mod iq4_nl;
mod iq4_xs;
mod k_scales;
mod q2_k;
mod q3_k;
mod q4_0;
mod q4_1;
mod q4_k;
mod q5_0;
mod q5_1;
mod q5_k;
mod q6_k;
mod q8_0;
pub mod scale_search;

pub use iq4_nl::{BlockIq4Nl, BLOCK_IQ4_NL_BYTES, KVALUES_IQ4NL};
pub use iq4_xs::{iq4_xs_sub_scale, BlockIq4Xs, BLOCK_IQ4_XS_BYTES};
pub use k_scales::{
    dequantize_scaled_minimum, scale_min, scales_mins, ScaledMinimumBlock, K_SCALE_BYTES,
};
pub use q2_k::{two_bit_field, BlockQ2_K, BLOCK_Q2_K_BYTES};
pub use q3_k::{q3_k_scale, BlockQ3_K, BLOCK_Q3_K_BYTES};
pub use q4_k::{BlockQ4_K, BLOCK_Q4_K_BYTES};
pub use q5_k::{BlockQ5_K, BLOCK_Q5_K_BYTES};
pub use q6_k::{BlockQ6_K, BLOCK_Q6_K_BYTES};

pub use q4_0::{quantize_block_q4_0, BlockQ4_0, BLOCK_Q4_0_BYTES};
pub use q4_1::{quantize_block_q4_1, BlockQ4_1, BLOCK_Q4_1_BYTES};
pub use q5_0::{five_bits, BlockQ5_0, BLOCK_Q5_0_BYTES};
pub use q5_1::{BlockQ5_1, BLOCK_Q5_1_BYTES};
pub use q8_0::{quantize_block_q8_0, BlockQ8_0, BLOCK_Q8_0_BYTES};

use bytemuck::Pod;
use half::{bf16, f16};

use crate::error::{FormatError, Result};
use crate::tensor_type::TensorType;

/// Elements per quantization block of the Q4_0 .. Q8_0 types.
pub const QK: usize = 32;
/// Elements per super-block of the K-quants.
pub const QK_K: usize = 256;

// GGUF is little-endian and the block structs mirror file bytes directly.
#[cfg(target_endian = "big")]
compile_error!("seedinfer-formats assumes a little-endian target");

/// A ggml block format of [`BlockCodec::ELEMENTS`] weights: its bytes are the struct's (`Pod`, size asserted in
/// its file).
pub trait BlockCodec: Pod {
    /// The tensor type (GGUF type id and name) whose rows are made of these blocks.
    const TENSOR_TYPE: TensorType;
    /// Weights per block: [`QK`], or [`QK_K`] for the K-quants.
    const ELEMENTS: usize = QK;
    /// The block's `ELEMENTS` values into `out[..ELEMENTS]`.
    fn dequantize(&self, out: &mut [f32]);
}

/// A block format seedinfer writes: ggml's reference quantiser.
pub trait BlockQuantizer: BlockCodec {
    /// ggml's reference quantiser for one block of `ELEMENTS` values (`x.len() >= ELEMENTS`).
    fn quantize(x: &[f32]) -> Self;
}

/// The 32-element block types of this module (those seedinfer also writes), in GGUF type id order.
pub const BLOCK_TYPES: [TensorType; 5] = [
    TensorType::Q4_0,
    TensorType::Q4_1,
    TensorType::Q5_0,
    TensorType::Q5_1,
    TensorType::Q8_0,
];

/// The K-quant types of this module, in GGUF type id order.
pub const K_QUANT_TYPES: [TensorType; 5] = [
    TensorType::Q2_K,
    TensorType::Q3_K,
    TensorType::Q4_K,
    TensorType::Q5_K,
    TensorType::Q6_K,
];

/// Block types whose quantisers search for their scales (the K-quants, IQ4_NL and IQ4_XS): slow to write (a
/// super-block takes tens of trial scales), so synthetic models and tests draw random blocks of them instead.
pub const SEARCHED_TYPES: [TensorType; 7] = [
    TensorType::Q2_K,
    TensorType::Q3_K,
    TensorType::Q4_K,
    TensorType::Q5_K,
    TensorType::Q6_K,
    TensorType::IQ4_NL,
    TensorType::IQ4_XS,
];

/// Byte offsets in a block of a type in [`SEARCHED_TYPES`] of its f16 scale `d` and, in the formats with
/// minimums, of `dmin` (for writers of random blocks: synthetic models, tests). `None` for other types.
pub fn block_scale_offsets(tensor_type: TensorType) -> Option<(usize, Option<usize>)> {
    use std::mem::offset_of;
    Some(match tensor_type {
        TensorType::Q2_K => (offset_of!(BlockQ2_K, d), Some(offset_of!(BlockQ2_K, dmin))),
        TensorType::Q3_K => (offset_of!(BlockQ3_K, d), None),
        TensorType::Q4_K => (offset_of!(BlockQ4_K, d), Some(offset_of!(BlockQ4_K, dmin))),
        TensorType::Q5_K => (offset_of!(BlockQ5_K, d), Some(offset_of!(BlockQ5_K, dmin))),
        TensorType::Q6_K => (offset_of!(BlockQ6_K, d), None),
        TensorType::IQ4_NL => (offset_of!(BlockIq4Nl, d), None),
        TensorType::IQ4_XS => (offset_of!(BlockIq4Xs, d), None),
        _ => return None,
    })
}

fn dequantize_blocks<B: BlockCodec>(bytes: &[u8], out: &mut [f32]) {
    let size = std::mem::size_of::<B>();
    for (dst, src) in out
        .chunks_exact_mut(B::ELEMENTS)
        .zip(bytes.chunks_exact(size))
    {
        bytemuck::pod_read_unaligned::<B>(src).dequantize(dst);
    }
}

fn quantize_blocks<B: BlockQuantizer>(values: &[f32], out: &mut Vec<u8>) {
    for chunk in values.chunks_exact(B::ELEMENTS) {
        out.extend_from_slice(bytemuck::bytes_of(&B::quantize(chunk)));
    }
}

/// `(min, max)` of a block as ggml's Q4_1/Q5_1 quantisers find them (`v < min`, `v > max`, from `FLT_MAX` and
/// `-FLT_MAX`).
fn min_max(x: &[f32]) -> (f32, f32) {
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
    (min, max)
}

/// C's `(int8_t)x` for the in-range values ggml produces, then `MIN(15, ..)` and the
/// implicit conversion to `uint8_t`. Rust's saturating cast keeps out-of-range
/// inputs (NaN/inf weights) from being undefined behaviour as they are in C.
fn nibble_from(x: f32) -> u8 {
    ((x as i8).min(15)) as u8
}

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
        TensorType::Q4_0 => dequantize_blocks::<BlockQ4_0>(bytes, out),
        TensorType::Q4_1 => dequantize_blocks::<BlockQ4_1>(bytes, out),
        TensorType::Q5_0 => dequantize_blocks::<BlockQ5_0>(bytes, out),
        TensorType::Q5_1 => dequantize_blocks::<BlockQ5_1>(bytes, out),
        TensorType::Q8_0 => dequantize_blocks::<BlockQ8_0>(bytes, out),
        TensorType::Q2_K => dequantize_blocks::<BlockQ2_K>(bytes, out),
        TensorType::Q3_K => dequantize_blocks::<BlockQ3_K>(bytes, out),
        TensorType::Q4_K => dequantize_blocks::<BlockQ4_K>(bytes, out),
        TensorType::Q5_K => dequantize_blocks::<BlockQ5_K>(bytes, out),
        TensorType::Q6_K => dequantize_blocks::<BlockQ6_K>(bytes, out),
        TensorType::IQ4_NL => dequantize_blocks::<BlockIq4Nl>(bytes, out),
        TensorType::IQ4_XS => dequantize_blocks::<BlockIq4Xs>(bytes, out),
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
/// Block types follow ggml's `quantize_row_*_ref` exactly (same scale choice, same rounding, same clamping), so
/// the output is byte-identical to llama.cpp's reference quantizer.
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
        TensorType::Q4_0 => quantize_blocks::<BlockQ4_0>(values, out),
        TensorType::Q4_1 => quantize_blocks::<BlockQ4_1>(values, out),
        TensorType::Q5_0 => quantize_blocks::<BlockQ5_0>(values, out),
        TensorType::Q5_1 => quantize_blocks::<BlockQ5_1>(values, out),
        TensorType::Q8_0 => quantize_blocks::<BlockQ8_0>(values, out),
        TensorType::Q2_K => quantize_blocks::<BlockQ2_K>(values, out),
        TensorType::Q3_K => quantize_blocks::<BlockQ3_K>(values, out),
        TensorType::Q4_K => quantize_blocks::<BlockQ4_K>(values, out),
        TensorType::Q5_K => quantize_blocks::<BlockQ5_K>(values, out),
        TensorType::Q6_K => quantize_blocks::<BlockQ6_K>(values, out),
        TensorType::IQ4_NL => quantize_blocks::<BlockIq4Nl>(values, out),
        TensorType::IQ4_XS => quantize_blocks::<BlockIq4Xs>(values, out),
        TensorType::Q3Rtn => crate::q3_rtn::quantize(values, out),
        TensorType::SeedLm4 | TensorType::SeedLm3 => {
            return Err(FormatError::invalid_argument(format!(
                "{tensor_type} is encoded a tensor at a time: use seedlm::encode_matrix"
            )))
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn searched_quantisers_take_any_bits_without_panicking_and_finite_rows_come_back_finite() {
        // Every bit pattern (NaN, infinities, subnormals, huge values) must quantise without a panic; rows of
        // finite values of any magnitude below f16's range must come back finite.
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for tensor_type in SEARCHED_TYPES {
            for round in 0..64 {
                let raw: Vec<f32> = (0..QK_K).map(|_| f32::from_bits(next() as u32)).collect();
                let mut bytes = Vec::new();
                quantize_row(tensor_type, &raw, &mut bytes).unwrap();
                assert_eq!(
                    bytes.len(),
                    tensor_type.block_bytes() * QK_K / tensor_type.block_elements()
                );
                let magnitude = [1e-30f32, 1e-6, 1.0, 1e3][round % 4];
                let finite: Vec<f32> = (0..QK_K)
                    .map(|_| ((next() >> 11) as f32 / (1u64 << 53) as f32 - 0.5) * magnitude)
                    .collect();
                bytes.clear();
                quantize_row(tensor_type, &finite, &mut bytes).unwrap();
                let mut back = vec![0.0f32; QK_K];
                dequantize_row(tensor_type, &bytes, &mut back).unwrap();
                assert!(
                    back.iter().all(|v| v.is_finite()),
                    "{tensor_type} at {magnitude}"
                );
            }
        }
    }

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
            (TensorType::Q5_0, 1.0 / 32.0 + 1e-2),
            (TensorType::Q5_1, 1.0 / 62.0 + 1e-2),
            (TensorType::Q8_0, 1.0 / 254.0 + 1e-3),
        ] {
            let back = round_trip(t, &values);
            for block in 0..values.len() / 32 {
                let chunk = &values[block * 32..block * 32 + 32];
                let amax = chunk.iter().fold(0f32, |a, v| a.max(v.abs()));
                let range = chunk.iter().cloned().fold(f32::MIN, f32::max)
                    - chunk.iter().cloned().fold(f32::MAX, f32::min);
                let scale = if matches!(t, TensorType::Q4_1 | TensorType::Q5_1) {
                    range
                } else {
                    amax
                };
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
    fn all_zero_blocks_quantize_to_zero() {
        let x = [0.0f32; 32];
        for t in BLOCK_TYPES {
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
