//! The parallel shape shared by every matrix product: weight rows are split into ranges, one task per range, and
//! each task computes its rows for every token (its weights stay hot in cache).
//!
//! - [`for_each_row_block`] (f32 and half weights): a task fills a column per token and writes a transposed
//!   block that is scattered into the `[tokens, rows]` output afterwards.
//! - [`for_each_row_range`] (block-quantised weights): a task writes its elements of the output in place.

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

/// The `[tokens, rows]` result of one matrix product, written by tasks that each own a disjoint range of rows
/// (so no task needs a buffer of its own or a transposing copy afterwards).
pub struct ProductOut {
    ptr: *mut f32,
    rows: usize,
    tokens: usize,
}

// SAFETY: tasks write disjoint elements (their own rows), and `out` outlives them (see `for_each_row_range`).
unsafe impl Send for ProductOut {}
unsafe impl Sync for ProductOut {}

impl ProductOut {
    /// # Safety
    /// `row < rows`, `token < tokens`, and no other task writes this element.
    #[inline(always)]
    pub unsafe fn write(&self, row: usize, token: usize, value: f32) {
        debug_assert!(row < self.rows && token < self.tokens);
        *self.ptr.add(token * self.rows + row) = value;
    }
}

/// Splits `rows` into ranges of `rows_per_task` and runs `range(out, first_row, row_count)` for each on the
/// current rayon pool (on the calling thread when there is only one range); each call must write exactly the
/// elements of its own rows.
pub fn for_each_row_range(
    rows: usize,
    tokens: usize,
    rows_per_task: usize,
    out: &mut [f32],
    range: impl Fn(&ProductOut, usize, usize) + Sync,
) {
    assert_eq!(out.len(), rows * tokens, "output is [tokens, rows]");
    let product = ProductOut {
        ptr: out.as_mut_ptr(),
        rows,
        tokens,
    };
    let rows_per_task = rows_per_task.max(1);
    let tasks = rows.div_ceil(rows_per_task);
    let run = |task: usize| {
        let first = task * rows_per_task;
        range(&product, first, rows_per_task.min(rows - first));
    };
    if tasks <= 1 {
        (0..tasks).for_each(run);
    } else {
        (0..tasks).into_par_iter().for_each(run);
    }
}
