//! A loaded model: configuration, weights, tokenizer and the thread pool its matrix products run on.

use crate::config::LlamaConfig;
use crate::error::{EngineError, Result};
use crate::weights::{LlamaWeights, TensorSource, WeightFormat};
use seedinfer_formats::{GgufFile, SafetensorsDir};
use seedinfer_tokenizer::Tokenizer;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    /// Worker threads; `None` uses the machine's available parallelism.
    pub threads: Option<usize>,
    /// Convert every weight matrix to this format at load; `None` keeps the file's formats.
    pub weights: Option<WeightFormat>,
}

#[derive(Clone, Debug)]
pub struct ModelInfo {
    pub architecture: String,
    pub path: PathBuf,
    pub file_format: &'static str,
    pub parameter_count: usize,
    pub file_tensor_formats: BTreeMap<String, usize>,
    pub compute_format: String,
    /// Matrices that could not take the requested weight format, and why.
    pub weight_fallbacks: Vec<String>,
    /// Each compute format with the instruction set its kernel uses.
    pub kernel_isa: String,
    pub file_bytes: u64,
    pub weight_bytes: usize,
    pub kv_bytes_per_token: usize,
    pub threads: usize,
}

pub struct Model {
    pub config: LlamaConfig,
    pub weights: LlamaWeights,
    pub tokenizer: Tokenizer,
    pub info: ModelInfo,
    pool: rayon::ThreadPool,
}

fn is_gguf_file(path: &Path) -> bool {
    use std::io::Read;
    let mut magic = [0u8; 4];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok()
        && &magic == b"GGUF"
}

impl Model {
    /// Loads a `.gguf` file or a Hugging Face directory (config.json, safetensors, tokenizer.json).
    pub fn load(path: &Path, options: &LoadOptions) -> Result<Self> {
        let threads = match options.threads {
            Some(0) => {
                return Err(EngineError::InvalidOption(
                    "threads must be at least 1".into(),
                ))
            }
            Some(n) if n > 1024 => {
                return Err(EngineError::InvalidOption(format!(
                    "threads = {n} is too many"
                )))
            }
            Some(n) => n,
            // Physical cores: a second hyper-thread on the same core shares its vector units and memory port, so
            // it adds synchronisation without adding throughput to these kernels.
            None => num_cpus::get_physical().max(1),
        };
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("seedinfer-{i}"))
            .build()
            .map_err(|e| EngineError::Internal(format!("cannot start {threads} threads: {e}")))?;
        if !path.exists() {
            return Err(EngineError::ModelNotFound(path.display().to_string()));
        }
        let (config, weights, tokenizer, file_format, file_bytes) = if path.is_dir() {
            let mut config = LlamaConfig::from_hf_config(&path.join("config.json"))?;
            let tensors = SafetensorsDir::open(path)?;
            let tokenizer = Tokenizer::from_hf_dir(path)?;
            let weights = pool.install(|| {
                LlamaWeights::load(
                    TensorSource::Safetensors(&tensors),
                    &mut config,
                    options.weights,
                )
            })?;
            (
                config,
                weights,
                tokenizer,
                "safetensors",
                tensors.file_bytes(),
            )
        } else if path.extension().is_some_and(|e| e == "gguf") || is_gguf_file(path) {
            let gguf = GgufFile::open(path)?;
            let mut config = LlamaConfig::from_gguf(&gguf)?;
            let tokenizer = Tokenizer::from_gguf(&gguf)?;
            let weights = pool.install(|| {
                LlamaWeights::load(TensorSource::Gguf(&gguf), &mut config, options.weights)
            })?;
            (config, weights, tokenizer, "gguf", gguf.file_bytes())
        } else {
            return Err(EngineError::Format(
                seedinfer_formats::FormatError::BadMagic {
                    file: path.display().to_string(),
                    found: std::fs::read(path)
                        .map(|b| b.iter().take(4).copied().collect())
                        .unwrap_or_default(),
                },
            ));
        };
        if tokenizer.vocab_size() > config.vocab_size {
            return Err(EngineError::InvalidConfig(format!(
                "tokenizer has {} tokens but the model's vocabulary is {}",
                tokenizer.vocab_size(),
                config.vocab_size
            )));
        }
        let info = ModelInfo {
            architecture: config.architecture.clone(),
            path: path.to_path_buf(),
            file_format,
            parameter_count: weights.parameter_count,
            file_tensor_formats: weights.file_tensor_formats.clone(),
            compute_format: weights.compute_formats(),
            weight_fallbacks: weights.fallbacks.clone(),
            kernel_isa: weights.kernel_isas(),
            file_bytes,
            weight_bytes: weights.resident_bytes(),
            kv_bytes_per_token: 2 * config.layers * config.kv_dim() * std::mem::size_of::<f32>(),
            threads,
        };
        Ok(Self {
            config,
            weights,
            tokenizer,
            info,
            pool,
        })
    }

    /// Runs `work` on this model's thread pool.
    pub fn install<R: Send>(&self, work: impl FnOnce() -> R + Send) -> R {
        self.pool.install(work)
    }
}
