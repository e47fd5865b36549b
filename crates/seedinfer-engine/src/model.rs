//! A loaded model: configuration, weights, tokenizer and the thread pool its matrix products run on.

use crate::config::LlamaConfig;
use crate::error::{EngineError, Result};
use crate::kv_pool::{BlockLayout, KvCacheOptions, KvPool};
use crate::ops_llamacpp::GgmlOps;
use crate::ops_seedinfer::SeedinferOps;
use crate::weights::{LlamaWeights, TensorSource, WeightFormat};
use seedinfer_formats::{GgufFile, SafetensorsDir};
use seedinfer_tokenizer::Tokenizer;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The most bytes of logits a chunk of evaluated positions keeps at once (see [`Model::logits_chunk`]).
pub const LOGITS_CHUNK_BYTES: usize = 64 << 20;

#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    /// Worker threads; `None` uses the machine's available parallelism.
    pub threads: Option<usize>,
    /// Convert every weight matrix to this format at load; `None` keeps the file's formats.
    pub weights: Option<WeightFormat>,
    /// The KV-cache pool: dtype, block size, byte budget.
    pub kv_cache: KvCacheOptions,
    /// Whose arithmetic the forward pass follows.
    pub numerics: Numerics,
    /// Most tokens in one batched pass of concurrent sessions (decode steps plus prompt chunks); `None` uses
    /// [`crate::batcher::DEFAULT_MAX_BATCH_TOKENS`].
    pub max_batch_tokens: Option<usize>,
}

/// Whose arithmetic the forward pass follows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Numerics {
    /// seedinfer's kernels: the fastest order of operations.
    #[default]
    Seedinfer,
    /// llama.cpp's order of operations (`crate::ops_llamacpp`), for checking against llama.cpp: the same
    /// logits bit for bit on Q4_1 GGUF models, several times slower.
    LlamaCpp,
}

impl Numerics {
    pub fn name(self) -> &'static str {
        match self {
            Self::Seedinfer => "seedinfer",
            Self::LlamaCpp => "llamacpp",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "seedinfer" => Some(Self::Seedinfer),
            "llamacpp" => Some(Self::LlamaCpp),
            _ => None,
        }
    }
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
    /// Identifies the model a saved session belongs to: architecture, shapes and a sample of the weights.
    pub fingerprint: [u8; 32],
    pub kv_pool: KvPool,
    pub numerics: Numerics,
    /// Joins the decode steps of sessions generating at the same time into one forward pass.
    pub batcher: crate::batcher::Batcher,
    /// Compiles the response formats of constrained generations (`crate::constraint`).
    pub grammars: crate::constraint::GrammarCompiler,
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

/// Checks the `kvCache` options and builds the pool.
fn kv_pool(config: &LlamaConfig, options: &KvCacheOptions) -> Result<KvPool> {
    let block_size = options.block_size;
    if !(8..=1024).contains(&block_size) || !block_size.is_multiple_of(8) {
        return Err(EngineError::InvalidOption(format!(
            "kvCache.blockSize must be a multiple of 8 in [8, 1024], got {block_size}"
        )));
    }
    let window = config
        .sliding_window
        .as_ref()
        .map(|w| (w.size, w.local_layers.as_slice()));
    let layout = BlockLayout::new(
        config.layers,
        config.kv_heads,
        config.head_dim,
        block_size,
        options.dtype,
        window,
    );
    const GIB: usize = 1 << 30;
    let budget = options
        .budget_bytes
        .unwrap_or_else(|| GIB.max(2 * config.context_length * layout.bytes_per_token()));
    if budget < layout.block_bytes() {
        return Err(EngineError::InvalidOption(format!(
            "kvCache.budgetBytes = {budget} is smaller than one block ({} bytes)",
            layout.block_bytes()
        )));
    }
    Ok(KvPool::new(layout, budget, options.prefix_caching))
}

