//! ggml's scale searches, shared by the K-quant and IQ4 quantisers (`ggml-quants.c`: `nearest_int`,
//! `make_qx_quants`, `make_q3_quants`, `make_qkx2_quants`, `best_index_int8` and the IQ4 search of
//! `quantize_row_iq4_nl_impl`), reproduced operation for operation in f32 so that the blocks they choose are the
//! bytes llama.cpp writes (its reference quantisers live in libggml-base, built without FMA contraction; so is this).
//! Every product and sum below keeps ggml's order: `w * x * l` is `(w * x) * l`.

/// Below this largest magnitude a group counts as all zero (ggml's `GROUP_MAX_EPS`).
pub const GROUP_MAX_EPS: f32 = 1e-15;

/// ggml's `nearest_int`: round to nearest, ties to even, through the bits of `v + 1.5 * 2^23` (valid for
/// `|v| <= 4194303`; other values give what ggml's gives, not a clamped result).
#[inline(always)]
pub fn nearest_int(v: f32) -> i32 {
    let bits = (v + 12_582_912.0).to_bits() as i32;
    (bits & 0x007f_ffff) - 0x0040_0000
}

/// The first element of largest magnitude, with its sign (ggml's `amax`/`max` scan: `>` keeps the first).
fn signed_max(x: &[f32]) -> (f32, f32) {
    let (mut amax, mut max) = (0.0f32, 0.0f32);
    for &v in x {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    (amax, max)
}

/// `make_qx_quants` with `rmse_type = 1` and no importance weights (Q6_K): signed levels `-nmax..nmax` stored as
/// `l + nmax` in `levels`, weights `x²`, the scale that minimises the weighted error over 18 trial scales around
/// `-nmax / max`. Returns the scale.
pub fn make_qx_quants(nmax: i32, x: &[f32], levels: &mut [i8]) -> f32 {
    let (amax, max) = signed_max(x);
    if amax < GROUP_MAX_EPS {
        levels.fill(0);
        return 0.0;
    }
    let level = |iscale: f32, v: f32| nearest_int(iscale * v).clamp(-nmax, nmax - 1);
    let sums = |iscale: f32| {
        let (mut sumlx, mut suml2) = (0.0f32, 0.0f32);
        for &v in x {
            let l = level(iscale, v) as f32;
            let w = v * v;
            sumlx += w * v * l;
            suml2 += w * l * l;
        }
        (sumlx, suml2)
    };
    let mut iscale = -(nmax as f32) / max;
    for (l, &v) in levels.iter_mut().zip(x) {
        *l = (level(iscale, v) + nmax) as i8;
    }
    let (sumlx, suml2) = sums(iscale);
    let mut scale = if suml2 != 0.0 { sumlx / suml2 } else { 0.0 };
    let mut best = scale * sumlx;
    for is in (-9..=9).filter(|&is| is != 0) {
        iscale = -(nmax as f32 + 0.1 * is as f32) / max;
        let (sumlx, suml2) = sums(iscale);
        if suml2 > 0.0 && sumlx * sumlx > best * suml2 {
            for (l, &v) in levels.iter_mut().zip(x) {
                *l = (level(iscale, v) + nmax) as i8;
            }
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    scale
}

/// `make_q3_quants` with `do_rmse` (Q3_K): signed levels `-nmax..nmax` (stored as `l + nmax`; an all-zero group
/// leaves zeros), weights `x²`, up to five passes that move single levels while the weighted fit improves.
/// Returns the scale.
pub fn make_q3_quants(nmax: i32, x: &[f32], levels: &mut [i8]) -> f32 {
    let (amax, max) = signed_max(x);
    if amax < GROUP_MAX_EPS {
        levels.fill(0);
        return 0.0;
    }
    let iscale = -(nmax as f32) / max;
    let (mut sumlx, mut suml2) = (0.0f32, 0.0f32);
    for (l, &v) in levels.iter_mut().zip(x) {
        *l = nearest_int(iscale * v).clamp(-nmax, nmax - 1) as i8;
        let w = v * v;
        sumlx += w * v * *l as f32;
        suml2 += w * *l as f32 * *l as f32;
    }
    for _ in 0..5 {
        let mut changed = 0;
        for (l, &v) in levels.iter_mut().zip(x) {
            let w = v * v;
            let current = *l as f32;
            let mut slx = sumlx - w * v * current;
            if slx > 0.0 {
                let mut sl2 = suml2 - w * current * current;
                let new_l = nearest_int(v * sl2 / slx).clamp(-nmax, nmax - 1);
                if new_l != *l as i32 {
                    slx += w * v * new_l as f32;
                    sl2 += w * new_l as f32 * new_l as f32;
                    if sl2 > 0.0 && slx * slx * suml2 > sumlx * sumlx * sl2 {
                        *l = new_l as i8;
                        sumlx = slx;
                        suml2 = sl2;
                        changed += 1;
                    }
                }
            }
        }
        if changed == 0 {
            break;
        }
    }
    for l in levels.iter_mut() {
        *l += nmax as i8;
    }
    if suml2 > 0.0 {
        sumlx / suml2
    } else {
        0.0
    }
}

/// The last step of ggml's K-quant quantisers: a group's weights re-quantised at the scale `d` and minimum `dm`
/// they will be read with, `nearest_int((x + dm) / d)` in `0..=nmax`. A zero scale leaves the search's levels
/// (ggml's `if (!d) continue`).
pub fn requantize_with_minimum(x: &[f32], d: f32, dm: f32, nmax: i32, levels: &mut [u8]) {
    if d == 0.0 {
        return;
    }
    for (l, &v) in levels.iter_mut().zip(x) {
        *l = nearest_int((v + dm) / d).clamp(0, nmax) as u8;
    }
}

/// The same for signed levels: `nearest_int(x / d)` in `-nmax..nmax`, stored as `l + nmax`.
pub fn requantize_signed(x: &[f32], d: f32, nmax: i32, levels: &mut [i8]) {
    if d == 0.0 {
        return;
    }
    for (l, &v) in levels.iter_mut().zip(x) {
        *l = (nearest_int(v / d).clamp(-nmax, nmax - 1) + nmax) as i8;
    }
}

/// The parameters of one `make_qkx2_quants` search.
pub struct Qkx2Search {
    /// Largest level.
    pub nmax: u8,
    /// Trial inverse scales `(rmin + rdelta * is + nmax) / (max - min)` for `is` in `0..=nstep`.
    pub rmin: f32,
    pub rdelta: f32,
    pub nstep: i32,
    /// Absolute instead of squared error.
    pub use_mad: bool,
}

/// `make_qkx2_quants` (Q2_K, Q4_K, Q5_K): levels `0..=nmax` of `x = scale * l - min` (`min >= 0`) fitted by weighted
/// least squares over the trial scales, keeping the one with the least weighted error. Returns `(scale, min)`.
pub fn make_qkx2_quants(
    search: &Qkx2Search,
    x: &[f32],
    weights: &[f32],
    levels: &mut [u8],
) -> (f32, f32) {
    let nmax = search.nmax as i32;
    let (mut min, mut max) = (x[0], x[0]);
    let mut sum_w = weights[0];
    let mut sum_x = sum_w * x[0];
    for (&v, &w) in x.iter().zip(weights).skip(1) {
        if v < min {
            min = v;
        }
        if v > max {
            max = v;
        }
        sum_w += w;
        sum_x += w * v;
    }
    if min > 0.0 {
        min = 0.0;
    }
    if max == min {
        levels.fill(0);
        return (0.0, -min);
    }
    let error = |scale: f32, min: f32, levels: &[u8]| {
        let mut total = 0.0f32;
        for ((&l, &v), &w) in levels.iter().zip(x).zip(weights) {
            let diff = scale * l as f32 + min - v;
            total += w * if search.use_mad {
                diff.abs()
            } else {
                diff * diff
            };
        }
        total
    };
    let mut iscale = search.nmax as f32 / (max - min);
    let mut scale = 1.0 / iscale;
    for (l, &v) in levels.iter_mut().zip(x) {
        *l = nearest_int(iscale * (v - min)).clamp(0, nmax) as u8;
    }
    let mut best_error = error(scale, min, levels);
    if search.nstep < 1 {
        return (scale, -min);
    }
    let mut trial = [0u8; 32];
    let trial = &mut trial[..x.len()];
    for is in 0..=search.nstep {
        iscale = (search.rmin + search.rdelta * is as f32 + search.nmax as f32) / (max - min);
        let (mut sum_l, mut sum_l2, mut sum_xl) = (0.0f32, 0.0f32, 0.0f32);
        for ((l, &v), &w) in trial.iter_mut().zip(x).zip(weights) {
            *l = nearest_int(iscale * (v - min)).clamp(0, nmax) as u8;
            let lf = *l as f32;
            sum_l += w * lf;
            sum_l2 += w * lf * lf;
            sum_xl += w * lf * v;
        }
        let d = sum_w * sum_l2 - sum_l * sum_l;
        if d > 0.0 {
            let mut this_scale = (sum_w * sum_xl - sum_x * sum_l) / d;
            let mut this_min = (sum_l2 * sum_x - sum_l * sum_xl) / d;
            if this_min > 0.0 {
                this_min = 0.0;
                this_scale = sum_xl / sum_l2;
            }
            let current = error(this_scale, this_min, trial);
            if current < best_error {
                levels.copy_from_slice(trial);
                best_error = current;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    (scale, -min)
}

/// `best_index_int8`: the index of the level of the sorted `values` nearest to `x` (ties to the upper one).
pub fn best_index_int8(values: &[i8; 16], x: f32) -> u8 {
    if x <= values[0] as f32 {
        return 0;
    }
    if x >= values[15] as f32 {
        return 15;
    }
    let (mut ml, mut mu) = (0usize, 15usize);
    while mu - ml > 1 {
        let mav = (ml + mu) / 2;
        if x < values[mav] as f32 {
            mu = mav;
        } else {
            ml = mav;
        }
    }
    if x - (values[mu - 1] as f32) < values[mu] as f32 - x {
        (mu - 1) as u8
    } else {
        mu as u8
    }
}

/// The first half of `quantize_row_iq4_nl_impl` without importance weights and `ntry = 7` (what llama.cpp's file
/// quantiser runs for IQ4_NL and IQ4_XS): one group of 32's scale against the table `values`, weights `x²`, the best
/// of 16 trial scales; its levels into `levels`. `None` for a group below [`GROUP_MAX_EPS`] (scale 0, levels
/// untouched).
pub fn iq4_group_scale(values: &[i8; 16], x: &[f32], levels: &mut [u8]) -> Option<f32> {
    const NTRY: i32 = 7;
    let (amax, max) = signed_max(x);
    if amax < GROUP_MAX_EPS {
        return None;
    }
    let first = values[0] as f32;
    let sums = |id: f32, levels: Option<&mut [u8]>| {
        let (mut sumqx, mut sumq2) = (0.0f32, 0.0f32);
        let mut levels = levels;
        for (j, &v) in x.iter().enumerate() {
            let l = best_index_int8(values, id * v);
            if let Some(levels) = levels.as_deref_mut() {
                levels[j] = l;
            }
            let q = values[l as usize] as f32;
            let w = v * v;
            sumqx += w * q * v;
            sumq2 += w * q * q;
        }
        (sumqx, sumq2)
    };
    let d = -max / first;
    let (sumqx, sumq2) = sums(1.0 / d, Some(levels));
    let mut d = if sumq2 > 0.0 { sumqx / sumq2 } else { 0.0 };
    let mut best = d * sumqx;
    for itry in -NTRY..=NTRY {
        let id = (itry + values[0] as i32) as f32 / max;
        let (sumqx, sumq2) = sums(id, None);
        if sumq2 > 0.0 && sumqx * sumqx > best * sumq2 {
            d = sumqx / sumq2;
            best = d * sumqx;
        }
    }
    Some(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_int_rounds_half_to_even_like_ggml() {
        for (v, expected) in [
            (0.5, 0),
            (1.5, 2),
            (2.5, 2),
            (-0.5, 0),
            (-1.5, -2),
            (3.49, 3),
            (-7.51, -8),
        ] {
            assert_eq!(nearest_int(v), expected, "{v}");
        }
    }

    #[test]
    fn best_index_picks_the_nearest_level_and_the_upper_one_on_ties() {
        let values = super::super::KVALUES_IQ4NL;
        assert_eq!(best_index_int8(&values, -500.0), 0);
        assert_eq!(best_index_int8(&values, 500.0), 15);
        assert_eq!(best_index_int8(&values, 0.0), 8); // level 1 is nearest to 0
        assert_eq!(best_index_int8(&values, -4.5), 8); // halfway between -10 and 1: the upper
    }
}
