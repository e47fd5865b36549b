//! The MLP's gated activations, the elementwise half of a gated MLP: `gate = act(gate) * up`.

use crate::isa::Isa;

/// The activation of a gated MLP's gate projection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GatedActivation {
    /// SwiGLU: `silu(g) = g / (1 + e^-g)` (Llama, Qwen).
    Silu,
    /// GeGLU with the tanh approximation of GELU, PyTorch's `gelu(approximate="tanh")` (Gemma).
    GeluTanh,
}

impl GatedActivation {
    /// The name transformers' configs give it (`hidden_act` / `hidden_activation`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Silu => "silu",
            Self::GeluTanh => "gelu_pytorch_tanh",
        }
    }

    /// `gate[i] = act(gate[i]) * up[i]`. Every path through the MLP (fused or not) uses this one expression, so
    /// they give the same bits; it is compiled once per instruction set (wider vectors, the same operations in
    /// the same order: no instruction set changes a bit).
    pub fn apply(self, gate: &mut [f32], up: &[f32]) {
        self.apply_on(crate::isa::detected(), gate, up)
    }

    /// [`Self::apply`] compiled for `isa` (or the widest instruction set below it that this machine has).
    pub fn apply_on(self, isa: Isa, gate: &mut [f32], up: &[f32]) {
        #[cfg(target_arch = "x86_64")]
        match isa.usable() {
            // SAFETY: `usable` only gives instruction sets this machine has.
            Isa::Avx512 => return unsafe { apply_avx512(self, gate, up) },
            Isa::Avx2 | Isa::AvxVnni => return unsafe { apply_avx2(self, gate, up) },
            _ => {}
        }
        let _ = isa;
        apply_plain(self, gate, up)
    }
}

#[inline(always)]
fn apply_plain(activation: GatedActivation, gate: &mut [f32], up: &[f32]) {
    match activation {
        GatedActivation::Silu => silu_times(gate, up),
        GatedActivation::GeluTanh => gelu_tanh_times(gate, up),
    }
}

/// [`apply_plain`] vectorised by the compiler for AVX2 (Rust never fuses a multiply and an add on its own, so FMA
/// being available changes nothing).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn apply_avx2(activation: GatedActivation, gate: &mut [f32], up: &[f32]) {
    apply_plain(activation, gate, up)
}

/// [`apply_plain`] vectorised by the compiler for AVX-512: sixteen lanes.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,avx512f,avx512bw,avx512vl")]
unsafe fn apply_avx512(activation: GatedActivation, gate: &mut [f32], up: &[f32]) {
    apply_plain(activation, gate, up)
}

/// `gate[i] = silu(gate[i]) * up[i]`, with `silu(g) = g / (1 + e^-g)` through [`exp_approx`], so the loop
/// vectorises instead of calling libm's `expf` per element (10% of a 128-token prefill of the default model).
#[inline(always)]
pub fn silu_times(gate: &mut [f32], up: &[f32]) {
    for (g, u) in gate.iter_mut().zip(up) {
        *g = *g / (1.0 + exp_approx(-*g)) * u;
    }
}

/// `gate[i] = gelu_tanh(gate[i]) * up[i]`, with `gelu_tanh(g) = g/2 · (1 + tanh(√(2/π) · (g + 0.044715 g³)))`,
/// computed as `g / (1 + e^(-2u))` (the same function: `(1 + tanh u)/2` is the logistic of `2u`) with
/// [`exp_approx`], so the loop vectorises instead of calling libm's `tanhf` per element (12% of a Gemma 3 prefill).
#[inline(always)]
pub fn gelu_tanh_times(gate: &mut [f32], up: &[f32]) {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    for (g, u) in gate.iter_mut().zip(up) {
        let x = *g;
        let inner = SQRT_2_OVER_PI * (x + 0.044_715 * x * x * x);
        *g = x / (1.0 + exp_approx(-2.0 * inner)) * u;
    }
}

