//! Test data shared by the quantisers' tests: reproducible Gaussian weights and the error measure they are judged by.

/// `n` weights from N(0, 0.02²): a fixed xorshift stream through Box-Muller, the same on every run.
pub(crate) fn gaussian(n: usize) -> Vec<f32> {
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut uniform = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        ((state >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    };
    (0..n)
        .map(|_| {
            let (a, b) = (uniform(), uniform());
            ((-2.0 * a.ln()).sqrt() * (std::f64::consts::TAU * b).cos() * 0.02) as f32
        })
        .collect()
}

/// `||original - reconstructed|| / ||original||` (Frobenius), in f64.
pub(crate) fn relative_error(original: &[f32], reconstructed: &[f32]) -> f64 {
    let err: f64 = original
        .iter()
        .zip(reconstructed)
        .map(|(a, b)| ((a - b) as f64).powi(2))
        .sum();
    let norm: f64 = original.iter().map(|a| (*a as f64).powi(2)).sum();
    (err / norm).sqrt()
}
