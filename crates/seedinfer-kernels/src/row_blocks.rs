//! The parallel shape shared by every matrix product: weight rows are split into ranges, one task per range, and
//! each task computes its rows for every token (its weights stay hot in cache).
//!
//! Tasks write their own elements of the `[tokens, rows]` output in place: no buffer, no copy, no allocation.
//! - [`for_each_row_block`] (f32 and half weights): a task fills its part of each token's output row in turn.
//! - [`for_each_row_range`] (block-quantised weights): a task's kernel writes its elements itself.

use rayon::prelude::*;

/// Fills `out` (`[tokens, rows]`). `rows_dot(first_row, token, column)` must set `column[i]` to the product of
/// weight row `first_row + i` with token `token`'s activations; `column` is the task's part of that token's output
/// row, written in place.
pub fn for_each_row_block(
    rows: usize,
    tokens: usize,
    rows_per_task: usize,
    out: &mut [f32],
    rows_dot: impl Fn(usize, usize, &mut [f32]) + Sync,
) {
    for_each_row_range(rows, tokens, rows_per_task, out, |product, first, count| {
        for t in 0..tokens {
            // SAFETY: the task owns rows `first..first + count` of every token's output row.
            rows_dot(first, t, unsafe { product.token_rows(t, first, count) });
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
    /// The product `[tokens, rows]` to be written into `out`.
    pub(crate) fn new(out: &mut [f32], rows: usize, tokens: usize) -> Self {
        assert_eq!(out.len(), rows * tokens, "output is [tokens, rows]");
        Self {
            ptr: out.as_mut_ptr(),
            rows,
            tokens,
        }
    }

    /// # Safety
    /// `row < rows`, `token < tokens`, and no other task writes this element.
    #[inline(always)]
    pub unsafe fn write(&self, row: usize, token: usize, value: f32) {
        debug_assert!(row < self.rows && token < self.tokens);
        *self.ptr.add(token * self.rows + row) = value;
    }

    /// Elements `first..first + count` of token `token`'s output row.
    ///
    /// # Safety
    /// In bounds, and no other task touches these elements while the slice lives.
    #[allow(clippy::mut_from_ref)] // disjoint parts of one `&mut [f32]`, handed out one task each
    #[inline(always)]
    pub unsafe fn token_rows(&self, token: usize, first: usize, count: usize) -> &mut [f32] {
        debug_assert!(token < self.tokens && first + count <= self.rows);
        std::slice::from_raw_parts_mut(self.ptr.add(token * self.rows + first), count)
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
    let product = ProductOut::new(out, rows, tokens);
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
