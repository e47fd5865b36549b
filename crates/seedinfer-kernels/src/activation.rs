//! The MLP's gated activation, SwiGLU's elementwise half: `gate = silu(gate) * up`.

/// `gate[i] = silu(gate[i]) * up[i]`, with `silu(g) = g / (1 + e^-g)`. Every path through the MLP (fused or
/// not) uses this one expression, so they give the same bits.
pub fn silu_times(gate: &mut [f32], up: &[f32]) {
    for (g, u) in gate.iter_mut().zip(up) {
        *g = *g / (1.0 + (-*g).exp()) * u;
    }
}
