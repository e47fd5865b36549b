//! `NativeSession`: generation on a dedicated thread, streamed back through a thread-safe function.
//! Every event (each token, then `done` or `error`) travels through the same queue, so JavaScript sees
//! them in order.

use crate::error::{catch_panics, coded, to_js, Coded, CodedTask, Result};
use crate::model::NativeModel;
use napi::bindgen_prelude::*;
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi_derive::napi;
use seedinfer_engine::{
    BoundedCache, DraftSource, GenerateParams, GenerationOutput, Model, PrefillStrategy,
    ResponseFormat, SamplingParams, Session, SpeculativeParams, Stage, Think, TokenLogprobs,
    XAttention,
};
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
    pub presence_penalty: f64,
    pub frequency_penalty: f64,
    pub seed: f64,
    pub stop: Vec<String>,
    pub ignore_eos: bool,
    pub prefill: Option<NativePrefillOptions>,
    /// Report each token's log-probability with this many alternatives (absent: no log-probabilities).
    pub top_logprobs: Option<u32>,
    /// What the output must be (absent: free text).
    pub response_format: Option<NativeResponseFormat>,
    /// Speculative decoding (absent: off).
    pub speculative: Option<NativeSpeculativeOptions>,
}

/// Drafts from `draft`: `promptLookup` (suffixes of up to `ngram` tokens looked up), `model` (the draft model
/// passed to `generate`) or `self` (the model's first `draft_layers` layers); at most `max_draft_tokens` per pass.
#[napi(object)]
pub struct NativeSpeculativeOptions {
    pub draft: Option<String>,
    pub draft_layers: Option<u32>,
    pub max_draft_tokens: Option<u32>,
    pub ngram: Option<u32>,
}

/// The engine's speculative settings for `options`, drafting with `draft_model` when it says `model`.
fn speculative(
    options: Option<NativeSpeculativeOptions>,
    draft_model: Option<&NativeModel>,
    layers: usize,
) -> Result<Option<SpeculativeParams>> {
    let Some(o) = options else {
        return Ok(None);
    };
    let source = match (o.draft.as_deref(), draft_model) {
        (None | Some("promptLookup"), None) => DraftSource::PromptLookup,
        (Some("model"), Some(m)) => DraftSource::Model(Arc::clone(&m.inner)),
        (Some("self"), None) => o.draft_layers.map_or_else(
            || DraftSource::first_half(layers),
            |n| DraftSource::FirstLayers(n as usize),
        ),
        (Some("model"), None) => {
            return Err(coded(
                "INVALID_OPTION",
                "speculative.draft 'model' needs a draft model",
            ))
        }
        (other, _) => {
            return Err(coded(
                "INVALID_OPTION",
                &format!(
                    "speculative.draft must be 'promptLookup', 'self' or a Model, got {}",
                    other.unwrap_or("nothing with a draft model")
                ),
            ))
        }
    };
    Ok(Some(SpeculativeParams {
        source,
        max_draft: o
            .max_draft_tokens
            .map_or(SpeculativeParams::DEFAULT_MAX_DRAFT, |k| k as usize),
        ngram_max: o
            .ngram
            .map_or(SpeculativeParams::DEFAULT_NGRAM_MAX, |n| n as usize),
    }))
}

/// What speculative decoding did: drafts verified and accepted, verification passes.
#[napi(object)]
pub struct NativeSpeculativeReport {
    pub drafted: u32,
    pub accepted: u32,
    pub passes: u32,
}

/// An output constraint: `type` is `json_schema` (with `schema`, a JSON document, and `strict`), `json_object`,
/// `regex` (with `pattern`), `grammar` (with `lark`), or `tagged_json` (a tool call: `schema` between `prefix`
/// and `suffix`).
#[napi(object)]
pub struct NativeResponseFormat {
    #[napi(js_name = "type")]
    pub kind: String,
    pub schema: Option<String>,
    pub strict: Option<bool>,
    pub pattern: Option<String>,
    pub lark: Option<String>,
    pub prefix: Option<String>,
    pub suffix: Option<String>,
}

