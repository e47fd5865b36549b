//! `NativeModel`: loading (on a worker thread), model facts, tokenizer access, session creation.

use crate::error::{coded, guarded, Coded, CodedTask, Result};
use crate::session::{NativeAbortFlag, NativeSession};
use napi::bindgen_prelude::*;
use napi_derive::napi;
use seedinfer_engine::{
    BoundedCache, KvCacheOptions, KvDtype, LoadOptions, Model, Numerics, Session, SirLlm, Think,
    WeightFormat,
};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

#[napi(object)]
pub struct NativeLoadOptions {
    /// Worker threads; omitted means the number of physical cores.
    pub threads: Option<u32>,
    /// One of `weight_formats()`: convert every weight matrix at load; omitted keeps the file's formats.
    pub weights: Option<String>,
    pub kv_cache: Option<NativeKvCacheOptions>,
    /// `seedinfer` (default) or `llamacpp`: whose order of arithmetic the forward pass follows.
    pub numerics: Option<String>,
    /// Most tokens in one batched pass of concurrent generations (checked in TypeScript: 2 or more).
    pub max_batch_tokens: Option<u32>,
}

/// The model's KV-cache pool.
#[napi(object)]
pub struct NativeKvCacheOptions {
    /// `f32`, `f16` (default) or `int8`.
    pub dtype: Option<String>,
    /// Positions per block, a multiple of 8 in [8, 1024]; default 32.
    pub block_size: Option<u32>,
    /// Byte budget of the pool; default the larger of 1 GiB and two full contexts.
    pub budget_bytes: Option<f64>,
    /// Keep full blocks for reuse by sessions that start with the same tokens; default true.
    pub prefix_caching: Option<bool>,
}

#[napi(object)]
pub struct NativeCacheStats {
    pub dtype: String,
    pub block_size: u32,
    pub block_bytes: f64,
    pub budget_bytes: f64,
    pub used_bytes: f64,
    pub blocks_used: u32,
    pub blocks_free: u32,
    pub blocks_shared: u32,
    pub blocks_cached: u32,
    pub prefix_hit_blocks: f64,
    pub prefix_hit_tokens: f64,
    pub evicted_blocks: f64,
}

fn kv_cache_options(options: Option<NativeKvCacheOptions>) -> Result<KvCacheOptions> {
    let mut out = KvCacheOptions::default();
    let Some(o) = options else { return Ok(out) };
    if let Some(name) = o.dtype.as_deref() {
        out.dtype = KvDtype::parse(name).ok_or_else(|| {
            coded(
                "INVALID_OPTION",
                &format!("kvCache.dtype must be f32, f16 or int8, got '{name}'"),
            )
        })?;
    }
    if let Some(b) = o.block_size {
        out.block_size = b as usize;
    }
    if let Some(b) = o.budget_bytes {
        if !(b.is_finite() && b >= 1.0) {
            return Err(coded(
                "INVALID_OPTION",
                &format!("kvCache.budgetBytes must be a positive number of bytes, got {b}"),
            ));
        }
        out.budget_bytes = Some(b as usize);
    }
    if let Some(p) = o.prefix_caching {
        out.prefix_caching = p;
    }
    Ok(out)
}

#[napi(object)]
pub struct NativeModelInfo {
    pub architecture: String,
    pub path: String,
    pub file_format: String,
    pub parameter_count: f64,
    pub layers: u32,
    pub hidden_size: u32,
    pub intermediate_size: u32,
    pub attention_heads: u32,
    pub kv_heads: u32,
    pub head_dim: u32,
    pub vocab_size: u32,
    pub context_length: u32,
    pub rope_theta: f64,
    pub rope_style: String,
    pub rope_scaling: String,
    /// Sliding-window attention, e.g. `512 positions on 15 of 18 layers`; `None` when every layer is global.
    pub sliding_window: Option<String>,
    pub tied_embeddings: bool,
    pub file_tensor_formats: HashMap<String, u32>,
    pub compute_format: String,
    pub weight_fallbacks: Vec<String>,
    pub file_bytes: f64,
    pub weight_bytes: f64,
    pub kv_bytes_per_token: f64,
    pub threads: u32,
    /// `seedinfer` or `llamacpp`: whose order of arithmetic the forward pass follows.
    pub numerics: String,
    pub bos_token: Option<String>,
    pub eos_token: Option<String>,
    pub chat_template: Option<String>,
    /// Token ids that end a generation: EOS, then end-of-turn tokens such as `<|eot_id|>` and `<|im_end|>`.
    pub end_of_generation_token_ids: Vec<u32>,
    /// Instruction set of the matrix kernels, e.g. `avx512f`.
    pub kernel_isa: String,
}

pub struct LoadModelTask {
    path: PathBuf,
    options: LoadOptions,
}

impl CodedTask for LoadModelTask {
    type Output = Arc<Model>;
    type JsValue = NativeModel;

