//! Element types of tensors this crate can decode, and the full ggml type-name table
//! used to produce readable errors for the ones it cannot.

use crate::error::{FormatError, Result};

/// Element type of a tensor. Quantized types are stored as blocks of 32 elements, K-quants as super-blocks of 256.
#[allow(non_camel_case_types)] // Q4_0 etc. are the names everyone in the ecosystem uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TensorType {
    F32,
    F16,
    BF16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    /// ggml's K-quants: super-blocks of 256 weights in sub-blocks with their own 4-bit (Q2_K), 6-bit (Q3_K, Q4_K,
    /// Q5_K) or 8-bit (Q6_K) scales.
    Q2_K,
    Q3_K,
    Q4_K,
    Q5_K,
    Q6_K,
    /// ggml's IQ4_NL: blocks of 32 weights as 4-bit indices into a fixed table of 16 non-uniform levels.
    IQ4_NL,
    /// ggml's IQ4_XS: super-blocks of 256 in sub-blocks of 32 with 6-bit scales, weights as IQ4_NL's indices.
    IQ4_XS,
    /// seedinfer's own (ids from [`SEEDINFER_TYPE_IDS`]): SeedLM with C = 8, P = 3 (4 bits per weight).
    SeedLm4,
    /// SeedLM with C = 12, P = 4 (3 bits per weight).
    SeedLm3,
    /// Round-to-nearest 3-bit groups of 32 with an f16 scale (3.5 bits per weight), SeedLM's baseline.
    Q3Rtn,
}

/// seedinfer's own tensor types. Their GGUF type ids start at 1001, far above ggml's, and a file using them must
/// say which container version it is (see `container`).
pub const SEEDINFER_TENSOR_TYPES: [TensorType; 3] =
    [TensorType::SeedLm4, TensorType::SeedLm3, TensorType::Q3Rtn];

/// Every supported type, in ggml id order; handy for tests and iteration.
pub const ALL_TENSOR_TYPES: [TensorType; 15] = [
    TensorType::F32,
    TensorType::F16,
    TensorType::Q4_0,
    TensorType::Q4_1,
    TensorType::Q5_0,
    TensorType::Q5_1,
    TensorType::Q8_0,
    TensorType::Q2_K,
    TensorType::Q3_K,
    TensorType::Q4_K,
    TensorType::Q5_K,
    TensorType::Q6_K,
    TensorType::IQ4_NL,
    TensorType::IQ4_XS,
    TensorType::BF16,
];

/// Names of all ggml types by id (ggml.h `enum ggml_type`). Ids 4 and 5 (Q4_2, Q4_3)
/// and the 31..33 interleaved Q4_0 variants were removed upstream but may still
/// appear in old files, so they are named too.
const GGML_TYPE_NAMES: [&str; 40] = [
    "F32",        // 0
    "F16",        // 1
    "Q4_0",       // 2
    "Q4_1",       // 3
    "Q4_2",       // 4 (removed)
    "Q4_3",       // 5 (removed)
    "Q5_0",       // 6
    "Q5_1",       // 7
    "Q8_0",       // 8
    "Q8_1",       // 9
    "Q2_K",       // 10
    "Q3_K",       // 11
    "Q4_K",       // 12
    "Q5_K",       // 13
    "Q6_K",       // 14
    "Q8_K",       // 15
    "IQ2_XXS",    // 16
    "IQ2_XS",     // 17
    "IQ3_XXS",    // 18
    "IQ1_S",      // 19
    "IQ4_NL",     // 20
    "IQ3_S",      // 21
    "IQ2_S",      // 22
    "IQ4_XS",     // 23
    "I8",         // 24
    "I16",        // 25
    "I32",        // 26
    "I64",        // 27
    "F64",        // 28
    "IQ1_M",      // 29
    "BF16",       // 30
    "Q4_0_4_4",   // 31 (removed)
    "Q4_0_4_8",   // 32 (removed)
    "Q4_0_8_8",   // 33 (removed)
    "TQ1_0",      // 34
    "TQ2_0",      // 35
    "IQ4_NL_4_4", // 36 (removed)
    "IQ4_NL_4_8", // 37 (removed)
    "IQ4_NL_8_8", // 38 (removed)
    "MXFP4",      // 39
];

/// Name of a ggml type id, whether or not this crate supports it.
pub fn ggml_type_name(type_id: u32) -> Option<&'static str> {
    GGML_TYPE_NAMES.get(type_id as usize).copied()
}

