//! Model hyper-parameters of the architectures seedinfer runs (llama, qwen2, qwen3, gemma3), read from a Hugging Face
//! `config.json` or GGUF metadata. A key that would change the arithmetic is read or refused
//! (`UNSUPPORTED_CONFIG`), never ignored.

use crate::error::{EngineError, Result};
use seedinfer_formats::GgufFile;
pub use seedinfer_kernels::activation::GatedActivation;
use serde::Deserialize;
use serde_json::Value;
use std::path::Path;

/// The GGUF tensor of per-frequency RoPE divisors (llama.cpp's form of Llama 3.1 scaling).
pub const ROPE_FREQS_TENSOR: &str = "rope_freqs.weight";
/// The GGUF tensors of Phi-3's longrope factors (its 128K variants).
const PHI3_LONG_FACTORS_TENSOR: &str = "rope_factors_long.weight";
const PHI3_SHORT_FACTORS_TENSOR: &str = "rope_factors_short.weight";

/// How rotary embeddings pair the dimensions of a head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RopeStyle {
    /// Pairs (2i, 2i+1): llama.cpp's GGUF conversion permutes q/k rows for this layout.
    Interleaved,
    /// Pairs (i, i + head_dim/2): Hugging Face `rotate_half`.
    Half,
}

impl RopeStyle {
    pub fn name(self) -> &'static str {
        match self {
            RopeStyle::Interleaved => "interleaved",
            RopeStyle::Half => "half",
        }
    }
}

/// The decoder families seedinfer runs: one layer step, with these differences as hooks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Architecture {
    /// Llama 2/3.x, Mistral (without sliding windows), TinyLlama, SmolLM.
    Llama,
    /// Qwen2 and Qwen2.5: biases on the q, k and v projections.
    Qwen2,
    /// Qwen3 (dense): RMSNorm over each head of q and k before RoPE, no biases.
    Qwen3,
    /// Gemma 3 (text): embeddings scaled by √hidden, RMSNorm weights `1 + w`, norms after attention and after the
    /// MLP too, q/k head norms, GELU-tanh gated MLP, sliding-window (local) layers with their own RoPE base
    /// between global ones.
    Gemma3,
    /// Phi-3/3.5 (mini, medium): q, k and v in one matrix, gate and up in one matrix.
    Phi3,
}

impl Architecture {
    /// The GGUF `general.architecture` name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Llama => "llama",
            Self::Qwen2 => "qwen2",
            Self::Qwen3 => "qwen3",
            Self::Gemma3 => "gemma3",
            Self::Phi3 => "phi3",
        }
    }

    fn from_gguf(name: &str) -> Option<Self> {
        match name {
            "llama" => Some(Self::Llama),
            "qwen2" => Some(Self::Qwen2),
            "qwen3" => Some(Self::Qwen3),
            "gemma3" => Some(Self::Gemma3),
            "phi3" => Some(Self::Phi3),
            _ => None,
        }
    }

    /// From `config.json`'s `model_type`, else its `architectures`.
    fn from_hf(model_type: Option<&str>, architectures: &[String]) -> Option<Self> {
        let by_type = |t: &str| match t {
            "llama" | "mistral" => Some(Self::Llama),
            "qwen2" => Some(Self::Qwen2),
            "qwen3" => Some(Self::Qwen3),
            "gemma3_text" => Some(Self::Gemma3),
            "phi3" => Some(Self::Phi3),
            _ => None,
        };
        let by_class = |c: &str| match c {
            "LlamaForCausalLM" | "MistralForCausalLM" => Some(Self::Llama),
            "Qwen2ForCausalLM" => Some(Self::Qwen2),
            "Qwen3ForCausalLM" => Some(Self::Qwen3),
            "Gemma3ForCausalLM" => Some(Self::Gemma3),
            "Phi3ForCausalLM" => Some(Self::Phi3),
            _ => None,
        };
        match model_type {
            Some(t) => by_type(t),
            None => architectures.iter().find_map(|c| by_class(c)),
        }
    }

    /// Whether the q, k and v projections add a bias.
    pub fn has_qkv_bias(self) -> bool {
        self == Self::Qwen2
    }

    /// Whether each head of q and k is RMS-normalised (own weights per layer) before RoPE.
    pub fn has_qk_norm(self) -> bool {
        matches!(self, Self::Qwen3 | Self::Gemma3)
    }

    /// Whether the attention output and the MLP output are RMS-normalised (own weights) before their residual
    /// additions, besides the usual norms before them.
    pub fn has_post_norms(self) -> bool {
        self == Self::Gemma3
    }

    /// Whether the checkpoint stores q, k and v as one matrix (rows in that order) and gate and up as one (gate
    /// first), which the loader splits.
    pub fn has_fused_projections(self) -> bool {
        self == Self::Phi3
    }

    /// Whether the embeddings are multiplied by √hidden_size.
    fn scales_embeddings(self) -> bool {
        self == Self::Gemma3
    }

    /// Whether a Hugging Face checkpoint's RMSNorm weights are stored as `w` for a scale of `1 + w` (Gemma's
    /// norm; llama.cpp's GGUF conversion stores `1 + w`).
    pub fn hf_norm_offset(self) -> f32 {
        match self {
            Self::Gemma3 => 1.0,
            _ => 0.0,
        }
    }

    /// How llama.cpp's GGUF conversion lays out the rotary pairs of this architecture's q and k rows.
    fn gguf_rope_style(self) -> RopeStyle {
        match self {
            Self::Llama => RopeStyle::Interleaved,
            Self::Qwen2 | Self::Qwen3 | Self::Gemma3 | Self::Phi3 => RopeStyle::Half,
        }
    }
}

