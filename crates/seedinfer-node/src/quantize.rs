//! `quantizeModel`: the engine's quantiser on a thread of its own (a rayon pool of `threads`, all cores by
//! default), with progress and the outcome streamed back through one thread-safe function, in order.

use crate::error::{catch_panics, coded, to_js, Result};
use crate::session::NativeAbortFlag;
use napi::bindgen_prelude::*;
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi_derive::napi;
use seedinfer_engine::{quantize_model as quantize, QuantFormat, QuantizeReport};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[napi(object)]
pub struct NativeQuantizeReport {
    pub format: String,
    pub out_bytes: f64,
    pub quantized_tensors: u32,
    pub quantized_weights: f64,
    pub quantized_bytes: f64,
    pub kept: Vec<String>,
    /// Tensors of the output by type name.
    pub tensor_types: HashMap<String, u32>,
    pub seconds: f64,
}

/// `progress` (with `tensor`, `doneWeights`, `totalWeights`), then `done` (with `report`) or `error` (with
/// `errorCode`, the stable code, and `error`, the message).
#[napi(object)]
pub struct NativeQuantizeEvent {
    pub kind: String,
    pub tensor: Option<String>,
    pub done_weights: Option<f64>,
    pub total_weights: Option<f64>,
    pub report: Option<NativeQuantizeReport>,
    /// The stable code of an `error` event (`ABORTED`, `CONTEXT_OVERFLOW`, …).
    pub error_code: Option<String>,
    /// The message of an `error` event.
    pub error: Option<String>,
}

type EventSink = ThreadsafeFunction<NativeQuantizeEvent, (), NativeQuantizeEvent, Status, false>;

fn event(kind: &str) -> NativeQuantizeEvent {
    NativeQuantizeEvent {
        kind: kind.to_string(),
        tensor: None,
        done_weights: None,
        total_weights: None,
        report: None,
        error_code: None,
        error: None,
    }
}

fn to_report(r: QuantizeReport) -> NativeQuantizeReport {
    NativeQuantizeReport {
        format: r.format.name().to_string(),
        out_bytes: r.out_bytes as f64,
        quantized_tensors: r.quantized_tensors as u32,
        quantized_weights: r.quantized_weights as f64,
        quantized_bytes: r.quantized_bytes as f64,
        kept: r.kept,
        tensor_types: r.tensor_types.into_iter().collect(),
        seconds: r.seconds,
    }
}

/// Starts quantising `source` (a GGUF file or Hugging Face directory) to `format` (one of [`quantize_formats`]) into `out`; events arrive through `on_event`, at most every 100 ms for progress.
/// The formats `quantize_model` writes, by option name.
#[napi]
pub fn quantize_formats() -> Vec<String> {
    QuantFormat::names().into_iter().map(String::from).collect()
}

#[napi(
    ts_args_type = "source: string, format: string, out: string, threads: number | undefined | null, onEvent: (event: NativeQuantizeEvent) => void, abort: NativeAbortFlag"
)]
pub fn quantize_model(
    source: String,
    format: String,
    out: String,
    threads: Option<u32>,
    on_event: EventSink,
    abort: &NativeAbortFlag,
) -> Result<()> {
    let format = QuantFormat::parse(&format).ok_or_else(|| {
        coded(
            "INVALID_OPTION",
            &format!(
                "format must be one of {}, got {format:?}",
                QuantFormat::names().join(", ")
            ),
        )
    })?;
    let threads = match threads {
        Some(0) => return Err(coded("INVALID_OPTION", "threads must be at least 1")),
        Some(n) if n > 1024 => {
            return Err(coded(
                "INVALID_OPTION",
                &format!("threads = {n} is too many"),
            ))
        }
        Some(n) => n as usize,
        None => std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    let flag = abort.flag();
    let spawned = std::thread::Builder::new()
        .name("seedinfer-quantize".into())
        .spawn(move || {
            let last = Mutex::new(Instant::now() - Duration::from_secs(1));
            let progress = |p: &seedinfer_engine::QuantizeProgress| {
                let Ok(mut last) = last.lock() else { return };
                if last.elapsed() < Duration::from_millis(100) && p.done_weights < p.total_weights {
                    return;
                }
                *last = Instant::now();
                let mut e = event("progress");
                e.tensor = Some(p.tensor.clone());
                e.done_weights = Some(p.done_weights as f64);
                e.total_weights = Some(p.total_weights as f64);
                on_event.call(e, ThreadsafeFunctionCallMode::NonBlocking);
            };
            let outcome = catch_panics(|| {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .thread_name(|i| format!("seedinfer-quantize-{i}"))
                    .build()
                    .map_err(|e| {
                        coded("INTERNAL", &format!("cannot start {threads} threads: {e}"))
                    })?;
                pool.install(|| quantize(source.as_ref(), format, out.as_ref(), &progress, &flag))
                    .map_err(to_js)
            });
            let last = match outcome {
                Ok(report) => {
                    let mut e = event("done");
                    e.report = Some(to_report(report));
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
    spawned.map(|_| ()).map_err(|e| {
        coded(
            "INTERNAL",
            &format!("cannot start a quantisation thread: {e}"),
        )
    })
}
