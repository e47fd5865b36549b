//! The layout the block-quantised kernels read: four consecutive weight rows interleaved block by block (a "row
//! quad"), so that one sequential stream feeds four dot products at once and the four rows' scales load as one
//! vector. Within a quad the four blocks' weight bytes are interleaved by 8-byte chunk (chunk 0 of rows 0, 1, 2, 3,
//! then chunk 1 of each, ...), so one 32-byte load gives the same chunk of all four rows. The bytes of every GGUF
//! block are kept unchanged (the same bits as the file); only their order differs. A matrix whose row count is not
//! a multiple of four gets zero rows at the end, which no product reports.

use bytemuck::{Pod, Zeroable};

/// Rows per quad.
pub const QUAD: usize = 4;

/// Interleaves four rows' `N`-byte arrays by 8-byte chunk: chunk `c` of row `r` goes to `out[4c + r]`.
pub(super) fn interleave_chunks<T: Copy + Default, const N: usize, const K: usize>(
    rows: [&[T; N]; QUAD],
) -> [[T; 8]; K] {
    debug_assert_eq!(N / 8 * QUAD, K);
    std::array::from_fn(|k| {
        let (c, r) = (k / QUAD, k % QUAD);
        std::array::from_fn(|i| rows[r][8 * c + i])
    })
}

/// Row `lane`'s `N`-byte array back from [`interleave_chunks`].
pub(super) fn row_of_chunks<T: Copy + Default, const N: usize, const K: usize>(
    chunks: &[[T; 8]; K],
    lane: usize,
) -> [T; N] {
    std::array::from_fn(|i| chunks[QUAD * (i / 8) + lane][i % 8])
}

/// A GGUF block format's quad: block `i` of four consecutive rows.
pub trait RowQuad: Pod + Send + Sync {
    type Block: Pod;
    fn from_blocks(blocks: [&Self::Block; QUAD]) -> Self;
    /// The block of row `lane` of the quad.
    fn block(&self, lane: usize) -> Self::Block;
}

/// Interleaves `rows` rows of `blocks_per_row` blocks (a GGUF tensor's bytes, already checked for size) into
/// quads: quad `g` holds rows `4g..4g+4`, block by block.
pub fn interleave<Q: RowQuad>(bytes: &[u8], rows: usize, blocks_per_row: usize) -> Vec<Q> {
    let size = std::mem::size_of::<Q::Block>();
    debug_assert_eq!(bytes.len(), rows * blocks_per_row * size);
    // Each block is read from the (possibly unaligned) bytes as it is needed: no aligned copy of the whole
    // matrix next to the quads being built (for Gemma 3's 178 MB embedding, that copy was the load's peak).
    let block = |row: usize, i: usize| {
        if row < rows {
            let at = (row * blocks_per_row + i) * size;
            bytemuck::pod_read_unaligned::<Q::Block>(&bytes[at..at + size])
        } else {
            Q::Block::zeroed()
        }
    };
    let quads = rows.div_ceil(QUAD);
    let mut out = Vec::with_capacity(quads * blocks_per_row);
    for g in 0..quads {
        for i in 0..blocks_per_row {
            let blocks: [Q::Block; QUAD] = std::array::from_fn(|lane| block(g * QUAD + lane, i));
            out.push(Q::from_blocks(std::array::from_fn(|lane| &blocks[lane])));
        }
    }
    out
}

/// Row `row`'s blocks, in order (for dequantising one row, e.g. an embedding lookup).
pub fn row_blocks<Q: RowQuad>(
    quads: &[Q],
    blocks_per_row: usize,
    row: usize,
) -> impl Iterator<Item = Q::Block> + '_ {
    let (g, lane) = (row / QUAD, row % QUAD);
    quads[g * blocks_per_row..(g + 1) * blocks_per_row]
        .iter()
        .map(move |q| q.block(lane))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quantized::QuadQ4_1;
    use half::f16;
    use seedinfer_formats::BlockQ4_1;

    #[test]
    fn interleaving_keeps_every_block_and_pads_with_zero_rows() {
        let (rows, n) = (6, 3);
        let blocks: Vec<BlockQ4_1> = (0..rows * n)
            .map(|k| BlockQ4_1 {
                d: f16::from_f32(k as f32),
                m: f16::from_f32(-(k as f32)),
                qs: [k as u8; 16],
            })
            .collect();
        let quads: Vec<QuadQ4_1> = interleave(bytemuck::cast_slice(&blocks), rows, n);
        assert_eq!(quads.len(), 2 * n);
        for row in 0..8 {
            let got: Vec<BlockQ4_1> = row_blocks(&quads, n, row).collect();
            if row < rows {
                assert_eq!(got, blocks[row * n..(row + 1) * n]);
            } else {
                assert!(got.iter().all(|b| *b == BlockQ4_1::zeroed()));
            }
        }
    }
}
