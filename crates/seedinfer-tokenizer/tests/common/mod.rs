#![allow(dead_code)]

use std::path::PathBuf;

/// The stories260K Hugging Face model directory (override with `SEEDINFER_STORIES_DIR`).
pub fn stories_dir() -> PathBuf {
    match std::env::var_os("SEEDINFER_STORIES_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../../shared/models/stories260K"
        )),
    }
}

/// Strings exercising ASCII, whitespace, punctuation, digits and multi-byte UTF-8.
pub const SAMPLES: &[&str] = &[
    "Once upon a time",
    "Once upon a time, there was a little girl named Lily.",
    "The cat sat on the mat.",
    "hello world",
    " leading space",
    "trailing space ",
    "  two  spaces  inside  ",
    "line one\nline two\n\nline four",
    "tabs\tand\ttabs",
    "numbers 12345 and 3.14159",
    "Punctuation!? Yes... (maybe) [ok] {x}",
    "don't won't I'll we've",
    "café naïve résumé",
    "€100 costs ~£85",
    "日本語のテキスト",
    "emoji 😀🎉 party",
    "Привет, мир!",
    "mixed: a€b😀c日d",
    "UPPER lower MiXeD",
    "x",
    "",
    "<s> looks special but is text",
];
