//! `NativeSession`: generation on a dedicated thread, streamed back through a thread-safe function.
//! Every event (each token, then `done` or `error`) travels through the same queue, so JavaScript sees
//! them in order.

use crate::error::{catch_panics, coded, to_js};
use napi::bindgen_prelude::*;
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi_derive::napi;
use seedinfer_engine::{GenerateParams, GenerationOutput, Model, SamplingParams, Session};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

#[napi(object)]
pub struct NativeGenerateOptions {
    pub max_tokens: u32,
    pub temperature: f64,
    pub top_k: u32,
    pub top_p: f64,
    pub min_p: f64,
    pub repetition_penalty: f64,
    pub repetition_last_n: u32,
    pub seed: f64,
    pub stop: Vec<String>,
    pub ignore_eos: bool,
}

#[napi(object)]
pub struct NativeTimings {
    pub ttft_ms: f64,
    pub prefill_tokens_per_second: f64,
    pub decode_tokens_per_second: f64,
    pub prompt_tokens: u32,
    pub generated_tokens: u32,
    pub total_ms: f64,
}

#[napi(object)]
pub struct NativeGenerationResult {
    pub text: String,
    pub token_ids: Vec<u32>,
    /// `eos`, `maxTokens`, `stop`, `contextFull` or `aborted`.
    pub stop_reason: String,
    pub timings: NativeTimings,
}

/// One streamed event: `token` (with `tokenId` and the text it completed), then `done` (with `result`) or
/// `error` (with `error` as "CODE: message").
#[napi(object)]
pub struct NativeGenerationEvent {
    pub kind: String,
    pub token_id: Option<u32>,
    pub text: Option<String>,
    pub result: Option<NativeGenerationResult>,
    pub error: Option<String>,
}

type EventSink =
    ThreadsafeFunction<NativeGenerationEvent, (), NativeGenerationEvent, Status, false>;

/// A cancellation flag shared with a running generation; `abort()` stops it within one token.
#[napi]
pub struct NativeAbortFlag {
    flag: Arc<AtomicBool>,
}

#[napi]
impl NativeAbortFlag {
    #[napi(constructor)]
    #[allow(clippy::new_without_default)]
    pub fn new() -> Self {
        Self {
            flag: Arc::new(AtomicBool::new(false)),
        }
    }

    #[napi]
    pub fn abort(&self) {
        self.flag.store(true, Ordering::Relaxed);
    }
}

#[napi]
pub struct NativeSession {
    state: Arc<Mutex<Session>>,
    busy: Arc<AtomicBool>,
}

fn to_result(out: GenerationOutput) -> NativeGenerationResult {
    let t = out.timings;
    NativeGenerationResult {
        text: out.text,
        token_ids: out.token_ids,
        stop_reason: out.stop_reason.name().to_string(),
        timings: NativeTimings {
            ttft_ms: t.ttft_ms,
            prefill_tokens_per_second: t.prefill_tokens_per_second,
            decode_tokens_per_second: t.decode_tokens_per_second,
            prompt_tokens: t.prompt_tokens as u32,
            generated_tokens: t.generated_tokens as u32,
            total_ms: t.total_ms,
        },
    }
}

fn event(kind: &str) -> NativeGenerationEvent {
    NativeGenerationEvent {
        kind: kind.to_string(),
        token_id: None,
        text: None,
        result: None,
        error: None,
    }
}

impl NativeSession {
    pub(crate) fn new(model: Arc<Model>, context_size: usize) -> Result<Self> {
        let session = Session::new(model, context_size).map_err(to_js)?;
        Ok(Self {
            state: Arc::new(Mutex::new(session)),
            busy: Arc::new(AtomicBool::new(false)),
        })
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Session>> {
        if self.busy.load(Ordering::Acquire) {
            return Err(coded(
                "SESSION_BUSY",
                "the session is generating; wait for it or abort it first",
            ));
        }
        self.state.lock().map_err(|_| {
            coded(
                "INTERNAL",
                "session state was poisoned by an earlier failure",
            )
        })
    }
}

pub struct PredictNextTask {
    state: Arc<Mutex<Session>>,
    busy: Arc<AtomicBool>,
    tokens: Vec<u32>,
}

impl Task for PredictNextTask {
    type Output = Vec<u32>;
    type JsValue = Vec<u32>;

    fn compute(&mut self) -> Result<Self::Output> {
        let outcome = catch_panics(|| {
            let mut session = self
                .state
                .lock()
                .map_err(|_| coded("INTERNAL", "session state was poisoned"))?;
            session
                .predict_next(&self.tokens, &AtomicBool::new(false))
                .map_err(to_js)
        });
        self.busy.store(false, Ordering::Release);
        outcome
    }

