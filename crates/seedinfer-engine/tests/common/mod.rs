//! Shared by the integration tests: where stories260K lives and what it must generate.

use seedinfer_engine::{GenerateParams, Model, SamplingParams, Session};
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

/// The stories260K checkpoint: `$SEEDINFER_STORIES_DIR` or `../shared/models/stories260K` beside the repository.
pub fn stories_dir() -> PathBuf {
    std::env::var_os("SEEDINFER_STORIES_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../../shared/models/stories260K"
            ))
        })
}

#[allow(dead_code)]
pub fn read_json(name: &str) -> serde_json::Value {
    let path = stories_dir().join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The reference greedy continuation of `[1]` (200 token ids).
#[allow(dead_code)]
pub fn expected_greedy() -> Vec<u32> {
    read_json("expected_greedy.json")["greedy_token_ids"]
        .as_array()
        .expect("greedy_token_ids")
        .iter()
        .map(|v| v.as_u64().expect("token id") as u32)
        .collect()
}

/// Greedy decoding of `max_tokens` tokens that ignores end-of-generation tokens.
#[allow(dead_code)] // not every test binary that includes this module uses every helper
pub fn greedy(max_tokens: usize) -> GenerateParams {
    GenerateParams {
        max_tokens,
        sampling: SamplingParams {
            temperature: 0.0,
            ..Default::default()
        },
        ignore_eos: true,
        ..Default::default()
    }
}

/// The greedy continuation of `[1]` (BOS) in a fresh 512-token session.
#[allow(dead_code)]
pub fn greedy_from_bos(model: &Arc<Model>, n: usize) -> Vec<u32> {
    let mut session = Session::new(Arc::clone(model), 512).expect("session");
    session
        .generate(&[1], &greedy(n), &AtomicBool::new(false), &mut |_| {})
        .expect("generates")
        .token_ids
}