/// How the rotary frequencies are scaled for contexts longer than the training one.
#[derive(Clone, Debug, PartialEq)]
pub enum RopeScaling {
    None,
    /// Positions divided by `factor` (`rope_type: linear`).
    Linear {
        factor: f64,
    },
    /// Llama 3.1's frequency-dependent scaling (`rope_type: llama3`).
    Llama3 {
        factor: f64,
        low_freq_factor: f64,
        high_freq_factor: f64,
        original_context: f64,
    },
    /// One divisor per frequency: the GGUF `rope_freqs.weight` tensor (how llama.cpp stores `llama3`).
    FreqFactors(Vec<f32>),
    /// Phi-3's LongRoPE (`longrope`, formerly `su`): one divisor per frequency, `long` for a context longer than
    /// `original_context` and `short` otherwise, and cos/sin multiplied by `attention_factor`.
    LongRope {
        short: Vec<f32>,
        long: Vec<f32>,
        original_context: usize,
        attention_factor: f64,
    },
}

impl RopeScaling {
    /// A description for model info and fingerprints, e.g. `llama3(factor 32, low 1, high 4, original 8192)`.
    pub fn describe(&self) -> String {
        match self {
            Self::None => "none".into(),
            Self::Linear { factor } => format!("linear(factor {factor})"),
            Self::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_context,
            } => format!(
                "llama3(factor {factor}, low {low_freq_factor}, high {high_freq_factor}, original {original_context})"
            ),
            Self::FreqFactors(f) => format!("rope_freqs({} factors)", f.len()),
            Self::LongRope {
                short,
                original_context,
                attention_factor,
                ..
            } => format!(
                "longrope({} factors, original {original_context}, attention factor {attention_factor:.4})",
                short.len()
            ),
        }
    }

    /// Phi-3's LongRoPE from its factors, the training context and (when the configuration gives none) the
    /// attention factor `√(1 + ln(max / original) / ln(original))` of the paper, 1 when not extended.
    fn longrope(
        short: Vec<f32>,
        long: Vec<f32>,
        original_context: usize,
        max_context: usize,
        attention_factor: Option<f64>,
    ) -> Self {
        let factor = max_context as f64 / original_context.max(1) as f64;
        let attention_factor = attention_factor.unwrap_or(if factor <= 1.0 {
            1.0
        } else {
            (1.0 + factor.ln() / (original_context as f64).ln()).sqrt()
        });
        Self::LongRope {
            short,
            long,
            original_context,
            attention_factor,
        }
    }
}

#[derive(Clone, Debug)]
pub struct LlamaConfig {
    /// As the file names it: `general.architecture`, or `config.json`'s first `architectures` entry.
    pub architecture: String,
    pub arch: Architecture,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub vocab_size: usize,
    pub context_length: usize,
    pub rope_theta: f32,
    pub rope_scaling: RopeScaling,
    pub rms_norm_eps: f32,
    pub tied_embeddings: bool,
    pub rope_style: RopeStyle,
    /// The gated MLP's activation.
    pub activation: GatedActivation,
    /// The factor of the attention scores (`1/√head_dim` unless the configuration says otherwise).
    pub attention_scale: f32,
    /// The embeddings' factor (Gemma: √hidden_size).
    pub embedding_scale: Option<f32>,
    /// Sliding-window (local) attention, when some layers have it.
    pub sliding_window: Option<SlidingWindow>,
}

/// Which layers attend only to their last `size` positions, and their RoPE.
#[derive(Clone, Debug, PartialEq)]
pub struct SlidingWindow {
    /// Positions a local layer's query sees: its own and the `size - 1` before it.
    pub size: usize,
    /// Per layer: true for a local (sliding-window) layer.
    pub local_layers: Vec<bool>,
    /// The RoPE base of the local layers, which take no RoPE scaling (Gemma 3); `None`: the global one.
    pub local_rope_theta: Option<f32>,
}

impl SlidingWindow {
    /// Gemma 3's layout when a file gives no other: five local layers, then a global one.
    fn every_nth_global(size: usize, layers: usize, n: usize) -> Self {
        Self {
            size,
            local_layers: (0..layers).map(|l| n == 0 || l % n < n - 1).collect(),
            local_rope_theta: None,
        }
    }