/// The engine's format for `options`.
fn response_format(options: Option<NativeResponseFormat>) -> Result<Option<ResponseFormat>> {
    let Some(o) = options else {
        return Ok(None);
    };
    let missing = |field: &str| {
        coded(
            "INVALID_OPTION",
            &format!("responseFormat of type '{}' needs {field}", o.kind),
        )
    };
    let schema = || -> Result<serde_json::Value> {
        let text = o.schema.as_deref().ok_or_else(|| missing("schema"))?;
        serde_json::from_str(text).map_err(|e| {
            coded(
                "INVALID_OPTION",
                &format!("responseFormat.schema is not JSON: {e}"),
            )
        })
    };
    Ok(Some(match o.kind.as_str() {
        "json_schema" => ResponseFormat::JsonSchema {
            schema: schema()?,
            strict: o.strict.unwrap_or(false),
        },
        "tagged_json" => ResponseFormat::TaggedJson {
            before: o.prefix.clone().unwrap_or_default(),
            schema: schema()?,
            after: o.suffix.clone().unwrap_or_default(),
        },
        "json_object" => ResponseFormat::JsonObject,
        "regex" => ResponseFormat::Regex(o.pattern.clone().ok_or_else(|| missing("pattern"))?),
        "grammar" => ResponseFormat::Lark(o.lark.clone().ok_or_else(|| missing("lark"))?),
        other => {
            return Err(coded(
                "INVALID_OPTION",
                &format!(
                    "responseFormat.type must be 'json_schema', 'json_object', 'regex' or 'grammar', got '{other}'"
                ),
            ))
        }
    }))
}

#[napi(object)]
pub struct NativePrefillStage {
    pub layer: u32,
    pub keep: f64,
}

/// How the prompt is prefilled; unset fields take the strategy's defaults for the model's depth.
#[napi(object)]
pub struct NativePrefillOptions {
    /// `dense`, `lazyllm`, `promptdistill` or `feather`.
    pub strategy: String,
    pub schedule: Option<Vec<NativePrefillStage>>,
    pub layer: Option<u32>,
    pub keep_tokens: Option<u32>,
    pub question_tokens: Option<u32>,
    pub pooling: Option<u32>,
    pub uniform_share: Option<f64>,
    pub reselect_in_decode: Option<bool>,
    /// Block-sparse prefill attention, with any strategy (`xattention` in TypeScript is `dense` with this).
    pub xattention: Option<NativeXAttentionOptions>,
}

/// XAttention's settings; unset fields take the engine's defaults.
#[napi(object)]
pub struct NativeXAttentionOptions {
    pub stride: Option<u32>,
    pub block_size: Option<u32>,
    pub threshold: Option<f64>,
    pub dense_last_block: Option<bool>,
}

/// What the prompt's prefill computed.
#[napi(object)]
pub struct NativePrefillReport {
    pub strategy: String,
    /// Tokens computed at each layer during the prefill (new prompt tokens and revived earlier ones).
    pub layer_tokens: Vec<u32>,
    /// Tokens that left the computation at a selection.
    pub dropped_tokens: u32,
    /// Earlier tokens computed from the aux cache during the prefill.
    pub revived_tokens: u32,
    /// Earlier tokens computed from the aux cache during decode steps.
    pub decode_revived_tokens: u32,
    /// XAttention: query x key block pairs attended and those causal attention covers, over layers and KV heads.
    pub selected_blocks: f64,
    pub causal_blocks: f64,
    /// ThinK: blocks whose keys the end of this prefill pruned, and the key channels they keep per KV head.
    pub pruned_key_blocks: u32,
    pub kept_key_channels: u32,
}

