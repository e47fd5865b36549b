//! `seedinfer/bench`'s attention timing: the engine's attention scheduler over a filled paged KV cache
//! (`seedinfer_engine::attention_bench`), built and run on worker threads.

use crate::error::{catch_panics, guarded, Coded, CodedTask, Result};
use crate::kernel_bench::{count, invalid, MAX_THREADS};
use napi::bindgen_prelude::*;
use napi_derive::napi;
use seedinfer_engine::attention_bench::{AttentionBench, AttentionShape};
use seedinfer_engine::KvDtype;
use std::sync::{Arc, Mutex};

#[napi(object)]
pub struct NativeAttentionShape {
    pub heads: u32,
    pub kv_heads: u32,
    pub head_dim: u32,
    /// Cached positions before the queries (0 allowed).
    pub context: u32,
    pub tokens: u32,
    /// `f32`, `f16` or `int8`.
    pub dtype: String,
    pub block_size: u32,
}

type Shared = Arc<Mutex<AttentionBench>>;

pub struct CreateAttentionBenchTask {
    shape: AttentionShape,
    threads: usize,
}

impl CodedTask for CreateAttentionBenchTask {
    type Output = AttentionBench;
    type JsValue = NativeAttentionBench;

    fn compute(&mut self) -> Result<Self::Output> {
        guarded(|| AttentionBench::new(self.shape, self.threads))
    }

    fn resolve(&mut self, bench: Self::Output) -> Result<Self::JsValue> {
        Ok(NativeAttentionBench {
            cache_bytes: bench.cache_bytes() as f64,
            inner: Some(Arc::new(Mutex::new(bench))),
        })
    }
}

/// Fills (on a worker thread) a paged KV cache of `context` positions with deterministic random keys and values
/// and makes `tokens` queries after them, with a pool of `threads` threads.
#[napi(ts_return_type = "Promise<NativeAttentionBench>")]
pub fn create_attention_bench(
    shape: NativeAttentionShape,
    threads: f64,
) -> Result<AsyncTask<Coded<CreateAttentionBenchTask>>> {
    let dtype = KvDtype::parse(&shape.dtype).ok_or_else(|| {
        invalid(format!(
            "dtype must be f32, f16 or int8, got {:?}",
            shape.dtype
        ))
    })?;
    Ok(AsyncTask::new(Coded(CreateAttentionBenchTask {
        shape: AttentionShape {
            heads: shape.heads as usize,
            kv_heads: shape.kv_heads as usize,
            head_dim: shape.head_dim as usize,
            context: shape.context as usize,
            tokens: shape.tokens as usize,
            dtype,
            block_size: shape.block_size as usize,
        },
        threads: count("threads", threads, MAX_THREADS)?,
    })))
}

/// A filled cache and its queries, ready to attend.
#[napi]
pub struct NativeAttentionBench {
    inner: Option<Shared>,
    cache_bytes: f64,
}

pub struct AttendTask {
    inner: Shared,
    iterations: usize,
}

impl CodedTask for AttendTask {
    type Output = f64;
    type JsValue = f64;

    fn compute(&mut self) -> Result<Self::Output> {
        catch_panics(|| match self.inner.lock() {
            Ok(mut bench) => Ok(bench.run(self.iterations)),
            Err(_) => Err(invalid("an earlier run of this bench failed".into())),
        })
    }

    fn resolve(&mut self, seconds: Self::Output) -> Result<Self::JsValue> {
        Ok(seconds)
    }
}

#[napi]
impl NativeAttentionBench {
    /// Runs the attention `iterations` times on a worker thread inside the bench's pool; resolves to the seconds.
    #[napi(ts_return_type = "Promise<number>")]
    pub fn run(&self, iterations: f64) -> Result<AsyncTask<Coded<AttendTask>>> {
        let inner = self
            .inner
            .as_ref()
            .ok_or_else(|| crate::error::coded("DISPOSED", "this attention bench was disposed"))?;
        Ok(AsyncTask::new(Coded(AttendTask {
            inner: Arc::clone(inner),
            iterations: count("iterations", iterations, u32::MAX as usize)?,
        })))
    }

    /// Bytes of keys and values in the cache: the last query reads all of them.
    #[napi(getter)]
    pub fn cache_bytes(&self) -> f64 {
        self.cache_bytes
    }

    /// Frees the cache now (runs already started keep it until they finish).
    #[napi]
    pub fn dispose(&mut self) {
        self.inner = None;
    }
}
