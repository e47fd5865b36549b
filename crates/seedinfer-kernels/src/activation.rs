//! The MLP's gated activations, the elementwise half of a gated MLP: `gate = act(gate) * up`.

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
    /// they give the same bits.
    pub fn apply(self, gate: &mut [f32], up: &[f32]) {
        match self {
            Self::Silu => silu_times(gate, up),
            Self::GeluTanh => gelu_tanh_times(gate, up),
        }
    }
}

/// `gate[i] = silu(gate[i]) * up[i]`, with `silu(g) = g / (1 + e^-g)`.
pub fn silu_times(gate: &mut [f32], up: &[f32]) {
    for (g, u) in gate.iter_mut().zip(up) {
        *g = *g / (1.0 + (-*g).exp()) * u;
    }
}

/// `gate[i] = gelu_tanh(gate[i]) * up[i]`, with `gelu_tanh(g) = g/2 · (1 + tanh(√(2/π) · (g + 0.044715 g³)))`.
pub fn gelu_tanh_times(gate: &mut [f32], up: &[f32]) {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    for (g, u) in gate.iter_mut().zip(up) {
        let x = *g;
        let inner = SQRT_2_OVER_PI * (x + 0.044_715 * x * x * x);
        *g = 0.5 * x * (1.0 + inner.tanh()) * u;
    }
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
}