/// The engine's XAttention settings in `options`, if any.
fn xattention(options: Option<&NativePrefillOptions>) -> Option<XAttention> {
    let x = options?.xattention.as_ref()?;
    Some(XAttention {
        stride: x.stride.map_or(XAttention::DEFAULT_STRIDE, |s| s as usize),
        block_size: x
            .block_size
            .map_or(XAttention::DEFAULT_BLOCK_SIZE, |b| b as usize),
        threshold: x.threshold.unwrap_or(XAttention::DEFAULT_THRESHOLD),
        dense_last_block: x
            .dense_last_block
            .unwrap_or(XAttention::default().dense_last_block),
    })
}

/// The engine's strategy for `options` on a model of `layers` layers.
fn prefill_strategy(
    options: Option<&NativePrefillOptions>,
    layers: usize,
) -> Result<PrefillStrategy> {
    let Some(o) = options else {
        return Ok(PrefillStrategy::Dense);
    };
    let schedule = |default: Vec<Stage>| {
        o.schedule.as_ref().map_or(default, |stages| {
            stages
                .iter()
                .map(|s| Stage {
                    layer: s.layer as usize,
                    keep: s.keep,
                })
                .collect()
        })
    };
    Ok(match o.strategy.as_str() {
        "dense" => PrefillStrategy::Dense,
        "lazyllm" => PrefillStrategy::LazyLlm {
            schedule: schedule(PrefillStrategy::lazyllm_default_schedule(layers)),
            reselect_in_decode: o.reselect_in_decode.unwrap_or(true),
        },
        "feather" => PrefillStrategy::Feather {
            schedule: schedule(PrefillStrategy::feather_default_schedule(layers)),
            uniform_share: o
                .uniform_share
                .unwrap_or(PrefillStrategy::FEATHER_UNIFORM_SHARE),
        },
        "promptdistill" => PrefillStrategy::PromptDistill {
            layer: o.layer.map_or(
                PrefillStrategy::promptdistill_default_layer(layers),
                |l| l as usize,
            ),
            keep_tokens: o
                .keep_tokens
                .map_or(PrefillStrategy::PROMPTDISTILL_KEEP_TOKENS, |k| k as usize),
            question_tokens: o
                .question_tokens
                .map_or(PrefillStrategy::PROMPTDISTILL_QUESTION_TOKENS, |q| {
                    q as usize
                }),
            pooling: o
                .pooling
                .map_or(PrefillStrategy::PROMPTDISTILL_POOLING, |p| p as usize),
        },
        other => {
            return Err(coded(
                "INVALID_OPTION",
                &format!(
                    "prefill.strategy must be 'dense', 'lazyllm', 'promptdistill' or 'feather', got '{other}'"
                ),
            ))
        }
    })
}

#[napi(object)]
pub struct NativeTimings {
    pub ttft_ms: f64,
    pub prefill_tokens_per_second: f64,
    pub decode_tokens_per_second: f64,
    pub prompt_tokens: u32,
    /// Prompt tokens whose keys and values were reused from the prefix cache.
    pub reused_prompt_tokens: u32,
    pub generated_tokens: u32,
    pub total_ms: f64,
}

/// A token with its text (the token decoded alone) and log-probability.
#[napi(object)]
pub struct NativeTokenLogprob {
    pub token_id: u32,
    pub token: String,
    pub logprob: f64,
}

/// A generated token's log-probability and the most likely alternatives at its step.
#[napi(object)]
pub struct NativeTokenLogprobs {
    pub token_id: u32,
    pub token: String,
    pub logprob: f64,
    pub top_logprobs: Vec<NativeTokenLogprob>,
}

#[napi(object)]
pub struct NativeGenerationResult {
    pub text: String,
    pub token_ids: Vec<u32>,
    /// One entry per generated token when the options asked for log-probabilities.
    pub logprobs: Option<Vec<NativeTokenLogprobs>>,
    /// `eos`, `maxTokens`, `stop`, `contextFull` or `aborted`.
    pub stop_reason: String,
    /// With a response format: whether the output ended before its grammar was complete.
    pub incomplete: Option<bool>,
    /// With speculative decoding.
    pub speculative: Option<NativeSpeculativeReport>,
    pub timings: NativeTimings,
    pub prefill: NativePrefillReport,
}