    /// A description for model info, e.g. `512 positions on 15 of 18 layers`.
    pub fn describe(&self) -> String {
        let local = self.local_layers.iter().filter(|&&l| l).count();
        format!(
            "{} positions on {local} of {} layers",
            self.size,
            self.local_layers.len()
        )
    }
}

/// A GGUF array of booleans (llama.cpp's per-layer `sliding_window_pattern`).
fn bool_array(v: &seedinfer_formats::GgufValue) -> Option<Vec<bool>> {
    v.as_array()?.iter().map(|b| b.as_bool()).collect()
}

/// An `UNSUPPORTED_CONFIG` error for `key = value`.
fn unsupported(key: &str, value: impl std::fmt::Display, reason: &str) -> EngineError {
    EngineError::UnsupportedConfig {
        key: key.to_string(),
        value: value.to_string(),
        reason: reason.to_string(),
    }
}

/// The RoPE settings of a `config.json`: `rope_parameters` (transformers 5, `rope_theta` inside) or
/// `rope_scaling` (transformers 4, `type` or `rope_type`), with the top-level `rope_theta`.
fn hf_rope(
    rope_parameters: Option<&Value>,
    rope_scaling: Option<&Value>,
    rope_theta: Option<f32>,
    contexts: (Option<usize>, usize),
) -> Result<(f32, RopeScaling)> {
    let (key, params) = match (rope_parameters, rope_scaling) {
        (Some(p), _) if !p.is_null() => ("rope_parameters", p),
        (_, Some(p)) if !p.is_null() => ("rope_scaling", p),
        _ => return Ok((rope_theta.unwrap_or(10_000.0), RopeScaling::None)),
    };
    let Some(params) = params.as_object() else {
        return Err(EngineError::InvalidConfig(format!(
            "{key} must be an object, got {params}"
        )));
    };
    let number = |name: &str| -> Result<Option<f64>> {
        match params.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v.as_f64().map(Some).ok_or_else(|| {
                EngineError::InvalidConfig(format!("{key}.{name} must be a number, got {v}"))
            }),
        }
    };
    let theta = match number("rope_theta")? {
        Some(t) => t as f32,
        None => rope_theta.unwrap_or(10_000.0),
    };
    if let Some(f) = number("partial_rotary_factor")?.filter(|f| *f != 1.0) {
        return Err(unsupported(
            &format!("{key}.partial_rotary_factor"),
            f,
            "RoPE over part of each head is not implemented",
        ));
    }
    let rope_type = params
        .get("rope_type")
        .or_else(|| params.get("type"))
        .and_then(Value::as_str)
        .unwrap_or("default");
    let required = |name: &str| -> Result<f64> {
        number(name)?.ok_or_else(|| {
            EngineError::InvalidConfig(format!("{key}.{name} is missing for rope_type {rope_type}"))
        })
    };
    let factors = |name: &str| -> Result<Vec<f32>> {
        params
            .get(name)
            .and_then(Value::as_array)
            .and_then(|a| a.iter().map(|v| v.as_f64().map(|f| f as f32)).collect())
            .ok_or_else(|| {
                EngineError::InvalidConfig(format!(
                    "{key}.{name} must be an array of numbers for rope_type {rope_type}"
                ))
            })
    };
    let scaling = match rope_type {
        "default" => RopeScaling::None,
        "linear" => RopeScaling::Linear {
            factor: required("factor")?,
        },
        "longrope" | "su" => {
            let (original, max_context) = contexts;
            let original = match number("original_max_position_embeddings")? {
                Some(o) => o as usize,
                None => original.ok_or_else(|| {
                    EngineError::InvalidConfig(format!(
                        "original_max_position_embeddings is missing for {key}.rope_type {rope_type}"
                    ))
                })?,
            };
            // transformers: the ratio of the two contexts, unless `factor` is given.
            let max_context = match number("factor")? {
                Some(f) => (f * original as f64) as usize,
                None => max_context,
            };
            RopeScaling::longrope(
                factors("short_factor")?,
                factors("long_factor")?,
                original,
                max_context,
                number("attention_factor")?,
            )
        }
        "llama3" => RopeScaling::Llama3 {
            factor: required("factor")?,
            low_freq_factor: required("low_freq_factor")?,
            high_freq_factor: required("high_freq_factor")?,
            original_context: required("original_max_position_embeddings")?,
        },
        other => {
            return Err(unsupported(
                &format!("{key}.rope_type"),
                format!("{other:?}"),
                "implemented: default, linear, llama3, longrope",
            ))
        }
    };
    Ok((theta, scaling))
}