    fn compute(&mut self) -> Result<Self::Output> {
        guarded(|| Model::load(&self.path, &self.options).map(Arc::new))
    }

    fn resolve(&mut self, model: Self::Output) -> Result<Self::JsValue> {
        Ok(NativeModel { inner: model })
    }
}

pub struct LoadSessionTask {
    model: Arc<Model>,
    path: PathBuf,
    abort: Arc<std::sync::atomic::AtomicBool>,
}

impl CodedTask for LoadSessionTask {
    type Output = Session;
    type JsValue = NativeSession;

    fn compute(&mut self) -> Result<Self::Output> {
        if self.abort.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(coded(
                "ABORTED",
                "loading the session was aborted before it started",
            ));
        }
        guarded(|| Session::load(Arc::clone(&self.model), &self.path))
    }

    fn resolve(&mut self, session: Self::Output) -> Result<Self::JsValue> {
        Ok(NativeSession::from_session(session))
    }
}

/// The storage formats `weights` converts to at load, by option name.
#[napi]
pub fn weight_formats() -> Vec<String> {
    WeightFormat::names()
        .into_iter()
        .map(String::from)
        .collect()
}

/// Loads a model file or directory on a worker thread.
#[napi(ts_return_type = "Promise<NativeModel>")]
pub fn load_model(
    path: String,
    options: NativeLoadOptions,
) -> Result<AsyncTask<Coded<LoadModelTask>>> {
    let weights = match options.weights.as_deref() {
        None => None,
        Some(name) => Some(WeightFormat::parse(name).ok_or_else(|| {
            coded(
                "INVALID_OPTION",
                &format!(
                    "option weights must be one of {}, got {name:?}",
                    WeightFormat::names().join(", ")
                ),
            )
        })?),
    };
    let numerics = match options.numerics.as_deref() {
        None => Numerics::default(),
        Some(name) => Numerics::parse(name).ok_or_else(|| {
            coded(
                "INVALID_OPTION",
                &format!("numerics must be 'seedinfer' or 'llamacpp', got '{name}'"),
            )
        })?,
    };
    Ok(AsyncTask::new(Coded(LoadModelTask {
        path: PathBuf::from(path),
        options: LoadOptions {
            threads: options.threads.map(|t| t as usize),
            weights,
            kv_cache: kv_cache_options(options.kv_cache)?,
            numerics,
            max_batch_tokens: options.max_batch_tokens.map(|t| t as usize),
        },
    })))
}

#[napi]
pub struct NativeModel {
    pub(crate) inner: Arc<Model>,
}

/// Decode steps batched across sessions: `steps / passes` is the mean batch size.
#[napi(object)]
pub struct NativeBatchStats {
    /// Forward passes the batcher ran.
    pub passes: f64,
    /// Decode steps those passes computed.
    pub steps: f64,
    /// The largest batch.
    pub largest: u32,
    /// Prompt tokens fed through those passes (chunked prefill next to decode steps).
    pub prompt_tokens: f64,
    /// Drafts verified in those passes' decode steps (speculative sessions).
    pub verified_tokens: f64,
}

/// A session's bounded KV cache (StreamingLLM or SirLLM); unset fields take the engine's defaults.
#[napi(object)]
pub struct NativeBoundedCache {
    /// `streaming` or `sirllm`.
    pub policy: String,
    pub max_tokens: u32,
    pub sinks: Option<u32>,
    pub recent: Option<u32>,
    pub decay: Option<f64>,
}

/// A session's ThinK key-channel pruning; unset fields take the engine's defaults.
#[napi(object)]
pub struct NativeThink {
    pub ratio: Option<f64>,
    pub recent: Option<u32>,
}

fn think(o: NativeThink) -> Think {
    let defaults = Think::default();
    Think {
        ratio: o.ratio.unwrap_or(defaults.ratio),
        recent: o.recent.map_or(defaults.recent, |r| r as usize),
    }
}

fn bounded_cache(o: NativeBoundedCache) -> Result<BoundedCache> {
    let max_tokens = o.max_tokens as usize;
    let sirllm = match o.policy.as_str() {
        "streaming" => None,
        "sirllm" => Some(SirLlm {
            recent: o
                .recent
                .map_or(BoundedCache::default_recent(max_tokens), |r| r as usize),
            decay: o.decay.unwrap_or(BoundedCache::DEFAULT_DECAY),
        }),
        other => {
            return Err(coded(
                "INVALID_OPTION",
                &format!("kvCache.policy must be 'streaming' or 'sirllm', got '{other}'"),
            ))
        }
    };
    if sirllm.is_none() && (o.recent.is_some() || o.decay.is_some()) {
        return Err(coded(
            "INVALID_OPTION",
            "kvCache.recent and kvCache.decay are SirLLM's (policy 'sirllm')",
        ));
    }
    Ok(BoundedCache {
        max_tokens,
        sinks: o.sinks.map_or(BoundedCache::DEFAULT_SINKS, |s| s as usize),
        sirllm,
    })
}