/// One streamed event: `token` (with `tokenId` and the text it completed), then `done` (with `result`) or
/// `error` (with `errorCode`, the stable code, and `error`, the message).
#[napi(object)]
pub struct NativeGenerationEvent {
    pub kind: String,
    pub token_id: Option<u32>,
    pub text: Option<String>,
    /// The token's log-probabilities, when asked for.
    pub logprobs: Option<NativeTokenLogprobs>,
    pub result: Option<NativeGenerationResult>,
    /// The stable code of an `error` event (`ABORTED`, `CONTEXT_OVERFLOW`, …).
    pub error_code: Option<String>,
    /// The message of an `error` event.
    pub error: Option<String>,
}

type EventSink =
    ThreadsafeFunction<NativeGenerationEvent, (), NativeGenerationEvent, Status, false>;

/// A cancellation flag shared with a running generation (`abort()` stops it within one token) or perplexity
/// evaluation (within one chunk of positions).
#[napi]
pub struct NativeAbortFlag {
    pub(crate) flag: Arc<AtomicBool>,
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

impl NativeAbortFlag {
    /// The flag, for work running elsewhere.
    pub(crate) fn flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.flag)
    }
}

/// A session's state; `None` once disposed.
type SessionState = Arc<Mutex<Option<Session>>>;

#[napi]
pub struct NativeSession {
    state: SessionState,
    busy: Arc<AtomicBool>,
}

fn disposed() -> crate::error::Failure {
    coded("DISPOSED", "the session was disposed; create a new one")
}

/// Runs `work` on the session behind `state` (on the calling thread).
fn with_session<T>(
    state: &SessionState,
    work: impl FnOnce(&mut Session) -> Result<T>,
) -> Result<T> {
    let mut guard = state
        .lock()
        .map_err(|_| coded("INTERNAL", "session state was poisoned"))?;
    work(guard.as_mut().ok_or_else(disposed)?)
}

fn token_logprob(model: &Model, token_id: u32, logprob: f32) -> NativeTokenLogprob {
    NativeTokenLogprob {
        token_id,
        token: model
            .tokenizer
            .decode(&[token_id], false)
            .unwrap_or_default(),
        logprob: logprob as f64,
    }
}

fn to_logprobs(model: &Model, token_id: u32, l: &TokenLogprobs) -> NativeTokenLogprobs {
    let chosen = token_logprob(model, token_id, l.logprob);
    NativeTokenLogprobs {
        token_id,
        token: chosen.token,
        logprob: chosen.logprob,
        top_logprobs: l
            .top
            .iter()
            .map(|&(id, lp)| token_logprob(model, id, lp))
            .collect(),
    }
}

