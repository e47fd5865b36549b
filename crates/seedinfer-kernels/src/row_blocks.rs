//! The parallel shape shared by every matrix product: weight rows are split into blocks, one task per block;
//! with several tokens a task walks every token for its block (kept hot in cache) and writes a transposed
//! block that is scattered into the `[tokens, rows]` output afterwards.

use rayon::prelude::*;

/// Fills `out` (`[tokens, rows]`). `rows_dot(first_row, token, column)` must set `column[i]` to the product of
/// weight row `first_row + i` with token `token`'s activations.
pub fn for_each_row_block(
    rows: usize,
    tokens: usize,
    rows_per_task: usize,
    out: &mut [f32],
    rows_dot: impl Fn(usize, usize, &mut [f32]) + Sync,
) {
    debug_assert_eq!(out.len(), rows * tokens);
    if tokens == 1 {
        out.par_chunks_mut(rows_per_task)
            .enumerate()
            .for_each(|(task, column)| rows_dot(task * rows_per_task, 0, column));
        return;
    }
    let mut transposed = vec![0.0f32; rows * tokens];
    transposed
        .par_chunks_mut(rows_per_task * tokens)
        .enumerate()
        .for_each(|(task, block)| {
            let mut column = vec![0.0f32; block.len() / tokens];
            for t in 0..tokens {
                rows_dot(task * rows_per_task, t, &mut column);
                for (r, v) in column.iter().enumerate() {
                    block[r * tokens + t] = *v;
                }
            }
        });
    scatter_transposed(&transposed, rows, tokens, out);
}

/// Like [`for_each_row_block`], for kernels that produce every token of a row block at once:
/// `rows_tokens(first_row, block)` must fill `block[r * tokens + t]` for its rows.
pub fn for_each_row_tile(
    rows: usize,
    tokens: usize,
    rows_per_task: usize,
    out: &mut [f32],
    rows_tokens: impl Fn(usize, &mut [f32]) + Sync,
) {
    debug_assert_eq!(out.len(), rows * tokens);
    if tokens == 1 {
        out.par_chunks_mut(rows_per_task)
            .enumerate()
            .for_each(|(task, block)| rows_tokens(task * rows_per_task, block));
        return;
    }
    let mut transposed = vec![0.0f32; rows * tokens];
    transposed
        .par_chunks_mut(rows_per_task * tokens)
        .enumerate()
        .for_each(|(task, block)| rows_tokens(task * rows_per_task, block));
    scatter_transposed(&transposed, rows, tokens, out);
}

/// `out[t][r] = transposed[r][t]`.
fn scatter_transposed(transposed: &[f32], rows: usize, tokens: usize, out: &mut [f32]) {
    out.par_chunks_mut(rows)
        .enumerate()
        .for_each(|(t, out_row)| {
            for (r, o) in out_row.iter_mut().enumerate() {
                *o = transposed[r * tokens + t];
            }
        });
}
