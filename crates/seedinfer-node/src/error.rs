//! Errors and panics crossing into JavaScript.
//!
//! Every failure the binding reports is a JS `Error` whose `code` property is seedinfer's stable code
//! (`INVALID_OPTION`, `CORRUPT_FILE`, …) and whose `message` is the human-readable reason: napi-rs creates the
//! error object with `napi_create_error(code, message)`, so the code travels as a field, never inside the text.

use napi::bindgen_prelude::{Env, JsError};
use seedinfer_engine::EngineError;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// A stable error code, the `code` property of the JS error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Code(pub &'static str);

impl AsRef<str> for Code {
    fn as_ref(&self) -> &str {
        self.0
    }
}

/// A failure on its way to JavaScript: napi-rs throws it (or rejects with it) as an `Error` with `code`.
pub type Failure = napi::Error<Code>;

/// The result type of every binding function: `#[napi]` functions returning it throw a coded error.
pub type Result<T> = std::result::Result<T, Failure>;

/// A failure with `code` and `message`.
pub fn coded(code: &'static str, message: &str) -> Failure {
    napi::Error::new(Code(code), message.to_string())
}

/// The engine's error, with its own code.
pub fn to_js(error: EngineError) -> Failure {
    coded(error.code(), &error.to_string())
}

/// Turns a worker task's failure into the JS error its promise rejects with (on the JS thread).
///
/// `Task::compute` must return napi-rs's own `Error`, whose code is a fixed `Status`; tasks therefore compute a
/// `Result<T>` of ours and settle it here: the JS error object is built with its code and handed to napi-rs
/// as a reference, which the rejection reuses as is.
pub fn settle<T>(env: Env, outcome: Result<T>) -> napi::Result<T> {
    outcome.map_err(|failure| napi::Error::from(JsError::from(failure).into_unknown(env)))
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_string())
}

/// Runs `work`, turning a panic into an `INTERNAL` error so that no panic crosses into Node.
pub fn catch_panics<T>(work: impl FnOnce() -> Result<T>) -> Result<T> {
    catch_unwind(AssertUnwindSafe(work)).unwrap_or_else(|payload| {
        Err(coded(
            "INTERNAL",
            &format!("engine panicked: {}", panic_message(payload.as_ref())),
        ))
    })
}

/// Runs `work`, turning engine errors and panics into coded failures.
pub fn guarded<T>(work: impl FnOnce() -> std::result::Result<T, EngineError>) -> Result<T> {
    catch_panics(|| work().map_err(to_js))
}