fn to_result(
    model: &Model,
    out: GenerationOutput,
    params: &GenerateParams,
) -> NativeGenerationResult {
    let strategy = match (&params.prefill, &params.xattention) {
        (PrefillStrategy::Dense, Some(_)) => "xattention",
        (prefill, _) => prefill.name(),
    };
    let logprobs = params.logprobs.is_some();
    let t = out.timings;
    let prefill = NativePrefillReport {
        strategy: strategy.to_string(),
        layer_tokens: out.prefill.layer_tokens.iter().map(|&n| n as u32).collect(),
        dropped_tokens: out.prefill.dropped as u32,
        revived_tokens: out.prefill.revived as u32,
        decode_revived_tokens: out.decode_revived as u32,
        selected_blocks: out.prefill.selected_blocks as f64,
        causal_blocks: out.prefill.causal_blocks as f64,
        pruned_key_blocks: out.think.pruned_blocks as u32,
        kept_key_channels: out.think.kept_channels as u32,
    };
    let token_logprobs = logprobs.then(|| {
        out.token_ids
            .iter()
            .zip(&out.logprobs)
            .map(|(&id, l)| to_logprobs(model, id, l))
            .collect()
    });
    NativeGenerationResult {
        text: out.text,
        token_ids: out.token_ids,
        logprobs: token_logprobs,
        stop_reason: out.stop_reason.name().to_string(),
        incomplete: params.response_format.is_some().then_some(out.incomplete),
        speculative: out.speculative.map(|r| NativeSpeculativeReport {
            drafted: r.drafted as u32,
            accepted: r.accepted as u32,
            passes: r.passes as u32,
        }),
        timings: NativeTimings {
            ttft_ms: t.ttft_ms,
            prefill_tokens_per_second: t.prefill_tokens_per_second,
            decode_tokens_per_second: t.decode_tokens_per_second,
            prompt_tokens: t.prompt_tokens as u32,
            reused_prompt_tokens: t.reused_prompt_tokens as u32,
            generated_tokens: t.generated_tokens as u32,
            total_ms: t.total_ms,
        },
        prefill,
    }
}

fn event(kind: &str) -> NativeGenerationEvent {
    NativeGenerationEvent {
        kind: kind.to_string(),
        token_id: None,
        text: None,
        logprobs: None,
        result: None,
        error_code: None,
        error: None,
    }
}

impl NativeSession {
    pub(crate) fn new(
        model: Arc<Model>,
        context_size: usize,
        bound: Option<BoundedCache>,
        think: Option<Think>,
    ) -> Result<Self> {
        let mut session = Session::new(model, context_size).map_err(to_js)?;
        session.set_bounded_cache(bound).map_err(to_js)?;
        session.set_think(think).map_err(to_js)?;
        Ok(Self::from_session(session))
    }

    pub(crate) fn from_session(session: Session) -> Self {
        Self {
            state: Arc::new(Mutex::new(Some(session))),
            busy: Arc::new(AtomicBool::new(false)),
        }
    }

    /// A teacher-forcing task of `run` over `tokens`, claiming the session until it ends.
    fn teacher_forcing<T>(
        &self,
        tokens: Uint32Array,
        abort: &NativeAbortFlag,
        run: fn(&mut Session, &[u32], &AtomicBool) -> seedinfer_engine::Result<Vec<T>>,
    ) -> Result<AsyncTask<Coded<TeacherForcingTask<T>>>>
    where
        T: Send + ToNapiValue + 'static,
    {
        self.claim()?;
        Ok(AsyncTask::new(Coded(TeacherForcingTask {
            state: Arc::clone(&self.state),
            busy: Arc::clone(&self.busy),
            tokens: tokens.to_vec(),
            abort: abort.flag(),
            run,
        })))
    }

    /// Runs `work` on the session unless it is generating or disposed.
    fn idle<T>(&self, work: impl FnOnce(&mut Session) -> Result<T>) -> Result<T> {
        if self.busy.load(Ordering::Acquire) {
            return Err(coded(
                "SESSION_BUSY",
                "the session is generating; wait for it or abort it first",
            ));
        }
        catch_panics(|| with_session(&self.state, work))
    }

    /// Marks the session busy for a worker, or fails if it already is (or is disposed).
    fn claim(&self) -> Result<()> {
        if self.busy.swap(true, Ordering::AcqRel) {
            return Err(coded(
                "SESSION_BUSY",
                "the session is already generating; wait for it or abort it first",
            ));
        }
        let alive = self.state.lock().map(|s| s.is_some()).unwrap_or(false);
        if !alive {
            self.busy.store(false, Ordering::Release);
            return Err(disposed());
        }
        Ok(())
    }
}

