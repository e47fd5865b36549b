//! Errors and panics crossing into JavaScript.

use napi::{Error, Status};
use seedinfer_engine::EngineError;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// The engine's error as a JS error whose message starts with its stable code.
pub fn to_js(error: EngineError) -> Error {
    coded(error.code(), &error.to_string())
}

pub fn coded(code: &str, message: &str) -> Error {
    Error::new(Status::GenericFailure, format!("{code}: {message}"))
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_string())
}

/// Runs `work`, turning a panic into an `INTERNAL` error so that no panic crosses into Node.
pub fn catch_panics<T>(work: impl FnOnce() -> napi::Result<T>) -> napi::Result<T> {
    catch_unwind(AssertUnwindSafe(work)).unwrap_or_else(|payload| {
        Err(coded(
            "INTERNAL",
            &format!("engine panicked: {}", panic_message(payload.as_ref())),
        ))
    })
}

/// Runs `work`, turning engine errors and panics into JS errors.
pub fn guarded<T>(work: impl FnOnce() -> Result<T, EngineError>) -> napi::Result<T> {
    catch_panics(|| work().map_err(to_js))
}
