//! The paged cache of a model with sliding-window layers (the Gemma 3 fixture: five local layers with a window of 8
//! positions, then a global one) gives back the local layers' rows of blocks every later query has passed, and
//! still gives the bits of a cache that keeps them: in chunks and token by token, after a rewind, a fork, a save
//! and load, and a prefix reused from another session.

use seedinfer_engine::kv_cache::PagedKv;
use seedinfer_engine::{
    GenerateParams, KvCacheOptions, KvDtype, LoadOptions, Model, Session, Think, XAttention,
};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

mod common;
use common::{chunk_plan, greedy, lazyllm_half_from, logits_in_chunks, paged_logits};

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/architectures/gemma3")
}

fn load(dir: &Path, dtype: KvDtype, prefix_caching: bool) -> Arc<Model> {
    let options = LoadOptions {
        threads: Some(2),
        kv_cache: KvCacheOptions {
            dtype,
            prefix_caching,
            ..Default::default()
        },
        ..Default::default()
    };
    Arc::new(Model::load(dir, &options).expect("loads"))
}

fn long_prompt() -> Vec<u32> {
    let text = std::fs::read_to_string(fixture().join("reference.json")).expect("reference");
    let reference: Value = serde_json::from_str(&text).expect("json");
    reference["long_prompt"]["tokens"]
        .as_array()
        .expect("tokens")
        .iter()
        .map(|t| t.as_u64().expect("id") as u32)
        .collect()
}

/// Generates `n` greedy tokens after `prompt` in `session`; returns them and the logits they came from last.
fn continue_greedy(session: &mut Session, prompt: &[u32], n: usize) -> (Vec<u32>, Vec<f32>) {
    let out = session
        .generate(prompt, &greedy(n), &AtomicBool::new(false), &mut |_| {})
        .expect("generates");
    let logits = session.last_logits().expect("logits").to_vec();
    (out.token_ids, logits)
}

/// The same, in a fresh session of a model without prefix caching.
fn fresh_greedy(model: &Arc<Model>, prompt: &[u32], n: usize) -> (Vec<u32>, Vec<f32>) {
    let mut session = Session::new(Arc::clone(model), 4200).expect("session");
    continue_greedy(&mut session, prompt, n)
}

#[test]
fn a_4k_prompt_keeps_the_window_rows_only_and_the_bits_of_a_full_cache() {
    let tokens = long_prompt();
    let model = load(&fixture(), KvDtype::F32, true);
    let mut session = Session::new(Arc::clone(&model), 4200).expect("session");
    let (_, logits) = continue_greedy(&mut session, &tokens, 1);
    let vocab = model.config.vocab_size;
    let full_cache = paged_logits(&model, &tokens, &[tokens.len()]);
    assert!(
        logits[..] == full_cache[full_cache.len() - vocab..],
        "logits differ from a cache that keeps every row"
    );
    // The same configuration without a window keeps every layer's rows of every position.
    let dir = tempfile::tempdir().expect("temp dir");
    for entry in std::fs::read_dir(fixture()).expect("fixture") {
        let path = entry.expect("entry").path();
        std::fs::copy(&path, dir.path().join(path.file_name().expect("name"))).expect("copy");
    }
    let config_path = dir.path().join("config.json");
    let mut config: Value =
        serde_json::from_str(&std::fs::read_to_string(&config_path).expect("config"))
            .expect("json");
    config["layer_types"] = serde_json::json!(vec!["full_attention"; 6]);
    std::fs::write(&config_path, config.to_string()).expect("write config");
    let unwindowed = load(dir.path(), KvDtype::F32, true);
    let mut full = Session::new(Arc::clone(&unwindowed), 4200).expect("session");
    continue_greedy(&mut full, &tokens, 1);
    let (windowed_bytes, full_bytes) = (session.kv_held_bytes(), full.kv_held_bytes());
    eprintln!(
        "4096 positions, f32 KV: {windowed_bytes} bytes with a window of 8 on 5 of 6 layers, {full_bytes} without \
         ({:.3}x)",
        windowed_bytes as f64 / full_bytes as f64
    );
    // One layer in six keeps every position; the local ones the first block, the window, the rewind margin of 64
    // and at most two blocks more: 7 blocks of 32 positions of 128.
    let per_layer_block = full_bytes / 128 / 6;
    assert!(windowed_bytes <= full_bytes / 6 + 7 * 5 * per_layer_block);
    // The prefix cache took the lighter blocks too: nothing else holds memory.
    assert_eq!(model.kv_pool.stats().used_bytes, windowed_bytes);
}

