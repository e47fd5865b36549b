//! Encoding speed of the SeedLM search: seconds per million Gaussian weights, for both configurations, on all
//! cores. `cargo run --release -p seedinfer-formats --example seedlm_encode_speed [rows]`
use seedinfer_formats::seedlm::{encode_matrix, LfsrCycle, SeedTable, SEEDLM3, SEEDLM4};
use std::time::Instant;

fn main() {
    let rows: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(64);
    let cols = 576;
    // A fixed pseudo-random Gaussian stream (Box-Muller over a 64-bit LCG).
    let mut state = 0x5eed_u64;
    let mut uniform = move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((state >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    };
    let w: Vec<f32> = (0..rows * cols)
        .map(|_| {
            let (a, b) = (uniform(), uniform());
            ((-2.0 * a.ln()).sqrt() * (std::f64::consts::TAU * b).cos() * 0.02) as f32
        })
        .collect();
    for (name, config) in [("seedlm4", SEEDLM4), ("seedlm3", SEEDLM3)] {
        let cycle = LfsrCycle::new(config.block * config.coefficients);
        let table = SeedTable::new(config, &cycle);
        let start = Instant::now();
        encode_matrix(&table, &w, cols, &|_| {}, &|| false);
        let seconds = start.elapsed().as_secs_f64();
        println!(
            "{name}: {:.1} s per million weights ({} weights, {} threads)",
            seconds / (w.len() as f64 / 1e6),
            w.len(),
            rayon::current_num_threads()
        );
    }
}