impl TensorType {
    /// The id of this type in ggml's `enum ggml_type` (as stored in GGUF tensor infos).
    pub fn ggml_type_id(self) -> u32 {
        match self {
            TensorType::F32 => 0,
            TensorType::F16 => 1,
            TensorType::Q4_0 => 2,
            TensorType::Q4_1 => 3,
            TensorType::Q5_0 => 6,
            TensorType::Q5_1 => 7,
            TensorType::Q8_0 => 8,
            TensorType::Q2_K => 10,
            TensorType::Q3_K => 11,
            TensorType::Q4_K => 12,
            TensorType::Q5_K => 13,
            TensorType::Q6_K => 14,
            TensorType::IQ4_NL => 20,
            TensorType::IQ4_XS => 23,
            TensorType::BF16 => 30,
            TensorType::SeedLm4 => 1001,
            TensorType::SeedLm3 => 1002,
            TensorType::Q3Rtn => 1003,
        }
    }

    /// Inverse of [`TensorType::ggml_type_id`]; `None` for ids this crate does not decode.
    pub fn from_ggml_type_id(id: u32) -> Option<Self> {
        ALL_TENSOR_TYPES
            .into_iter()
            .chain(SEEDINFER_TENSOR_TYPES)
            .find(|t| t.ggml_type_id() == id)
    }

    /// Canonical upper-case name ("F32", "Q4_0", ...), identical to ggml's.
    pub fn name(self) -> &'static str {
        match self {
            TensorType::F32 => "F32",
            TensorType::F16 => "F16",
            TensorType::BF16 => "BF16",
            TensorType::Q4_0 => "Q4_0",
            TensorType::Q4_1 => "Q4_1",
            TensorType::Q5_0 => "Q5_0",
            TensorType::Q5_1 => "Q5_1",
            TensorType::Q8_0 => "Q8_0",
            TensorType::Q2_K => "Q2_K",
            TensorType::Q3_K => "Q3_K",
            TensorType::Q4_K => "Q4_K",
            TensorType::Q5_K => "Q5_K",
            TensorType::Q6_K => "Q6_K",
            TensorType::IQ4_NL => "IQ4_NL",
            TensorType::IQ4_XS => "IQ4_XS",
            TensorType::SeedLm4 => "SEEDLM4",
            TensorType::SeedLm3 => "SEEDLM3",
            TensorType::Q3Rtn => "Q3_RTN",
        }
    }

    /// Number of elements encoded by one block (1 for plain float types).
    pub fn block_elements(self) -> usize {
        match self {
            TensorType::F32 | TensorType::F16 | TensorType::BF16 => 1,
            TensorType::Q4_0
            | TensorType::Q4_1
            | TensorType::Q5_0
            | TensorType::Q5_1
            | TensorType::Q8_0
            | TensorType::IQ4_NL
            | TensorType::Q3Rtn => 32,
            TensorType::Q2_K
            | TensorType::Q3_K
            | TensorType::Q4_K
            | TensorType::Q5_K
            | TensorType::Q6_K
            | TensorType::IQ4_XS => crate::blocks::QK_K,
            TensorType::SeedLm4 | TensorType::SeedLm3 => {
                self.seedlm_config().map_or(1, |c| c.block)
            }
        }
    }

    /// The 32-wide type llama.cpp's quantiser (0.3.36, `tensor_type_fallback`) gives rows that are not whole
    /// super-blocks of this 256-wide type: Q2_K and Q3_K take Q4_0, Q4_K Q5_0, Q5_K Q5_1, Q6_K Q8_0, IQ4_XS IQ4_NL.
    /// `None` for the other types.
    pub fn llama_fallback(self) -> Option<TensorType> {
        match self {
            TensorType::Q2_K | TensorType::Q3_K => Some(TensorType::Q4_0),
            TensorType::Q4_K => Some(TensorType::Q5_0),
            TensorType::Q5_K => Some(TensorType::Q5_1),
            TensorType::Q6_K => Some(TensorType::Q8_0),
            TensorType::IQ4_XS => Some(TensorType::IQ4_NL),
            _ => None,
        }
    }

    /// The SeedLM configuration of a SeedLM type.
    pub fn seedlm_config(self) -> Option<crate::seedlm::SeedLmConfig> {
        match self {
            TensorType::SeedLm4 => Some(crate::seedlm::SEEDLM4),
            TensorType::SeedLm3 => Some(crate::seedlm::SEEDLM3),
            _ => None,
        }
    }

    /// Size in bytes of one block (SeedLM types: of two blocks, rounded up; their rows are bit streams).
    pub fn block_bytes(self) -> usize {
        match self {
            TensorType::SeedLm4 | TensorType::SeedLm3 => self
                .seedlm_config()
                .map_or(1, |c| (2 * c.block_bits()).div_ceil(8)),
            TensorType::Q3Rtn => crate::q3_rtn::GROUP_BYTES,
            TensorType::F32 => 4,
            TensorType::F16 | TensorType::BF16 => 2,
            TensorType::Q4_0 => crate::blocks::BLOCK_Q4_0_BYTES,
            TensorType::Q4_1 => crate::blocks::BLOCK_Q4_1_BYTES,
            TensorType::Q5_0 => crate::blocks::BLOCK_Q5_0_BYTES,
            TensorType::Q5_1 => crate::blocks::BLOCK_Q5_1_BYTES,
            TensorType::Q8_0 => crate::blocks::BLOCK_Q8_0_BYTES,
            TensorType::Q2_K => crate::blocks::BLOCK_Q2_K_BYTES,
            TensorType::Q3_K => crate::blocks::BLOCK_Q3_K_BYTES,
            TensorType::Q4_K => crate::blocks::BLOCK_Q4_K_BYTES,
            TensorType::Q5_K => crate::blocks::BLOCK_Q5_K_BYTES,
            TensorType::Q6_K => crate::blocks::BLOCK_Q6_K_BYTES,
            TensorType::IQ4_NL => crate::blocks::BLOCK_IQ4_NL_BYTES,
            TensorType::IQ4_XS => crate::blocks::BLOCK_IQ4_XS_BYTES,
        }
    }

    /// Bytes taken by a row of `cols` elements. Rows must consist of whole blocks, except in SeedLM types, whose
    /// rows are `ceil(cols / C)` packed blocks (the last zero-padded) rounded up to whole bytes.
    pub fn row_bytes(self, cols: usize) -> Result<usize> {
        if let Some(config) = self.seedlm_config() {
            return Ok(crate::seedlm::row_bytes(config, cols));
        }
        let block_elements = self.block_elements();
        if !cols.is_multiple_of(block_elements) {
            return Err(FormatError::invalid_argument(format!(
                "a {} row of {cols} elements is not a multiple of the block size {block_elements}",
                self.name()
            )));
        }
        (cols / block_elements)
            .checked_mul(self.block_bytes())
            .ok_or_else(|| {
                FormatError::invalid_argument(format!(
                    "{} row of {cols} elements overflows",
                    self.name()
                ))
            })
    }

    /// Bytes taken by a whole tensor of the given shape (outermost first).
    pub fn tensor_bytes(self, shape: &[usize]) -> Result<usize> {
        let cols = shape.last().copied().unwrap_or(1);
        let rows = shape
            .iter()
            .rev()
            .skip(1)
            .try_fold(1usize, |acc, &d| acc.checked_mul(d));
        let row_bytes = self.row_bytes(cols)?;
        rows.and_then(|rows| rows.checked_mul(row_bytes))
            .ok_or_else(|| {
                FormatError::invalid_argument(format!("tensor shape {shape:?} overflows"))
            })
    }
}

