//! Errors and panics crossing into JavaScript.
//!
//! Every failure the binding reports is a JS `Error` whose `code` property is seedinfer's stable code
//! (`INVALID_OPTION`, `CORRUPT_FILE`, …) and whose `message` is the human-readable reason: napi-rs creates the
//! error object with `napi_create_error(code, message)`, so the code travels as a field, never inside the text.

use napi::bindgen_prelude::{Env, JsError, Task, ToNapiValue, TypeName};
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

/// A worker task whose failures are coded. napi-rs's `Task::compute` must fail with napi-rs's own `Error`, whose
/// code is a fixed `Status`; [`Coded`] runs a `CodedTask` as a napi-rs task and settles its coded result on the JS
/// thread: a failure becomes the JS error object (with `code`) the promise rejects with, as is.
pub trait CodedTask: Send + Sized {
    type Output: Send + Sized + 'static;
    type JsValue: ToNapiValue + TypeName;

    /// The work, on a worker thread.
    fn compute(&mut self) -> Result<Self::Output>;

    /// The JS value of a successful computation, on the JS thread.
    fn resolve(&mut self, output: Self::Output) -> Result<Self::JsValue>;
}

/// A [`CodedTask`] as napi-rs runs it: `AsyncTask::new(Coded(task))`.
pub struct Coded<T>(pub T);

impl<T: CodedTask> Task for Coded<T> {
    type Output = Result<T::Output>;
    type JsValue = T::JsValue;

    fn compute(&mut self) -> napi::Result<Self::Output> {
        Ok(self.0.compute())
    }

    fn resolve(&mut self, env: Env, output: Self::Output) -> napi::Result<Self::JsValue> {
        output
            .and_then(|output| self.0.resolve(output))
            .map_err(|failure| napi::Error::from(JsError::from(failure).into_unknown(env)))
    }
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