/// The rotary inverse frequencies `theta^(-2i/head_dim)` of each pair `i` of a head, in f64, scaled by `scaling` (for
/// LongRoPE, in a session of `context` positions).
fn inv_freqs(head_dim: usize, theta: f32, scaling: &RopeScaling, context: usize) -> Vec<f64> {
    let (d, theta) = (head_dim as f64, theta as f64);
    let base = (0..head_dim / 2).map(move |i| 1.0 / theta.powf(2.0 * i as f64 / d));
    let divided = |factors: &[f32]| {
        base.clone()
            .zip(factors)
            .map(|(f, &k)| f / k as f64)
            .collect()
    };
    match scaling {
        RopeScaling::None => base.collect(),
        RopeScaling::Linear { factor } => base.map(|f| f / factor).collect(),
        RopeScaling::FreqFactors(factors) => divided(factors),
        RopeScaling::LongRope {
            short,
            long,
            original_context,
            ..
        } => divided(if context > *original_context {
            long
        } else {
            short
        }),
        &RopeScaling::Llama3 {
            factor,
            low_freq_factor: low,
            high_freq_factor: high,
            original_context: context,
        } => base
            .map(|f| {
                let wavelength = 2.0 * std::f64::consts::PI / f;
                if wavelength < context / high {
                    f
                } else if wavelength > context / low {
                    f / factor
                } else {
                    let smooth = (context / wavelength - low) / (high - low);
                    f * ((1.0 - smooth) / factor + smooth)
                }
            })
            .collect(),
    }
}

impl LlamaConfig {
    /// A plain Llama of `layers` layers with the given attention shape and a hidden size of `heads * head_dim`: the
    /// configuration of attention benchmarks and of tests that need only attention, RoPE and the cache.
    pub(crate) fn attention_shape(
        layers: usize,
        heads: usize,
        kv_heads: usize,
        head_dim: usize,
        context_length: usize,
    ) -> LlamaConfig {
        LlamaConfig {
            architecture: "llama".into(),
            arch: Architecture::Llama,
            hidden_size: heads * head_dim,
            intermediate_size: heads * head_dim,
            layers,
            heads,
            kv_heads,
            head_dim,
            vocab_size: 1,
            context_length,
            rope_theta: 10_000.0,
            rope_scaling: RopeScaling::None,
            rms_norm_eps: 1e-5,
            tied_embeddings: false,
            rope_style: RopeStyle::Half,
            activation: GatedActivation::Silu,
            attention_scale: 1.0 / (head_dim as f32).sqrt(),
            embedding_scale: None,
            sliding_window: None,
        }
    }

    pub fn q_dim(&self) -> usize {
        self.heads * self.head_dim
    }

    pub fn kv_dim(&self) -> usize {
        self.kv_heads * self.head_dim
    }

    /// The positions a query of layer `layer` sees, `None` for all (a global layer).
    pub fn layer_window(&self, layer: usize) -> Option<usize> {
        let w = self.sliding_window.as_ref()?;
        w.local_layers
            .get(layer)
            .copied()
            .unwrap_or(false)
            .then_some(w.size)
    }

    /// The rotary inverse frequencies of layer `layer`: a local layer with its own RoPE base takes that base
    /// without scaling (llama.cpp and transformers' Gemma 3), every other layer [`LlamaConfig::rope_inv_freqs`].
    pub fn layer_rope_inv_freqs(&self, layer: usize, context: usize) -> Vec<f64> {
        match self.local_rope_theta(layer) {
            Some(theta) => inv_freqs(self.head_dim, theta, &RopeScaling::None, context),
            None => self.rope_inv_freqs_for(context),
        }
    }

    /// The RoPE base of layer `layer` if it is a local layer with a base of its own.
    fn local_rope_theta(&self, layer: usize) -> Option<f32> {
        let theta = self.sliding_window.as_ref()?.local_rope_theta?;
        self.layer_window(layer).map(|_| theta)
    }

    /// Whether a session of `context` positions takes LongRoPE's long factors (the key of cached tables).
    pub fn uses_long_rope(&self, context: usize) -> bool {
        matches!(&self.rope_scaling, RopeScaling::LongRope { original_context, .. } if context > *original_context)
    }

    /// The factor LongRoPE multiplies cos and sin by (1 otherwise).
    pub fn rope_attention_factor(&self) -> f64 {
        match &self.rope_scaling {
            RopeScaling::LongRope {
                attention_factor, ..
            } => *attention_factor,
            _ => 1.0,
        }
    }

    /// Whether layer `layer`'s rotary frequencies are those of the local layers (the key of cached tables).
    pub fn layer_has_local_rope(&self, layer: usize) -> bool {
        self.local_rope_theta(layer).is_some()
    }

    /// The rotary inverse frequencies `θ^(-2i/head_dim)` of each pair `i`, scaled as the configuration says,
    /// in f64 (LongRoPE: for a context of at most its original length).
    pub fn rope_inv_freqs(&self) -> Vec<f64> {
        self.rope_inv_freqs_for(0)
    }

    /// [`LlamaConfig::rope_inv_freqs`] for a session whose context holds `context` positions: LongRoPE takes its
    /// long factors past its original context (llama.cpp's rule, by the context size).
    pub fn rope_inv_freqs_for(&self, context: usize) -> Vec<f64> {
        inv_freqs(self.head_dim, self.rope_theta, &self.rope_scaling, context)
    }