/// Teacher forcing on a worker thread: `run` feeds `tokens` to the session and reads something off every position
/// (the next token's argmax, or each token's negative log-likelihood).
pub struct TeacherForcingTask<T> {
    state: SessionState,
    busy: Arc<AtomicBool>,
    tokens: Vec<u32>,
    abort: Arc<AtomicBool>,
    run: fn(&mut Session, &[u32], &AtomicBool) -> seedinfer_engine::Result<Vec<T>>,
}

impl<T: Send + ToNapiValue + 'static> CodedTask for TeacherForcingTask<T> {
    type Output = Vec<T>;
    type JsValue = Vec<T>;

    fn compute(&mut self) -> Result<Self::Output> {
        let outcome = catch_panics(|| {
            with_session(&self.state, |session| {
                (self.run)(session, &self.tokens, &self.abort).map_err(to_js)
            })
        });
        self.busy.store(false, Ordering::Release);
        outcome
    }

    fn resolve(&mut self, output: Self::Output) -> Result<Self::JsValue> {
        Ok(output)
    }
}

/// What superposition did: per document the query's mean log-likelihood, the kept documents, prompt tokens and
/// how many of them the prefix cache held, and the time it took.
#[napi(object)]
pub struct NativeSuperposeReport {
    pub saliency: Vec<f64>,
    pub kept: Vec<u32>,
    pub prompt_tokens: u32,
    pub reused_tokens: u32,
    pub elapsed_ms: f64,
}

pub struct SuperposeTask {
    state: SessionState,
    busy: Arc<AtomicBool>,
    preamble: Vec<u32>,
    documents: Vec<Vec<u32>>,
    query: Vec<u32>,
    top_k: usize,
    abort: Arc<AtomicBool>,
}

impl CodedTask for SuperposeTask {
    type Output = seedinfer_engine::SuperposeReport;
    type JsValue = NativeSuperposeReport;

    fn compute(&mut self) -> Result<Self::Output> {
        let outcome = catch_panics(|| {
            with_session(&self.state, |session| {
                session
                    .superpose(
                        &self.preamble,
                        &self.documents,
                        &self.query,
                        self.top_k,
                        &self.abort,
                    )
                    .map_err(to_js)
            })
        });
        self.busy.store(false, Ordering::Release);
        outcome
    }

    fn resolve(&mut self, r: Self::Output) -> Result<Self::JsValue> {
        Ok(NativeSuperposeReport {
            saliency: r.saliency.iter().map(|&s| s as f64).collect(),
            kept: r.kept.iter().map(|&k| k as u32).collect(),
            prompt_tokens: r.prompt_tokens as u32,
            reused_tokens: r.reused_tokens as u32,
            elapsed_ms: r.elapsed_ms,
        })
    }
}

pub struct SaveSessionTask {
    state: SessionState,
    busy: Arc<AtomicBool>,
    path: std::path::PathBuf,
    abort: Arc<AtomicBool>,
}

impl CodedTask for SaveSessionTask {
    type Output = ();
    type JsValue = ();

    fn compute(&mut self) -> Result<Self::Output> {
        let outcome = catch_panics(|| {
            if self.abort.load(Ordering::Relaxed) {
                return Err(coded("ABORTED", "the save was aborted before it started"));
            }
            with_session(&self.state, |session| {
                session.save(&self.path).map_err(to_js)
            })
        });
        self.busy.store(false, Ordering::Release);
        outcome
    }

    fn resolve(&mut self, _output: Self::Output) -> Result<Self::JsValue> {
        Ok(())
    }
}

#[napi]
impl NativeSession {
    /// Teacher forcing on a worker thread: appends `tokens` and resolves with the argmax next token after each.
    /// `abort` stops it within one chunk of positions (`ABORTED`; the session keeps what was computed).
    #[napi(ts_return_type = "Promise<number[]>")]
    pub fn predict_next(
        &self,
        tokens: Uint32Array,
        abort: &NativeAbortFlag,
    ) -> Result<AsyncTask<Coded<TeacherForcingTask<u32>>>> {
        self.teacher_forcing(tokens, abort, Session::predict_next)
    }