#[test]
fn chunks_and_single_tokens_give_the_same_bits_when_rows_are_given_back() {
    let tokens = &long_prompt()[..700];
    let model = load(&fixture(), KvDtype::F32, false);
    let kept = paged_logits(&model, tokens, &[700]);
    for plan in [chunk_plan(700, &[7, 320, 64]), chunk_plan(700, &[100])] {
        let mut cache = PagedKv::new(model.kv_pool.clone(), 700);
        let released = logits_in_chunks(&model, &mut cache, tokens, &plan, |c, total| {
            c.release_out_of_window();
            c.reserve(total).expect("fits the budget")
        });
        assert!(
            released == kept,
            "logits differ from a cache that keeps every row"
        );
    }
}

#[test]
fn rewinds_recompute_what_the_window_gave_back() {
    let tokens = long_prompt();
    for dtype in [KvDtype::F32, KvDtype::Int8] {
        let model = load(&fixture(), dtype, false);
        let mut session = Session::new(Arc::clone(&model), 2048).expect("session");
        continue_greedy(&mut session, &tokens[..1000], 1);
        // A rewind by one keeps the cache: the new last token is fed again.
        session.rewind(1).expect("rewinds");
        assert_eq!(session.cached_token_count(), 999);
        let after = continue_greedy(&mut session, &[], 4);
        assert_eq!(after, fresh_greedy(&model, &tokens[..1000], 4), "{dtype:?}");
        // A rewind past the window and its margin forgets the cache: all 404 tokens are fed again.
        session.rewind(600).expect("rewinds");
        assert_eq!(
            (session.cached_token_count(), session.token_count()),
            (0, 404)
        );
        let after = continue_greedy(&mut session, &[], 4);
        assert_eq!(after, fresh_greedy(&model, &tokens[..404], 4), "{dtype:?}");
    }
}

#[test]
fn forks_and_saved_sessions_keep_the_bits() {
    let tokens = long_prompt();
    let model = load(&fixture(), KvDtype::F16, false);
    let mut session = Session::new(Arc::clone(&model), 2048).expect("session");
    continue_greedy(&mut session, &tokens[..1000], 1);
    let mut fork = session.fork();
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("session.bin");
    session.save(&path).expect("saves");
    let mut loaded = Session::load(Arc::clone(&model), &path).expect("loads");
    let expected = continue_greedy(&mut session, &tokens[1000..1010], 5);
    assert_eq!(continue_greedy(&mut fork, &tokens[1000..1010], 5), expected);
    assert_eq!(
        continue_greedy(&mut loaded, &tokens[1000..1010], 5),
        expected
    );
    // The file holds the local layers' rows of the window only.
    let bytes = std::fs::metadata(&path).expect("file").len() as usize;
    assert!(bytes < session.kv_held_bytes() / 2 + 1000 * 4 * 3 + 200_000);
}

#[test]
fn a_reused_prefix_stops_where_its_window_would_reach_rows_given_back() {
    let tokens = long_prompt();
    let model = load(&fixture(), KvDtype::F32, true);
    let plain = load(&fixture(), KvDtype::F32, false);
    let mut first = Session::new(Arc::clone(&model), 2048).expect("session");
    continue_greedy(&mut first, &tokens[..1000], 1);
    // Continuing the whole conversation: its last blocks still hold their window.
    let prompt: Vec<u32> = tokens[..1100].to_vec();
    let mut second = Session::new(Arc::clone(&model), 2048).expect("session");
    let out = second
        .generate(&prompt, &greedy(3), &AtomicBool::new(false), &mut |_| {})
        .expect("generates");
    assert_eq!(out.timings.reused_prompt_tokens, 992);
    assert_eq!(
        (
            out.token_ids,
            second.last_logits().expect("logits").to_vec()
        ),
        fresh_greedy(&plain, &prompt, 3)
    );
    // Sharing only the first 600 tokens: blocks 1 to 28 of the first session gave back their local rows, so only
    // the first block is reused.
    let prompt: Vec<u32> = tokens[..600]
        .iter()
        .chain(&tokens[2000..2050])
        .copied()
        .collect();
    let mut third = Session::new(Arc::clone(&model), 2048).expect("session");
    let out = third
        .generate(&prompt, &greedy(3), &AtomicBool::new(false), &mut |_| {})
        .expect("generates");
    assert_eq!(out.timings.reused_prompt_tokens, 32);
    assert_eq!(
        (out.token_ids, third.last_logits().expect("logits").to_vec()),
        fresh_greedy(&plain, &prompt, 3)
    );
}