/// See [`Model::fingerprint`].
fn fingerprint(config: &LlamaConfig, weights: &LlamaWeights) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    let c = config;
    h.update(c.architecture.as_bytes());
    for n in [
        c.hidden_size,
        c.intermediate_size,
        c.layers,
        c.heads,
        c.kv_heads,
        c.head_dim,
        c.vocab_size,
    ] {
        h.update((n as u64).to_le_bytes());
    }
    h.update(c.rope_theta.to_le_bytes());
    h.update(c.rope_style.name().as_bytes());
    if c.rope_scaling != crate::config::RopeScaling::None {
        // Only when set, so that fingerprints of models without scaling (and their saved sessions) stay as they were.
        h.update(format!("{:?}", c.rope_scaling).as_bytes());
    }
    if c.arch == crate::config::Architecture::Gemma3 {
        // Only for it, so that fingerprints of the earlier architectures (and their saved sessions) stay as they were.
        let extra = format!(
            "{} {:?} {} {:?} {:?}",
            c.arch.name(),
            c.activation,
            c.attention_scale,
            c.embedding_scale,
            c.sliding_window
        );
        h.update(extra.as_bytes());
    }
    h.update(weights.compute_formats().as_bytes());
    let mut row = vec![0.0f32; c.hidden_size];
    for r in (0..c.vocab_size).step_by((c.vocab_size / 64).max(1)) {
        weights.embed.row_to_f32(r, &mut row);
        h.update(bytemuck::cast_slice(&row));
    }
    h.update(bytemuck::cast_slice(&weights.final_norm));
    for layer in &weights.layers {
        h.update(bytemuck::cast_slice(&layer.attn_norm));
    }
    h.finalize().into()
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
        let kv_pool = kv_pool(&config, &options.kv_cache)?;
        if options.numerics == Numerics::LlamaCpp {
            crate::ops_llamacpp::check_supported(&config, &weights, options.kv_cache.dtype)?;
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
            kv_bytes_per_token: kv_pool.layout().bytes_per_token(),
            threads,
        };
        Ok(Self {
            fingerprint: fingerprint(&config, &weights),
            config,
            weights,
            tokenizer,
            info,
            kv_pool,
            numerics: options.numerics,
            batcher: crate::batcher::Batcher::new(
                options
                    .max_batch_tokens
                    .unwrap_or(crate::batcher::DEFAULT_MAX_BATCH_TOKENS),
            ),
            grammars: Default::default(),
            pool,
        })
    }

    /// Runs `tokens` through the model at positions `cache.len()..` with this model's [`Numerics`] (on the
    /// caller's thread: wrap it in [`Model::install`]). With llama.cpp's, at most `LLAMACPP_BATCH` tokens.
    pub(crate) fn forward<C: crate::kv_cache::KvStore>(
        &self,
        tokens: &[u32],
        cache: &mut C,
        scratch: &mut crate::forward::Scratch,
        logits: &mut Vec<f32>,
        logits_for: crate::forward::LogitsFor,
    ) {
        let forward = match self.numerics {
            Numerics::Seedinfer => crate::forward::forward::<SeedinferOps, C>,
            Numerics::LlamaCpp => crate::forward::forward::<GgmlOps, C>,
        };
        forward(
            &self.config,
            &self.weights,
            tokens,
            cache,
            scratch,
            logits,
            logits_for,
        )
    }

    /// Tokens per forward pass of a prompt: llama.cpp's micro-batch with its arithmetic (a pass of one token takes
    /// other dot products there), else `default`.
    pub(crate) fn prefill_chunk(&self, default: usize) -> usize {
        match self.numerics {
            Numerics::Seedinfer => default,
            Numerics::LlamaCpp => crate::ops_llamacpp::LLAMACPP_BATCH,
        }
    }

    /// The chunk of positions whose logits are all kept (teacher forcing, perplexity): [`Model::prefill_chunk`],
    /// capped so that the chunk's logits stay within [`LOGITS_CHUNK_BYTES`] (Gemma's 262,144-token vocabulary
    /// takes 1 MiB per position: 64 positions, where a 49,152-token one keeps the default).
    pub(crate) fn logits_chunk(&self, default: usize) -> usize {
        let per_position = self.config.vocab_size * std::mem::size_of::<f32>();
        let cap = (LOGITS_CHUNK_BYTES / per_position.max(1)).max(1);
        self.prefill_chunk(default).min(cap)
    }

    /// Runs `work` on this model's thread pool.
    pub fn install<R: Send>(&self, work: impl FnOnce() -> R + Send) -> R {
        self.pool.install(work)
    }
}
