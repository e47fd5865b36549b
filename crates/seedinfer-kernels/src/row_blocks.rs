//! The parallel shape shared by every matrix product: weight rows are split into ranges, one task per range, and
//! each task computes its rows for every token (its weights stay hot in cache).
//!
//! Tasks write their own elements of the `[tokens, rows]` output in place: no buffer, no copy, no allocation.
//! - [`for_each_row_range`]: a task's kernel writes its elements itself.
//! - [`for_each_product_task`]: the same, with the shape checks and task sizing every f32-activation product
//!   (float, SeedLM, q3_rtn weights) shares.

use rayon::prelude::*;

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

/// The set-up every product with f32 activations shares: checks that `input` is `[tokens, cols]` (its length
/// `input_len`) and `out` `[tokens, rows]`, then runs `range(out, first_row, row_count)` over tasks of rows holding
/// about `task_bytes` of weights each (`row_bytes` a row, 4 to 256 rows a task).
#[allow(clippy::too_many_arguments)]
pub(crate) fn for_each_product_task(
    rows: usize,
    cols: usize,
    tokens: usize,
    input_len: usize,
    out: &mut [f32],
    row_bytes: usize,
    task_bytes: usize,
    range: impl Fn(&ProductOut, usize, usize) + Sync,
) {
    assert_eq!(input_len, tokens * cols, "input is not [tokens, cols]");
    assert_eq!(out.len(), tokens * rows, "output is not [tokens, rows]");
    if rows == 0 || tokens == 0 {
        return;
    }
    let rows_per_task = (task_bytes / row_bytes.max(1)).clamp(4, 256);
    for_each_row_range(rows, tokens, rows_per_task, out, range)
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