#[napi]
impl NativeModel {
    #[napi]
    pub fn info(&self) -> NativeModelInfo {
        let (m, c) = (&self.inner, &self.inner.config);
        let i = &m.info;
        NativeModelInfo {
            architecture: i.architecture.clone(),
            path: i.path.display().to_string(),
            file_format: i.file_format.to_string(),
            parameter_count: i.parameter_count as f64,
            layers: c.layers as u32,
            hidden_size: c.hidden_size as u32,
            intermediate_size: c.intermediate_size as u32,
            attention_heads: c.heads as u32,
            kv_heads: c.kv_heads as u32,
            head_dim: c.head_dim as u32,
            vocab_size: c.vocab_size as u32,
            context_length: c.context_length as u32,
            rope_theta: c.rope_theta as f64,
            rope_style: c.rope_style.name().to_string(),
            rope_scaling: c.rope_scaling.describe(),
            sliding_window: c.sliding_window.as_ref().map(|w| w.describe()),
            tied_embeddings: c.tied_embeddings,
            file_tensor_formats: i
                .file_tensor_formats
                .iter()
                .map(|(k, v)| (k.clone(), *v as u32))
                .collect(),
            compute_format: i.compute_format.clone(),
            weight_fallbacks: i.weight_fallbacks.clone(),
            file_bytes: i.file_bytes as f64,
            weight_bytes: i.weight_bytes as f64,
            kv_bytes_per_token: i.kv_bytes_per_token as f64,
            threads: i.threads as u32,
            numerics: m.numerics.name().to_string(),
            bos_token: m.tokenizer.bos_token().map(str::to_string),
            eos_token: m.tokenizer.eos_token().map(str::to_string),
            chat_template: m.tokenizer.chat_template().map(str::to_string),
            end_of_generation_token_ids: m.tokenizer.eos_token_ids(),
            kernel_isa: i.kernel_isa.clone(),
        }
    }

    #[napi]
    pub fn tokenize(&self, text: String, add_bos: bool, special: bool) -> Result<Vec<u32>> {
        guarded(|| Ok(self.inner.tokenizer.encode(&text, add_bos, special)?))
    }

    #[napi]
    pub fn detokenize(&self, token_ids: Vec<u32>, skip_special: bool) -> Result<String> {
        guarded(|| Ok(self.inner.tokenizer.decode(&token_ids, skip_special)?))
    }

    #[napi]
    pub fn create_session(
        &self,
        context_size: u32,
        kv_cache: Option<NativeBoundedCache>,
        key_pruning: Option<NativeThink>,
    ) -> Result<NativeSession> {
        if context_size == 0 {
            return Err(coded("INVALID_OPTION", "contextSize must be at least 1"));
        }
        NativeSession::new(
            Arc::clone(&self.inner),
            context_size as usize,
            kv_cache.map(bounded_cache).transpose()?,
            key_pruning.map(think),
        )
    }

    /// The KV-cache pool's counts.
    #[napi]
    pub fn cache_stats(&self) -> NativeCacheStats {
        let s = self.inner.kv_pool.stats();
        NativeCacheStats {
            dtype: s.dtype.to_string(),
            block_size: s.block_size as u32,
            block_bytes: s.block_bytes as f64,
            budget_bytes: s.budget_bytes as f64,
            used_bytes: s.used_bytes as f64,
            blocks_used: s.blocks_used as u32,
            blocks_free: s.blocks_free as u32,
            blocks_shared: s.blocks_shared as u32,
            blocks_cached: s.blocks_cached as u32,
            prefix_hit_blocks: s.prefix_hit_blocks as f64,
            prefix_hit_tokens: s.prefix_hit_tokens as f64,
            evicted_blocks: s.evicted_blocks as f64,
        }
    }

    /// The decode batcher's counts since load.
    #[napi]
    pub fn batch_stats(&self) -> NativeBatchStats {
        let s = self.inner.batcher.stats();
        NativeBatchStats {
            passes: s.passes as f64,
            steps: s.steps as f64,
            largest: s.largest as u32,
            prompt_tokens: s.prompt_tokens as f64,
            verified_tokens: s.verified_tokens as f64,
        }
    }

    /// Drops the cached prefix blocks no session uses.
    #[napi]
    pub fn clear_prefix_cache(&self) {
        self.inner.kv_pool.clear_prefix_cache();
    }

    /// Reads a session saved with `session.save` on a worker thread; `abort` set before the read starts
    /// rejects it with `ABORTED`.
    #[napi(ts_return_type = "Promise<NativeSession>")]
    pub fn load_session(
        &self,
        path: String,
        abort: &NativeAbortFlag,
    ) -> AsyncTask<Coded<LoadSessionTask>> {
        AsyncTask::new(Coded(LoadSessionTask {
            model: Arc::clone(&self.inner),
            path: PathBuf::from(path),
            abort: abort.flag(),
        }))
    }
}