    /// Teacher forcing on a worker thread: appends `tokens` and resolves with each one's negative log-likelihood
    /// (NaN for a first token with nothing before it); `abort` stops it between chunks (`ABORTED`).
    #[napi(ts_return_type = "Promise<Array<number>>")]
    pub fn score_tokens(
        &self,
        tokens: Uint32Array,
        abort: &NativeAbortFlag,
    ) -> Result<AsyncTask<Coded<TeacherForcingTask<f64>>>> {
        self.teacher_forcing(tokens, abort, Session::score_tokens)
    }

    /// Superposition prompting on a worker thread (`seedinfer_engine::superposition`): appends `preamble`, scores
    /// each document + `query` path forked after it, and continues from the most salient; `abort` stops it within
    /// one chunk (`ABORTED`; the session keeps the preamble).
    #[napi(ts_return_type = "Promise<NativeSuperposeReport>")]
    pub fn superpose(
        &self,
        preamble: Uint32Array,
        documents: Vec<Uint32Array>,
        query: Uint32Array,
        top_k: u32,
        abort: &NativeAbortFlag,
    ) -> Result<AsyncTask<Coded<SuperposeTask>>> {
        self.claim()?;
        Ok(AsyncTask::new(Coded(SuperposeTask {
            state: Arc::clone(&self.state),
            busy: Arc::clone(&self.busy),
            preamble: preamble.to_vec(),
            documents: documents.iter().map(|d| d.to_vec()).collect(),
            query: query.to_vec(),
            top_k: top_k as usize,
            abort: abort.flag(),
        })))
    }

    #[napi(getter)]
    pub fn token_count(&self) -> Result<u32> {
        self.idle(|s| Ok(s.token_count() as u32))
    }

    #[napi(getter)]
    pub fn context_size(&self) -> Result<u32> {
        self.idle(|s| Ok(s.context_size() as u32))
    }

    /// Tokens a bounded KV cache has evicted so far (0 without a bound).
    #[napi(getter)]
    pub fn evicted_tokens(&self) -> Result<u32> {
        self.idle(|s| Ok(s.evicted_tokens() as u32))
    }

    /// Bytes of the KV blocks the session holds (blocks shared with other sessions included).
    #[napi(getter)]
    pub fn kv_bytes(&self) -> Result<f64> {
        self.idle(|s| Ok(s.kv_held_bytes() as f64))
    }

    /// Logits after the last cached token, if any: after a generation, those its last token was chosen from.
    #[napi]
    pub fn last_logits(&self) -> Result<Option<Float32Array>> {
        self.idle(|s| Ok(s.last_logits().map(|l| Float32Array::new(l.to_vec()))))
    }

    /// All tokens of the conversation so far.
    #[napi]
    pub fn token_ids(&self) -> Result<Vec<u32>> {
        self.idle(|s| Ok(s.all_tokens()))
    }

    #[napi]
    pub fn reset(&self) -> Result<()> {
        self.idle(|s| {
            s.reset();
            Ok(())
        })
    }

    /// A new session continuing from this one; KV blocks are shared copy-on-write.
    #[napi]
    pub fn fork(&self) -> Result<NativeSession> {
        self.idle(|s| Ok(NativeSession::from_session(s.fork())))
    }

    /// Drops the last `n` tokens.
    #[napi]
    pub fn rewind(&self, n: u32) -> Result<()> {
        self.idle(|s| s.rewind(n as usize).map_err(to_js))
    }

    /// Frees the session's KV blocks now; later calls fail with `DISPOSED`.
    #[napi]
    pub fn dispose(&self) -> Result<()> {
        if self.busy.load(Ordering::Acquire) {
            return Err(coded(
                "SESSION_BUSY",
                "the session is generating; abort it before disposing",
            ));
        }
        let taken = self
            .state
            .lock()
            .map_err(|_| coded("INTERNAL", "session state was poisoned"))?
            .take();
        drop(taken);
        Ok(())
    }

