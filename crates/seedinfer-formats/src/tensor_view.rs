//! A borrowed, typed window onto tensor bytes inside a mapped file.

use crate::blocks::dequantize_row;
use crate::error::{FormatError, Result};
use crate::tensor_type::TensorType;

/// A borrowed tensor inside a mapped file.
///
/// `shape` is outermost-first (row-major, PyTorch/HF convention): a GGUF tensor
/// with `ne = [576, 1536]` has shape `[1536, 576]` (1536 rows of 576 columns).
/// The last dimension is the contiguous one, and quantization blocks run along it.
#[derive(Clone, Debug)]
pub struct TensorView<'a> {
    pub name: &'a str,
    pub tensor_type: TensorType,
    pub shape: Vec<usize>,
    pub data: &'a [u8],
}

impl TensorView<'_> {
    /// Total number of elements (product of the shape; 1 for a scalar).
    pub fn element_count(&self) -> usize {
        self.shape.iter().product()
    }

    /// Length of the innermost (contiguous) dimension.
    pub fn row_len(&self) -> usize {
        self.shape.last().copied().unwrap_or(1)
    }

    /// Number of rows (product of all but the innermost dimension).
    pub fn row_count(&self) -> usize {
        self.shape.iter().rev().skip(1).product()
    }

    /// Decodes the whole tensor to f32, in row-major order.
    pub fn to_f32(&self) -> Result<Vec<f32>> {
        let expected = self.tensor_type.tensor_bytes(&self.shape)?;
        if expected != self.data.len() {
            return Err(FormatError::InvalidArgument {
                reason: format!(
                    "tensor '{}' ({} {:?}) should have {expected} bytes but has {}",
                    self.name,
                    self.tensor_type,
                    self.shape,
                    self.data.len()
                ),
            });
        }
        let mut out = vec![0f32; self.element_count()];
        // Rows consist of whole blocks, so the whole tensor is one long row as far
        // as the block decoder is concerned.
        dequantize_row(self.tensor_type, self.data, &mut out)?;
        Ok(out)
    }

    /// Decodes row `row` (0-based, counting rows of the innermost dimension) to f32.
    pub fn row_to_f32(&self, row: usize) -> Result<Vec<f32>> {
        let row_len = self.row_len();
        let row_bytes = self.tensor_type.row_bytes(row_len)?;
        let start = row.checked_mul(row_bytes);
        let bytes = start
            .and_then(|s| self.data.get(s..s.checked_add(row_bytes)?))
            .ok_or_else(|| {
                FormatError::invalid_argument(format!(
                    "row {row} out of range for tensor '{}' with shape {:?}",
                    self.name, self.shape
                ))
            })?;
        let mut out = vec![0f32; row_len];
        dequantize_row(self.tensor_type, bytes, &mut out)?;
        Ok(out)
    }

    /// Fails with [`FormatError::ShapeMismatch`] unless the shape equals `expected`.
    pub fn expect_shape(&self, expected: &[usize]) -> Result<()> {
        if self.shape == expected {
            Ok(())
        } else {
            Err(FormatError::ShapeMismatch {
                name: self.name.to_string(),
                expected: expected.to_vec(),
                found: self.shape.clone(),
            })
        }
    }
}
