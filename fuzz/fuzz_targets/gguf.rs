#![no_main]
// Body: seedinfer_engine::fuzz_inputs::gguf (replayed on stable by the engine's tests/fuzz_corpus.rs).
libfuzzer_sys::fuzz_target!(|data: &[u8]| seedinfer_engine::fuzz_inputs::gguf(data));