impl std::fmt::Display for TensorType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_match_name_table() {
        for t in ALL_TENSOR_TYPES {
            assert_eq!(TensorType::from_ggml_type_id(t.ggml_type_id()), Some(t));
            assert_eq!(ggml_type_name(t.ggml_type_id()), Some(t.name()));
        }
        assert_eq!(ggml_type_name(14), Some("Q6_K"));
        assert_eq!(TensorType::from_ggml_type_id(14), Some(TensorType::Q6_K));
        assert_eq!(TensorType::from_ggml_type_id(16), None); // IQ2_XXS: named, not decoded
        assert_eq!(ggml_type_name(1000), None);
    }

    #[test]
    fn sizes() {
        let sizes: Vec<_> = [
            TensorType::F32,
            TensorType::F16,
            TensorType::BF16,
            TensorType::Q4_0,
            TensorType::Q4_1,
            TensorType::Q5_0,
            TensorType::Q5_1,
            TensorType::Q8_0,
        ]
        .iter()
        .map(|t| t.block_bytes())
        .collect();
        assert_eq!(sizes, [4, 2, 2, 18, 20, 22, 24, 34]);
        // K-quants: ggml's block_q4_K, block_q5_K and block_q6_K.
        assert_eq!(TensorType::Q4_K.row_bytes(512).ok(), Some(2 * 144));
        assert_eq!(TensorType::Q5_K.row_bytes(256).ok(), Some(176));
        assert_eq!(TensorType::Q6_K.row_bytes(2048).ok(), Some(8 * 210));
        assert!(TensorType::Q4_K.row_bytes(576).is_err());
        assert_eq!(TensorType::Q4_1.row_bytes(576).ok(), Some(18 * 20));
        assert_eq!(TensorType::F16.row_bytes(3).ok(), Some(6));
        assert!(TensorType::Q8_0.row_bytes(33).is_err());
        assert_eq!(
            TensorType::Q8_0.tensor_bytes(&[2, 64]).ok(),
            Some(2 * 2 * 34)
        );
    }
}
