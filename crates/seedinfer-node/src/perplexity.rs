//! `NativeModel.evaluatePerplexity`: perplexity of a token sequence, computed on a worker thread.

use crate::error::{catch_panics, coded, to_js, Coded, CodedTask, Result};
use crate::model::NativeModel;
use crate::session::NativeAbortFlag;
use napi::bindgen_prelude::*;
use napi_derive::napi;
use seedinfer_engine::{Model, Perplexity};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

#[napi(object)]
pub struct NativePerplexityOptions {
    /// Tokens per window, in [2, model context]; omitted means min(512, model context).
    pub window: Option<u32>,
}

/// One window's score.
#[napi(object)]
pub struct NativePerplexityWindow {
    /// Tokens scored: every token of the window but its first.
    pub tokens: u32,
    /// Negative log-likelihood of the scored tokens, summed, in nats.
    pub nll: f64,
}

#[napi(object)]
pub struct NativePerplexity {
    /// `exp(nll / tokens)`.
    pub perplexity: f64,
    /// Tokens scored over all windows.
    pub tokens: u32,
    /// Negative log-likelihood of all scored tokens, summed, in nats.
    pub nll: f64,
    /// Window length used.
    pub window: u32,
    pub windows: Vec<NativePerplexityWindow>,
}

pub struct PerplexityTask {
    model: Arc<Model>,
    tokens: Vec<u32>,
    window: Option<usize>,
    abort: Arc<AtomicBool>,
}

impl CodedTask for PerplexityTask {
    type Output = Perplexity;
    type JsValue = NativePerplexity;

    fn compute(&mut self) -> Result<Self::Output> {
        catch_panics(|| {
            match self
                .model
                .perplexity(&self.tokens, self.window, &self.abort)
            {
                Ok(Some(scored)) => Ok(scored),
                Ok(None) => Err(coded("ABORTED", "the perplexity evaluation was aborted")),
                Err(e) => Err(to_js(e)),
            }
        })
    }

    fn resolve(&mut self, p: Self::Output) -> Result<Self::JsValue> {
        Ok(NativePerplexity {
            perplexity: p.perplexity(),
            tokens: p.tokens as u32,
            nll: p.nll,
            window: p.window as u32,
            windows: p
                .windows
                .iter()
                .map(|w| NativePerplexityWindow {
                    tokens: w.tokens as u32,
                    nll: w.nll,
                })
                .collect(),
        })
    }
}

#[napi]
impl NativeModel {
    /// Perplexity of `tokens` in non-overlapping windows, each scored from an empty cache, on a worker thread;
    /// `abort` stops it between chunks of positions (the promise then rejects with `ABORTED`).
    #[napi(ts_return_type = "Promise<NativePerplexity>")]
    pub fn evaluate_perplexity(
        &self,
        tokens: Uint32Array,
        options: NativePerplexityOptions,
        abort: &NativeAbortFlag,
    ) -> AsyncTask<Coded<PerplexityTask>> {
        AsyncTask::new(Coded(PerplexityTask {
            model: Arc::clone(&self.inner),
            tokens: tokens.to_vec(),
            window: options.window.map(|w| w as usize),
            abort: Arc::clone(&abort.flag),
        }))
    }
}