    /// Writes the session to `path` on a worker thread; `abort` set before the write starts rejects it with
    /// `ABORTED` (a write, once started, completes: the file is replaced atomically either way).
    #[napi(ts_return_type = "Promise<void>")]
    pub fn save(
        &self,
        path: String,
        abort: &NativeAbortFlag,
    ) -> Result<AsyncTask<Coded<SaveSessionTask>>> {
        self.claim()?;
        Ok(AsyncTask::new(Coded(SaveSessionTask {
            state: Arc::clone(&self.state),
            busy: Arc::clone(&self.busy),
            path: std::path::PathBuf::from(path),
            abort: abort.flag(),
        })))
    }

    /// Starts generating on a new thread; events arrive through `on_event`.
    #[napi(
        ts_args_type = "prompt: Uint32Array, options: NativeGenerateOptions, onEvent: (event: NativeGenerationEvent) => void, abort: NativeAbortFlag, draftModel?: NativeModel | undefined | null"
    )]
    pub fn generate(
        &self,
        prompt: Uint32Array,
        options: NativeGenerateOptions,
        on_event: EventSink,
        abort: &NativeAbortFlag,
        draft_model: Option<&NativeModel>,
    ) -> Result<()> {
        if !(options.seed.is_finite() && options.seed >= 0.0) {
            return Err(coded(
                "INVALID_OPTION",
                &format!("seed must be a non-negative integer, got {}", options.seed),
            ));
        }
        let model = self.idle(|s| Ok(Arc::clone(s.model())))?;
        let layers = model.config.layers;
        let prefill = prefill_strategy(options.prefill.as_ref(), layers)?;
        prefill.validate(layers).map_err(to_js)?;
        let xattention = xattention(options.prefill.as_ref());
        let response_format = response_format(options.response_format)?;
        let speculative = speculative(options.speculative, draft_model, layers)?;
        self.claim()?;
        let params = GenerateParams {
            max_tokens: options.max_tokens as usize,
            sampling: SamplingParams {
                temperature: options.temperature as f32,
                top_k: options.top_k as usize,
                top_p: options.top_p as f32,
                min_p: options.min_p as f32,
                repetition_penalty: options.repetition_penalty as f32,
                repetition_last_n: options.repetition_last_n as usize,
                presence_penalty: options.presence_penalty as f32,
                frequency_penalty: options.frequency_penalty as f32,
                seed: options.seed as u64,
            },
            stop: options.stop,
            ignore_eos: options.ignore_eos,
            prefill,
            xattention,
            logprobs: options.top_logprobs.map(|k| k as usize),
            response_format,
            speculative,
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
                    with_session(&state, |session| {
                        session
                            .generate(&prompt, &params, &flag, &mut |chunk| {
                                let mut e = event("token");
                                e.token_id = Some(chunk.token_id);
                                e.text = Some(chunk.text.to_string());
                                e.logprobs = chunk
                                    .logprobs
                                    .map(|l| to_logprobs(&model, chunk.token_id, l));
                                on_event.call(e, ThreadsafeFunctionCallMode::NonBlocking);
                            })
                            .map_err(to_js)
                    })
                });
                busy.store(false, Ordering::Release);
                let last = match outcome {
                    Ok(out) if out.stop_reason == seedinfer_engine::StopReason::Aborted => {
                        let mut e = event("error");
                        e.error_code = Some("ABORTED".to_string());
                        e.error = Some("the generation was aborted".to_string());
                        e.result = Some(to_result(&model, out, &params));
                        e
                    }
                    Ok(out) => {
                        let mut e = event("done");
                        e.result = Some(to_result(&model, out, &params));
                        e
                    }
                    Err(err) => {
                        let mut e = event("error");
                        e.error_code = Some(err.status.0.to_string());
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