/// `e^x` within 2 ulp for `x` in [-87, 88] (clamped there: 0 and `f32::MAX`-scale beyond), in plain arithmetic the
/// compiler vectorises: `x = k ln 2 + r` with `k` rounded to the nearest integer (`|r| <= ln 2 / 2`, `ln 2` split in
/// two parts so `r` is exact), `e^r` by its Taylor polynomial to `r^7/7!` (relative error below 2e-8 there), and
/// `2^k` built in the exponent bits.
#[inline(always)]
pub fn exp_approx(x: f32) -> f32 {
    const LOG2_E: f32 = std::f32::consts::LOG2_E;
    // ln 2 = LN2_HI + LN2_LO (fdlibm's split): LN2_HI's last 7 mantissa bits are 0, so k * LN2_HI is exact for the
    // |k| < 2^7 of the clamped range.
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    // Adding and subtracting 1.5 * 2^23 rounds an f32 of magnitude below 2^22 to the nearest integer.
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-87.0, 88.0);
    let shifted = x * LOG2_E + ROUND;
    let k = shifted - ROUND;
    let r = (x - k * LN2_HI) - k * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0
                    + r * (1.0 / 24.0
                        + r * (1.0 / 120.0 + r * (1.0 / 720.0 + r * (1.0 / 5040.0)))))));
    // `shifted` is ROUND + k exactly, so its bits are ROUND's plus k: k as an integer without a (saturating,
    // per-lane) float-to-int conversion, then 2^k from its biased exponent.
    let k_bits = shifted.to_bits().wrapping_sub(ROUND.to_bits());
    let scale = f32::from_bits(k_bits.wrapping_add(127) << 23);
    p * scale
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gelu_tanh_matches_known_values() {
        // torch.nn.functional.gelu(x, approximate="tanh") at these points.
        let xs = [-3.0f32, -1.0, -0.5, 0.0, 0.5, 1.0, 3.0];
        let expected = [
            -0.003_637_433,
            -0.158_808,
            -0.154_286,
            0.0,
            0.345_714,
            0.841_192,
            2.996_362_7,
        ];
        let mut gate = xs.to_vec();
        GatedActivation::GeluTanh.apply(&mut gate, &[1.0; 7]);
        for ((g, e), x) in gate.iter().zip(expected).zip(xs) {
            assert!((g - e).abs() < 1e-6, "gelu_tanh({x}) = {g}, expected {e}");
        }
    }

    #[test]
    fn exp_approx_is_within_2_ulp_of_exp() {
        let mut worst = 0.0f64;
        let mut x = -87.0f32;
        while x <= 88.0 {
            let exact = (x as f64).exp();
            let ulp = (exact as f32).abs() * f32::EPSILON;
            let error = ((exp_approx(x) as f64 - exact) / ulp as f64).abs();
            worst = worst.max(error);
            x += 0.000_731;
        }
        assert!(worst <= 2.0, "worst error {worst} ulp");
        assert_eq!(exp_approx(0.0), 1.0);
        assert_eq!(exp_approx(-1000.0), exp_approx(-87.0));
        assert!(exp_approx(1000.0).is_finite());
    }

    /// Every instruction set computes the activations with the same operations: the same bits, on values over
    /// the whole clamped range, the tails of a vector and the special values.
    #[test]
    fn every_instruction_set_gives_the_same_bits() {
        let mut xs: Vec<f32> = (-20_000..=20_000).map(|i| i as f32 * 0.005_3).collect();
        xs.extend([
            0.0,
            -0.0,
            88.5,
            -88.5,
            1e30,
            -1e30,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::MIN_POSITIVE,
        ]);
        let up: Vec<f32> = (0..xs.len()).map(|i| 1.0 - (i % 7) as f32 * 0.25).collect();
        for activation in [GatedActivation::Silu, GatedActivation::GeluTanh] {
            for len in [xs.len(), 1, 7, 15, 17, 33] {
                let mut plain = xs[..len].to_vec();
                apply_plain(activation, &mut plain, &up[..len]);
                for isa in [Isa::Avx2, Isa::AvxVnni, Isa::Avx512] {
                    let mut wide = xs[..len].to_vec();
                    activation.apply_on(isa, &mut wide, &up[..len]);
                    for (i, (w, p)) in wide.iter().zip(&plain).enumerate() {
                        assert_eq!(
                            w.to_bits(),
                            p.to_bits(),
                            "{activation:?} {isa:?} x={} [{i}]",
                            xs[i]
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn silu_is_within_3_ulp_of_its_definition() {
        let xs: Vec<f32> = (-8000..=8000).map(|i| i as f32 * 0.011).collect();
        let mut gate = xs.clone();
        GatedActivation::Silu.apply(&mut gate, &vec![1.0; xs.len()]);
        for (x, g) in xs.iter().zip(gate) {
            let x64 = *x as f64;
            let exact = x64 / (1.0 + (-x64).exp());
            let ulp = (exact as f32).abs().max(f32::MIN_POSITIVE) * f32::EPSILON;
            assert!(
                ((g as f64 - exact) / ulp as f64).abs() <= 3.0,
                "silu({x}) = {g}, exact {exact}"
            );
        }
    }

    #[test]
    fn gelu_tanh_equals_its_tanh_form() {
        let xs: Vec<f32> = (-4000..=4000).map(|i| i as f32 * 0.0025).collect();
        let mut gate = xs.clone();
        gelu_tanh_times(&mut gate, &vec![1.0; xs.len()]);
        for (x, g) in xs.iter().zip(gate) {
            let x64 = *x as f64;
            let u = (2.0 / std::f64::consts::PI).sqrt() * (x64 + 0.044715 * x64.powi(3));
            let exact = 0.5 * x64 * (1.0 + u.tanh());
            assert!(
                (g as f64 - exact).abs() <= 2e-7 * (1.0 + exact.abs()),
                "gelu_tanh({x}) = {g}, exact {exact}"
            );
        }
    }
}