    fn resolve(&mut self, _env: Env, output: Self::Output) -> Result<Self::JsValue> {
        Ok(output)
    }
}

#[napi]
impl NativeSession {
    /// Teacher forcing on a worker thread: appends `tokens` and resolves with the argmax next token after each.
    #[napi(ts_return_type = "Promise<number[]>")]
    pub fn predict_next(&self, tokens: Uint32Array) -> Result<AsyncTask<PredictNextTask>> {
        if self.busy.swap(true, Ordering::AcqRel) {
            return Err(coded(
                "SESSION_BUSY",
                "the session is already generating; wait for it or abort it first",
            ));
        }
        Ok(AsyncTask::new(PredictNextTask {
            state: Arc::clone(&self.state),
            busy: Arc::clone(&self.busy),
            tokens: tokens.to_vec(),
        }))
    }

    #[napi(getter)]
    pub fn token_count(&self) -> Result<u32> {
        Ok(self.lock()?.token_count() as u32)
    }

    #[napi(getter)]
    pub fn context_size(&self) -> Result<u32> {
        Ok(self.lock()?.context_size() as u32)
    }

    #[napi]
    pub fn reset(&self) -> Result<()> {
        self.lock()?.reset();
        Ok(())
    }

    /// Starts generating on a new thread; events arrive through `on_event`.
    #[napi(
        ts_args_type = "prompt: Uint32Array, options: NativeGenerateOptions, onEvent: (event: NativeGenerationEvent) => void, abort: NativeAbortFlag"
    )]
    pub fn generate(
        &self,
        prompt: Uint32Array,
        options: NativeGenerateOptions,
        on_event: EventSink,
        abort: &NativeAbortFlag,
    ) -> Result<()> {
        if !(options.seed.is_finite() && options.seed >= 0.0) {
            return Err(coded(
                "INVALID_OPTION",
                &format!("seed must be a non-negative integer, got {}", options.seed),
            ));
        }
        if self.busy.swap(true, Ordering::AcqRel) {
            return Err(coded(
                "SESSION_BUSY",
                "the session is already generating; wait for it or abort it first",
            ));
        }
        let params = GenerateParams {
            max_tokens: options.max_tokens as usize,
            sampling: SamplingParams {
                temperature: options.temperature as f32,
                top_k: options.top_k as usize,
                top_p: options.top_p as f32,
                min_p: options.min_p as f32,
                repetition_penalty: options.repetition_penalty as f32,
                repetition_last_n: options.repetition_last_n as usize,
                seed: options.seed as u64,
            },
            stop: options.stop,
            ignore_eos: options.ignore_eos,
        };
        let prompt = prompt.to_vec();
        let (state, busy, flag) = (
            Arc::clone(&self.state),
            Arc::clone(&self.busy),
            Arc::clone(&abort.flag),
        );
        let spawned = std::thread::Builder::new()
            .name("seedinfer-generate".into())
            .spawn(move || {
                let outcome = catch_panics(|| {
                    let mut session = state
                        .lock()
                        .map_err(|_| coded("INTERNAL", "session state was poisoned"))?;
                    session
                        .generate(&prompt, &params, &flag, &mut |chunk| {
                            let mut e = event("token");
                            e.token_id = Some(chunk.token_id);
                            e.text = Some(chunk.text.to_string());
                            on_event.call(e, ThreadsafeFunctionCallMode::NonBlocking);
                        })
                        .map_err(to_js)
                });
                busy.store(false, Ordering::Release);
                let last = match outcome {
                    Ok(out) if out.stop_reason == seedinfer_engine::StopReason::Aborted => {
                        let mut e = event("error");
                        e.error = Some("ABORTED: the generation was aborted".to_string());
                        e.result = Some(to_result(out));
                        e
                    }
                    Ok(out) => {
                        let mut e = event("done");
                        e.result = Some(to_result(out));
                        e
                    }
                    Err(err) => {
                        let mut e = event("error");
                        e.error = Some(err.reason.clone());
                        e
                    }
                };
                on_event.call(last, ThreadsafeFunctionCallMode::NonBlocking);
            });
        if let Err(e) = spawned {
            self.busy.store(false, Ordering::Release);
            return Err(coded(
                "INTERNAL",
                &format!("cannot start a generation thread: {e}"),
            ));
        }
        Ok(())
    }
}