    /// Rejects shapes the forward pass cannot run, before any tensor is read.
    fn validate(self) -> Result<Self> {
        let positive = [
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_hidden_layers", self.layers),
            ("num_attention_heads", self.heads),
            ("num_key_value_heads", self.kv_heads),
            ("head_dim", self.head_dim),
            ("vocab_size", self.vocab_size),
            ("context_length", self.context_length),
        ];
        for (name, value) in positive {
            if value == 0 || value > (1 << 24) {
                return Err(EngineError::InvalidConfig(format!(
                    "{name} = {value} is out of range"
                )));
            }
        }
        if !self.heads.is_multiple_of(self.kv_heads) {
            return Err(EngineError::InvalidConfig(format!(
                "num_attention_heads ({}) must be a multiple of num_key_value_heads ({})",
                self.heads, self.kv_heads
            )));
        }
        if !self.head_dim.is_multiple_of(2) {
            return Err(EngineError::InvalidConfig(format!(
                "head_dim {} must be even for RoPE",
                self.head_dim
            )));
        }
        if !(self.rope_theta.is_finite() && self.rope_theta > 0.0) {
            return Err(EngineError::InvalidConfig(format!(
                "rope_theta {} must be positive",
                self.rope_theta
            )));
        }
        let positive_factor = |v: f64| v.is_finite() && v > 0.0;
        let scaling_ok = match &self.rope_scaling {
            RopeScaling::None => true,
            RopeScaling::Linear { factor } => positive_factor(*factor),
            RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_context,
            } => {
                [
                    *factor,
                    *low_freq_factor,
                    *high_freq_factor,
                    *original_context,
                ]
                .into_iter()
                .all(positive_factor)
                    && high_freq_factor > low_freq_factor
            }
            RopeScaling::FreqFactors(f) => {
                f.len() == self.head_dim / 2 && f.iter().all(|&v| positive_factor(v as f64))
            }
            RopeScaling::LongRope {
                short,
                long,
                original_context,
                attention_factor,
            } => {
                [short, long].iter().all(|f| {
                    f.len() == self.head_dim / 2 && f.iter().all(|&v| positive_factor(v as f64))
                }) && *original_context > 0
                    && positive_factor(*attention_factor)
            }
        };
        if !scaling_ok {
            return Err(EngineError::InvalidConfig(format!(
                "RoPE scaling {} is invalid for head_dim {} (factors must be positive and finite, one per pair)",
                self.rope_scaling.describe(),
                self.head_dim
            )));
        }
        if !(self.attention_scale.is_finite() && self.attention_scale > 0.0) {
            return Err(EngineError::InvalidConfig(format!(
                "the attention scale {} must be positive",
                self.attention_scale
            )));
        }
        if let Some(w) = &self.sliding_window {
            let theta_ok = w.local_rope_theta.is_none_or(|t| t.is_finite() && t > 0.0);
            if w.size == 0 || w.local_layers.len() != self.layers || !theta_ok {
                return Err(EngineError::InvalidConfig(format!(
                    "sliding window of {} positions over {} layer types (local RoPE base {:?}) does not fit {} layers",
                    w.size,
                    w.local_layers.len(),
                    w.local_rope_theta,
                    self.layers
                )));
            }
        }
        if !(self.rms_norm_eps.is_finite() && self.rms_norm_eps >= 0.0) {
            return Err(EngineError::InvalidConfig(format!(
                "rms_norm_eps {} is invalid",
                self.rms_norm_eps
            )));
        }
        Ok(self)
    }

    /// Reads a Hugging Face `config.json`.
    pub fn from_hf_config(path: &Path) -> Result<Self> {
        #[derive(Deserialize)]
        struct HfConfig {
            architectures: Option<Vec<String>>,
            model_type: Option<String>,
            hidden_size: usize,
            intermediate_size: usize,
            num_hidden_layers: usize,
            num_attention_heads: usize,
            num_key_value_heads: Option<usize>,
            head_dim: Option<usize>,
            vocab_size: usize,
            max_position_embeddings: Option<usize>,
            original_max_position_embeddings: Option<usize>,
            rope_theta: Option<f32>,
            rms_norm_eps: Option<f32>,
            tie_word_embeddings: Option<bool>,
            hidden_act: Option<String>,
            hidden_activation: Option<String>,
            query_pre_attn_scalar: Option<f64>,
            rope_local_base_freq: Option<f32>,
            sliding_window_pattern: Option<usize>,
            final_logit_softcapping: Option<f64>,
            attn_logit_softcapping: Option<f64>,
            rope_scaling: Option<Value>,
            rope_parameters: Option<Value>,
            partial_rotary_factor: Option<f64>,
            attention_bias: Option<bool>,
            mlp_bias: Option<bool>,
            sliding_window: Option<Value>,
            use_sliding_window: Option<bool>,
            max_window_layers: Option<usize>,
            layer_types: Option<Vec<String>>,
        }
        let text = std::fs::read_to_string(path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                EngineError::ModelNotFound(path.display().to_string())
            } else {
                EngineError::InvalidConfig(format!("cannot read {}: {e}", path.display()))
            }
        })?;
        let raw: HfConfig = serde_json::from_str(&text)
            .map_err(|e| EngineError::InvalidConfig(format!("{}: {e}", path.display())))?;
        let classes = raw.architectures.clone().unwrap_or_default();
        let architecture = classes
            .first()
            .cloned()
            .or(raw.model_type.clone())
            .unwrap_or_else(|| "unknown".to_string());
        let arch = Architecture::from_hf(raw.model_type.as_deref(), &classes)
            .ok_or_else(|| EngineError::UnsupportedArchitecture(architecture.clone()))?;
        let (act_key, act) = match (&raw.hidden_activation, &raw.hidden_act) {
            (Some(a), _) => ("hidden_activation", a.as_str()),
            (None, Some(a)) => ("hidden_act", a.as_str()),
            (None, None) => ("hidden_act", "silu"),
        };
        let activation = match act {
            "silu" | "swish" => GatedActivation::Silu,
            "gelu_pytorch_tanh" | "gelu_tanh" => GatedActivation::GeluTanh,
            other => {
                return Err(unsupported(
                    act_key,
                    format!("{other:?}"),
                    "implemented: silu, gelu_pytorch_tanh",
                ))
            }
        };
        for (key, cap) in [
            ("final_logit_softcapping", raw.final_logit_softcapping),
            ("attn_logit_softcapping", raw.attn_logit_softcapping),
        ] {
            if let Some(cap) = cap {
                return Err(unsupported(
                    key,
                    cap,
                    "logit soft-capping is not implemented",
                ));
            }
        }
        if let Some(f) = raw.partial_rotary_factor.filter(|f| *f != 1.0) {
            return Err(unsupported(
                "partial_rotary_factor",
                f,
                "RoPE over part of each head is not implemented",
            ));
        }
        if raw.attention_bias == Some(true) && arch != Architecture::Qwen2 {
            return Err(unsupported(
                "attention_bias",
                true,
                "biases on the attention projections are implemented for qwen2's q/k/v only",
            ));
        }
        if raw.mlp_bias == Some(true) {
            return Err(unsupported(
                "mlp_bias",
                true,
                "MLP biases are not implemented",
            ));
        }
        let layers = raw.num_hidden_layers;
        let sliding_window = raw.sliding_window.as_ref().filter(|w| !w.is_null());
        let window_size = |w: &Value| -> Result<usize> {
            w.as_u64()
                .filter(|&w| w > 0)
                .map(|w| w as usize)
                .ok_or_else(|| {
                    EngineError::InvalidConfig(format!(
                        "sliding_window must be a positive integer, got {w}"
                    ))
                })
        };
        let mut rope_parameters = raw.rope_parameters.as_ref();
        let mut local_rope_theta = None;
        let window = if arch == Architecture::Gemma3 {
            // transformers 5 keeps one set of RoPE parameters per layer type.
            if let Some(by_type) = rope_parameters.filter(|p| p.get("full_attention").is_some()) {
                local_rope_theta = by_type
                    .get("sliding_attention")
                    .and_then(|p| p.get("rope_theta"))
                    .and_then(Value::as_f64)
                    .map(|t| t as f32);
                rope_parameters = by_type.get("full_attention");
            }
            let local_rope_theta = local_rope_theta
                .or(raw.rope_local_base_freq)
                .unwrap_or(10_000.0);
            match sliding_window {
                None => None,
                Some(w) => {
                    let size = window_size(w)?;
                    let local_layers = match &raw.layer_types {
                        Some(types) => types
                            .iter()
                            .map(|t| match t.as_str() {
                                "sliding_attention" => Ok(true),
                                "full_attention" => Ok(false),
                                other => Err(unsupported(
                                    "layer_types",
                                    format!("[.. {other:?} ..]"),
                                    "implemented: sliding_attention, full_attention",
                                )),
                            })
                            .collect::<Result<Vec<bool>>>()?,
                        None => {
                            let n = raw.sliding_window_pattern.unwrap_or(6);
                            SlidingWindow::every_nth_global(size, layers, n).local_layers
                        }
                    };
                    Some(SlidingWindow {
                        size,
                        local_layers,
                        local_rope_theta: Some(local_rope_theta),
                    })
                }
            }
        } else if arch == Architecture::Phi3 {
            // transformers' Phi3 slides every layer when a window is set (Phi-3-mini: 2047).
            match sliding_window {
                None => None,
                Some(w) => Some(SlidingWindow {
                    size: window_size(w)?,
                    local_layers: vec![true; layers],
                    local_rope_theta: None,
                }),
            }
        } else {
            if let Some(types) = &raw.layer_types {
                if let Some(t) = types.iter().find(|t| *t != "full_attention") {
                    return Err(unsupported(
                        "layer_types",
                        format!("[.. {t:?} ..]"),
                        "sliding-window attention layers are implemented for gemma3 only",
                    ));
                }
            } else if let Some(window) = sliding_window {
                // Transformers' rule: mistral slides whenever a window is set; qwen2/qwen3 when
                // use_sliding_window is set, from layer max_window_layers on.
                let slides = match raw.model_type.as_deref() {
                    Some("mistral") => true,
                    _ => {
                        raw.use_sliding_window == Some(true)
                            && raw.max_window_layers.is_none_or(|m| m < layers)
                    }
                };
                if slides {
                    return Err(unsupported(
                        "sliding_window",
                        window,
                        "sliding-window attention is implemented for gemma3 only",
                    ));
                }
            }
            None
        };
        let (rope_theta, rope_scaling) = hf_rope(
            rope_parameters,
            raw.rope_scaling.as_ref(),
            raw.rope_theta,
            (
                raw.original_max_position_embeddings,
                raw.max_position_embeddings.unwrap_or(2048),
            ),
        )?;
        let head_dim = raw.head_dim.unwrap_or(
            raw.hidden_size
                .checked_div(raw.num_attention_heads)
                .unwrap_or(0),
        );
        let attention_scale = match raw.query_pre_attn_scalar {
            Some(s) if arch == Architecture::Gemma3 => (1.0 / s.sqrt()) as f32,
            _ => 1.0 / (head_dim as f32).sqrt(),
        };
        let heads = raw.num_attention_heads;
        Self {
            architecture,
            arch,
            hidden_size: raw.hidden_size,
            intermediate_size: raw.intermediate_size,
            layers,
            heads,
            kv_heads: raw.num_key_value_heads.unwrap_or(heads),
            head_dim,
            vocab_size: raw.vocab_size,
            context_length: raw.max_position_embeddings.unwrap_or(2048),
            rope_theta,
            rope_scaling,
            rms_norm_eps: raw.rms_norm_eps.unwrap_or(1e-6),
            tied_embeddings: raw
                .tie_word_embeddings
                .unwrap_or(arch == Architecture::Gemma3),
            rope_style: RopeStyle::Half,
            activation,
            attention_scale,
            embedding_scale: arch
                .scales_embeddings()
                .then(|| (raw.hidden_size as f32).sqrt()),
            sliding_window: window,
        }
        .validate()
    }

    /// Reads `<arch>.*` GGUF metadata and the `rope_freqs.weight` tensor. `tied_embeddings` is decided by the
    /// caller from the tensor table.
    pub fn from_gguf(gguf: &GgufFile) -> Result<Self> {
        let name = gguf
            .get_str("general.architecture")
            .ok_or_else(|| EngineError::InvalidConfig("general.architecture is missing".into()))?
            .to_string();
        let arch = Architecture::from_gguf(&name)
            .ok_or_else(|| EngineError::UnsupportedArchitecture(name.clone()))?;
        let key = |k: &str| format!("{name}.{k}");
        let int = |k: &str| -> Result<usize> {
            gguf.get_u64(&key(k)).map(|v| v as usize).ok_or_else(|| {
                EngineError::InvalidConfig(format!("GGUF metadata {} is missing", key(k)))
            })
        };
        let hidden_size = int("embedding_length")?;
        let heads = int("attention.head_count")?;
        let head_dim = match gguf.get_u64(&key("attention.key_length")) {
            Some(d) => d as usize,
            None if heads > 0 => hidden_size / heads,
            None => 0,
        };
        if let Some(v) = gguf.get_u64(&key("attention.value_length")) {
            if v as usize != head_dim {
                return Err(unsupported(
                    &key("attention.value_length"),
                    v,
                    "values and keys of different head sizes are not implemented",
                ));
            }
        }
        if let Some(d) = gguf.get_u64(&key("rope.dimension_count")) {
            if d as usize != head_dim {
                return Err(unsupported(
                    &key("rope.dimension_count"),
                    d,
                    "RoPE over part of each head is not implemented",
                ));
            }
        }
        let layers = int("block_count")?;
        let sliding_window = match gguf.get_u64(&key("attention.sliding_window")) {
            Some(0) | None => None,
            Some(size) if arch == Architecture::Gemma3 => {
                let pattern_key = key("attention.sliding_window_pattern");
                let mut window = match gguf.get(&pattern_key) {
                    None => SlidingWindow::every_nth_global(size as usize, layers, 6),
                    Some(v) => match (v.as_u64(), bool_array(v)) {
                        (Some(n), _) => {
                            SlidingWindow::every_nth_global(size as usize, layers, n as usize)
                        }
                        (None, Some(flags)) => SlidingWindow {
                            size: size as usize,
                            local_layers: flags,
                            local_rope_theta: None,
                        },
                        _ => {
                            return Err(EngineError::InvalidConfig(format!(
                                "{pattern_key} is neither a number nor an array of booleans"
                            )))
                        }
                    },
                };
                window.local_rope_theta =
                    Some(gguf.get_f64(&key("rope.freq_base_swa")).unwrap_or(10_000.0) as f32);
                Some(window)
            }
            // llama.cpp disables Phi-3's window (its converter writes it for every Phi-3): so do we, for GGUF.
            Some(_) if arch == Architecture::Phi3 => None,
            Some(w) => {
                return Err(unsupported(
                    &key("attention.sliding_window"),
                    w,
                    "sliding-window attention is implemented for gemma3 only",
                ))
            }
        };
        let longrope = match (
            gguf.tensor_info(PHI3_SHORT_FACTORS_TENSOR),
            gguf.tensor_info(PHI3_LONG_FACTORS_TENSOR),
        ) {
            (None, None) => None,
            (Some(_), Some(_)) => {
                let original_key = key("rope.scaling.original_context_length");
                let original = gguf.get_u64(&original_key).ok_or_else(|| {
                    EngineError::InvalidConfig(format!(
                        "{original_key} is missing beside {PHI3_LONG_FACTORS_TENSOR}"
                    ))
                })? as usize;
                Some(RopeScaling::longrope(
                    gguf.tensor(PHI3_SHORT_FACTORS_TENSOR)?.to_f32()?,
                    gguf.tensor(PHI3_LONG_FACTORS_TENSOR)?.to_f32()?,
                    original,
                    int("context_length")?,
                    gguf.get_f64(&key("rope.scaling.attn_factor")),
                ))
            }
            _ => {
                return Err(EngineError::InvalidConfig(format!(
                    "{PHI3_SHORT_FACTORS_TENSOR} and {PHI3_LONG_FACTORS_TENSOR} come together"
                )))
            }
        };
        if let Some(cap) = gguf.get_f64(&key("final_logit_softcapping")) {
            return Err(unsupported(
                &key("final_logit_softcapping"),
                cap,
                "logit soft-capping is not implemented",
            ));
        }
        // llama.cpp: Gemma 3 27B (62 layers) scales by 1/√(hidden/heads), the others by 1/√head_dim.
        let attention_scale = match arch {
            Architecture::Gemma3 if layers == 62 && heads > 0 => {
                1.0 / ((hidden_size / heads) as f32).sqrt()
            }
            _ if head_dim > 0 => 1.0 / (head_dim as f32).sqrt(),
            _ => 0.0,
        };
        let vocab_size = match gguf.get_u64(&key("vocab_size")) {
            Some(v) => v as usize,
            None => gguf
                .get_str_array("tokenizer.ggml.tokens")
                .map(|t| t.len())
                .unwrap_or(0),
        };
        let scaling_type = gguf.get_str(&key("rope.scaling.type"));
        let linear_factor = gguf
            .get_f64(&key("rope.scaling.factor"))
            .or_else(|| gguf.get_f64(&key("rope.scale_linear")));
        let rope_scaling = match longrope {
            Some(longrope) => longrope,
            None => match (scaling_type, linear_factor) {
                (Some("linear"), Some(factor)) | (None, Some(factor)) if factor != 1.0 => {
                    RopeScaling::Linear { factor }
                }
                (None | Some("none") | Some("linear"), _) => {
                    match gguf.tensor_info(ROPE_FREQS_TENSOR) {
                        Some(_) => {
                            RopeScaling::FreqFactors(gguf.tensor(ROPE_FREQS_TENSOR)?.to_f32()?)
                        }
                        None => RopeScaling::None,
                    }
                }
                (Some(other), _) => {
                    return Err(unsupported(
                        &key("rope.scaling.type"),
                        format!("{other:?}"),
                        "implemented: none, linear, and llama3's rope_freqs",
                    ))
                }
            },
        };
        Self {
            hidden_size,
            intermediate_size: int("feed_forward_length")?,
            layers,
            heads,
            kv_heads: gguf
                .get_u64(&key("attention.head_count_kv"))
                .map(|v| v as usize)
                .unwrap_or(heads),
            head_dim,
            vocab_size,
            context_length: int("context_length")?,
            rope_theta: gguf.get_f64(&key("rope.freq_base")).unwrap_or(10_000.0) as f32,
            rope_scaling,
            rms_norm_eps: gguf
                .get_f64(&key("attention.layer_norm_rms_epsilon"))
                .unwrap_or(1e-5) as f32,
            tied_embeddings: false,
            rope_style: match gguf.get_str(seedinfer_formats::container::ROPE_STYLE_KEY) {
                None => arch.gguf_rope_style(),
                Some("interleaved") => RopeStyle::Interleaved,
                Some("half") => RopeStyle::Half,
                Some(other) => {
                    return Err(EngineError::InvalidConfig(format!(
                        "{} = {other:?} is neither interleaved nor half",
                        seedinfer_formats::container::ROPE_STYLE_KEY
                    )))
                }
            },
            activation: match arch {
                Architecture::Gemma3 => GatedActivation::GeluTanh,
                _ => GatedActivation::Silu,
            },
            attention_scale,
            embedding_scale: arch
                .scales_embeddings()
                .then(|| (hidden_size as f32).sqrt()),
            sliding_window,
            architecture: name,
            arch,
        }
        .validate()
    }
}
