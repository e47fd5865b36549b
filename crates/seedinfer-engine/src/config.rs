//! Llama-family hyper-parameters, read from a Hugging Face `config.json` or GGUF metadata.

use crate::error::{EngineError, Result};
use seedinfer_formats::GgufFile;
use serde::Deserialize;
use std::path::Path;

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

#[derive(Clone, Debug)]
pub struct LlamaConfig {
    pub architecture: String,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub vocab_size: usize,
    pub context_length: usize,
    pub rope_theta: f32,
    pub rms_norm_eps: f32,
    pub tied_embeddings: bool,
    pub rope_style: RopeStyle,
}

impl LlamaConfig {
    pub fn q_dim(&self) -> usize {
        self.heads * self.head_dim
    }

    pub fn kv_dim(&self) -> usize {
        self.kv_heads * self.head_dim
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
            rope_theta: Option<f32>,
            rms_norm_eps: Option<f32>,
            tie_word_embeddings: Option<bool>,
            hidden_act: Option<String>,
            rope_scaling: Option<serde_json::Value>,
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
        let architecture = raw
            .architectures
            .as_ref()
            .and_then(|a| a.first().cloned())
            .or(raw.model_type.clone())
            .unwrap_or_else(|| "unknown".to_string());
        let is_llama = raw.model_type.as_deref() == Some("llama")
            || raw
                .architectures
                .iter()
                .flatten()
                .any(|a| a == "LlamaForCausalLM");
        if !is_llama {
            return Err(EngineError::UnsupportedArchitecture(architecture));
        }
        if let Some(act) = raw.hidden_act.as_deref() {
            if act != "silu" {
                return Err(EngineError::InvalidConfig(format!(
                    "hidden_act '{act}' is not supported (silu only)"
                )));
            }
        }
        if let Some(scaling) = raw.rope_scaling.as_ref().filter(|v| !v.is_null()) {
            return Err(EngineError::InvalidConfig(format!(
                "rope_scaling {scaling} is not supported yet"
            )));
        }
        let heads = raw.num_attention_heads;
        Self {
            architecture,
            hidden_size: raw.hidden_size,
            intermediate_size: raw.intermediate_size,
            layers: raw.num_hidden_layers,
            heads,
            kv_heads: raw.num_key_value_heads.unwrap_or(heads),
            head_dim: raw
                .head_dim
                .unwrap_or(raw.hidden_size.checked_div(heads).unwrap_or(0)),
            vocab_size: raw.vocab_size,
            context_length: raw.max_position_embeddings.unwrap_or(2048),
            rope_theta: raw.rope_theta.unwrap_or(10_000.0),
            rms_norm_eps: raw.rms_norm_eps.unwrap_or(1e-6),
            tied_embeddings: raw.tie_word_embeddings.unwrap_or(false),
            rope_style: RopeStyle::Half,
        }
        .validate()
    }

    /// Reads `llama.*` GGUF metadata. `tied_embeddings` is decided by the caller from the tensor table.
    pub fn from_gguf(gguf: &GgufFile) -> Result<Self> {
        let arch = gguf
            .get_str("general.architecture")
            .ok_or_else(|| EngineError::InvalidConfig("general.architecture is missing".into()))?
            .to_string();
        if arch != "llama" {
            return Err(EngineError::UnsupportedArchitecture(arch));
        }
        let int = |key: &str| -> Result<usize> {
            gguf.get_u64(&format!("{arch}.{key}"))
                .map(|v| v as usize)
                .ok_or_else(|| {
                    EngineError::InvalidConfig(format!("GGUF metadata {arch}.{key} is missing"))
                })
        };
        let hidden_size = int("embedding_length")?;
        let heads = int("attention.head_count")?;
        let head_dim = match gguf.get_u64(&format!("{arch}.rope.dimension_count")) {
            Some(d) => d as usize,
            None if heads > 0 => hidden_size / heads,
            None => 0,
        };
        let vocab_size = match gguf.get_u64(&format!("{arch}.vocab_size")) {
            Some(v) => v as usize,
            None => gguf
                .get_str_array("tokenizer.ggml.tokens")
                .map(|t| t.len())
                .unwrap_or(0),
        };
        Self {
            hidden_size,
            intermediate_size: int("feed_forward_length")?,
            layers: int("block_count")?,
            heads,
            kv_heads: gguf
                .get_u64(&format!("{arch}.attention.head_count_kv"))
                .map(|v| v as usize)
                .unwrap_or(heads),
            head_dim,
            vocab_size,
            context_length: int("context_length")?,
            rope_theta: gguf
                .get_f64(&format!("{arch}.rope.freq_base"))
                .unwrap_or(10_000.0) as f32,
            rms_norm_eps: gguf
                .get_f64(&format!("{arch}.attention.layer_norm_rms_epsilon"))
                .unwrap_or(1e-5) as f32,
            tied_embeddings: false,
            rope_style: match gguf.get_str(seedinfer_formats::container::ROPE_STYLE_KEY) {
                None | Some("interleaved") => RopeStyle::Interleaved,
                Some("half") => RopeStyle::Half,
                Some(other) => {
                    return Err(EngineError::InvalidConfig(format!(
                        "{} = {other:?} is neither interleaved nor half",
                        seedinfer_formats::container::ROPE_STYLE_KEY
                    )))
                }
            },
            architecture: arch,
        }
        .validate()
    }
}
