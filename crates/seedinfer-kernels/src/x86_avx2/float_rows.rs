//! AVX2 products of f32, f16 or bf16 weight rows with f32 activations, for one token (GEMV) or many (GEMM), in
//! register tiles of 2 rows x 3 tokens.
//!
//! Every output element is formed exactly as `dense_f32::dot_scalar` forms it, whatever the tile: sixteen partial
//! sums (here two 8-lane registers, `low` and `high`) over whole groups of sixteen columns in column order, each
//! step one fused multiply-add, the pairwise reduction 16 -> 8 -> 4 -> 2 -> 1, then the
//! scalar tail of the last `cols % 16` columns. So a prompt token gets the bits it gets decoded alone, and the
//! scalar reference's bits.
//!
//! The tile is what makes a batch cheaper per token: each weight vector is widened once for three tokens and
//! each activation vector loaded once for two rows, 12 FMAs per 5 loads. A task takes its tokens three at
//! a time (their activations stay in L1) and walks all its rows for them (from L2, where the task's rows stay):
//! L2 then delivers 4 weight vectors per 12 multiply-adds, where rows kept in L1 would need 6 activation vectors.

use super::horizontal_sum;
use crate::row_blocks::ProductOut;
use crate::widen::Widen;
use std::arch::x86_64::*;

/// Rows and tokens of a register tile: 2 x 3 x 2 accumulators, two weight vectors and one activation vector
/// make the 16 registers.
const TILE_ROWS: usize = 2;
const TILE_TOKENS: usize = 3;

/// Eight weights at column `at` of each of `R` rows, widened (no closure: see `q8_block.rs`).
#[inline(always)]
unsafe fn load_rows<H: Widen, const R: usize>(w: *const H, cols: usize, at: usize) -> [__m256; R] {
    let mut v = [_mm256_setzero_ps(); R];
    for (r, v) in v.iter_mut().enumerate() {
        *v = H::load8(w.add(r * cols + at));
    }
    v
}

/// The `R x T` products of rows `w` (`R` consecutive rows of `cols`) and tokens `x` (`T` consecutive rows of
/// `cols`), written to `out` at `(row, token)`.
#[inline(always)]
#[allow(clippy::needless_range_loop)] // indices name the tile's registers
unsafe fn tile<H: Widen, const R: usize, const T: usize>(
    w: *const H,
    cols: usize,
    x: *const f32,
    out: &ProductOut,
    row: usize,
    token: usize,
) {
    let groups = cols / 16;
    let mut low = [[_mm256_setzero_ps(); T]; R];
    let mut high = [[_mm256_setzero_ps(); T]; R];
    for g in 0..groups {
        let at = g * 16;
        // The tile's weight vectors first, then each token's activation vector once for all of them.
        let wl: [__m256; R] = load_rows(w, cols, at);
        for t in 0..T {
            let xl = _mm256_loadu_ps(x.add(t * cols + at));
            for r in 0..R {
                low[r][t] = _mm256_fmadd_ps(wl[r], xl, low[r][t]);
            }
        }
        let wh: [__m256; R] = load_rows(w, cols, at + 8);
        for t in 0..T {
            let xh = _mm256_loadu_ps(x.add(t * cols + at + 8));
            for r in 0..R {
                high[r][t] = _mm256_fmadd_ps(wh[r], xh, high[r][t]);
            }
        }
    }
    for r in 0..R {
        for t in 0..T {
            let mut tail = 0.0f32;
            for i in groups * 16..cols {
                tail = (*w.add(r * cols + i))
                    .widen()
                    .mul_add(*x.add(t * cols + i), tail);
            }
            let value = horizontal_sum(_mm256_add_ps(low[r][t], high[r][t])) + tail;
            out.write(row + r, token + t, value);
        }
    }
}

/// `T` tokens (at `x`, the tokens from `token`) times the `row_count` rows at `w` (rows `first_row..` of the
/// output), in pairs and a last lone row.
#[inline(always)]
unsafe fn tokens_times_rows<H: Widen, const T: usize>(
    w: *const H,
    cols: usize,
    x: *const f32,
    out: &ProductOut,
    token: usize,
    first_row: usize,
    row_count: usize,
) {
    let mut r = 0;
    while r + TILE_ROWS <= row_count {
        tile::<H, TILE_ROWS, T>(w.add(r * cols), cols, x, out, first_row + r, token);
        r += TILE_ROWS;
    }
    if r < row_count {
        tile::<H, 1, T>(w.add(r * cols), cols, x, out, first_row + r, token);
    }
}

/// Rows `first_row..first_row + row_count` times every token of `x` (`[tokens, cols]`), into `out`. `weights`
/// holds exactly those rows (`row_count * cols` values, row-major).
///
/// # Safety
/// The CPU must have AVX2, FMA and F16C; `out` is `[tokens, rows]` with these rows the caller's alone.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn rows<H: Widen>(
    weights: &[H],
    cols: usize,
    x: &[f32],
    tokens: usize,
    out: &ProductOut,
    first_row: usize,
    row_count: usize,
) {
    assert!(weights.len() == row_count * cols && x.len() == tokens * cols);
    if H::WIDENS && tokens >= WIDEN_ONCE_TOKENS {
        // Widen the rows once for all tokens (exactly), then run the f32 tiles: the same values, the same sums.
        return WIDENED.with_borrow_mut(|wide| {
            wide.resize(weights.len(), 0.0);
            widen_rows(weights, wide);
            tiles(
                wide.as_ptr(),
                cols,
                x.as_ptr(),
                tokens,
                out,
                first_row,
                row_count,
            )
        });
    }
    tiles(
        weights.as_ptr(),
        cols,
        x.as_ptr(),
        tokens,
        out,
        first_row,
        row_count,
    )
}

/// Tokens from which a task's half-precision rows are widened to f32 once rather than in every tile: the tiles'
/// `vcvtph2ps` then no longer competes with their FMAs (measured: f16 GEMM 53% -> the f32 rate).
const WIDEN_ONCE_TOKENS: usize = 6;

thread_local! {
    static WIDENED: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// `dst[i] = src[i]` widened, eight at a time.
#[inline(always)]
unsafe fn widen_rows<H: Widen>(src: &[H], dst: &mut [f32]) {
    let whole = src.len() / 8 * 8;
    for i in (0..whole).step_by(8) {
        _mm256_storeu_ps(dst.as_mut_ptr().add(i), H::load8(src.as_ptr().add(i)));
    }
    for i in whole..src.len() {
        dst[i] = src[i].widen();
    }
}

/// The tiles of [`rows`]: `w` at row `first_row`'s first value.
#[inline(always)]
unsafe fn tiles<H: Widen>(
    w: *const H,
    cols: usize,
    x: *const f32,
    tokens: usize,
    out: &ProductOut,
    first_row: usize,
    row_count: usize,
) {
    let mut t = 0;
    while t + TILE_TOKENS <= tokens {
        tokens_times_rows::<H, TILE_TOKENS>(w, cols, x.add(t * cols), out, t, first_row, row_count);
        t += TILE_TOKENS;
    }
    match tokens - t {
        2 => tokens_times_rows::<H, 2>(w, cols, x.add(t * cols), out, t, first_row, row_count),
        1 => tokens_times_rows::<H, 1>(w, cols, x.add(t * cols), out, t, first_row, row_count),
        _ => {}
    }
}
