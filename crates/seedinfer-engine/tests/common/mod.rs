//! Shared by the integration tests: where stories260K lives and what it must generate.

use std::path::PathBuf;

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

pub fn read_json(name: &str) -> serde_json::Value {
    let path = stories_dir().join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The reference greedy continuation of `[1]` (200 token ids).
pub fn expected_greedy() -> Vec<u32> {
    read_json("expected_greedy.json")["greedy_token_ids"]
        .as_array()
        .expect("greedy_token_ids")
        .iter()
        .map(|v| v.as_u64().expect("token id") as u32)
        .collect()
}