/// XAttention on a model with sliding-window layers: the global layer's prefill attends to the blocks its estimate
/// selects (fewer than causal attention's), the local layers stay dense, and `threshold: 1` gives the dense tokens.
/// Token pruning is refused there.
#[test]
fn xattention_prefills_the_global_layers_sparsely() {
    let model = load(&fixture(), KvDtype::F16, false);
    let prompt = long_prompt();
    let sparse = |threshold| GenerateParams {
        xattention: Some(XAttention {
            threshold,
            ..XAttention::default()
        }),
        ..greedy(12)
    };
    let run = |params: &GenerateParams| {
        let mut session = Session::new(Arc::clone(&model), 4200).expect("session");
        session
            .generate(&prompt, params, &AtomicBool::new(false), &mut |_| {})
            .expect("generates")
    };
    let dense = run(&greedy(12));
    assert_eq!(run(&sparse(1.0)).token_ids, dense.token_ids);
    let out = run(&sparse(0.5));
    assert_eq!(out.token_ids.len(), 12);
    let (selected, causal) = (out.prefill.selected_blocks, out.prefill.causal_blocks);
    assert!(
        causal > 0 && selected < causal,
        "{selected} of {causal} blocks"
    );
    let lazy = GenerateParams {
        prefill: lazyllm_half_from(1),
        ..greedy(2)
    };
    let mut session = Session::new(Arc::clone(&model), 4200).expect("session");
    let e = session
        .generate(&prompt[..40], &lazy, &AtomicBool::new(false), &mut |_| {})
        .expect_err("refused");
    assert_eq!(e.code(), "INVALID_OPTION");
    assert!(e.to_string().contains("sliding-window"), "{e}");
}

/// ThinK on a model with sliding-window layers: the global layer's old keys keep half their channels (16-channel
/// heads: λ = 0.5 keeps 8), the local layers' keys stay whole, `ratio: 0` gives the unpruned tokens, and a saved
/// session loads and continues as the session does.
#[test]
fn think_prunes_the_global_layers_keys() {
    let model = load(&fixture(), KvDtype::F16, false);
    let prompt = long_prompt();
    let session = |ratio| {
        let mut session = Session::new(Arc::clone(&model), 4200).expect("session");
        session
            .set_think(Some(Think { ratio, recent: 32 }))
            .expect("ThinK");
        session
    };
    let (dense, _) = fresh_greedy(&model, &prompt, 12);
    let mut exact = session(0.0);
    assert_eq!(continue_greedy(&mut exact, &prompt, 12).0, dense);
    let mut pruning = session(0.5);
    let out = pruning
        .generate(&prompt, &greedy(12), &AtomicBool::new(false), &mut |_| {})
        .expect("generates");
    assert_eq!(out.think.kept_channels, 8);
    assert_eq!(out.think.pruned_blocks, (prompt.len() - 32) / 32);
    assert!(pruning.kv_held_bytes() < exact.kv_held_bytes());
    let file = std::env::temp_dir().join(format!(
        "seedinfer-gemma-think-{}.session",
        std::process::id()
    ));
    pruning.save(&file).expect("saves");
    let mut loaded = Session::load(Arc::clone(&model), &file).expect("loads");
    std::fs::remove_file(&file).expect("removes");
    assert_eq!(loaded.kv_held_bytes(), pruning.kv_held_bytes());
    assert_eq!(
        continue_greedy(&mut loaded, &[5, 6, 7], 8),
        continue_greedy(&mut pruning, &[5, 6, 7], 8)
    );
}
