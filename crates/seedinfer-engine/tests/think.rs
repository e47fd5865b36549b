//! ThinK key-channel pruning (issue 24) in sessions, on the qwen3 fixture (32-channel heads: λ = 0.4 keeps 24):
//! λ = 0 changes nothing (the exactness switch), a prefill prunes the blocks before its recent window and the
//! session holds fewer bytes, decoding and forks go on over pruned blocks, a rewind into one feeds its tokens
//! again, and what ThinK cannot do yet is refused.

use seedinfer_engine::{
    BoundedCache, EngineError, GenerateParams, KvCacheOptions, KvDtype, LoadOptions, Model,
    Session, Think, XAttention,
};
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

mod common;
use common::greedy;

fn load(dtype: KvDtype) -> Arc<Model> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/architectures/qwen3");
    let options = LoadOptions {
        threads: Some(2),
        kv_cache: KvCacheOptions {
            dtype,
            prefix_caching: false,
            ..Default::default()
        },
        ..Default::default()
    };
    Arc::new(Model::load(&dir, &options).expect("qwen3 fixture loads"))
}

fn session(model: &Arc<Model>, think: Option<Think>) -> Session {
    let mut session = Session::new(Arc::clone(model), 1024).unwrap();
    session.set_think(think).unwrap();
    session
}

/// A prompt of `len` tokens of the fixture's vocabulary.
fn prompt(len: usize) -> Vec<u32> {
    (0..len as u32)
        .map(|i| 5 + (i * 37 + i / 3) % 300)
        .collect()
}

fn run(session: &mut Session, prompt: &[u32], params: &GenerateParams) -> (Vec<u32>, usize) {
    let out = session
        .generate(prompt, params, &AtomicBool::new(false), &mut |_| {})
        .expect("generates");
    (out.token_ids, out.think.pruned_blocks)
}

#[test]
fn ratio_zero_gives_the_unpruned_tokens() {
    for dtype in [KvDtype::F16, KvDtype::Int8] {
        let model = load(dtype);
        let prompt = prompt(300);
        let (plain, _) = run(&mut session(&model, None), &prompt, &greedy(24));
        let exact = Think {
            ratio: 0.0,
            recent: 32,
        };
        let mut pruning = session(&model, Some(exact));
        let (tokens, pruned) = run(&mut pruning, &prompt, &greedy(24));
        assert_eq!(tokens, plain, "{dtype:?}");
        assert_eq!(pruned, 0);
        // Below one whole eight of channels dropped, nothing is pruned either.
        let small = Think {
            ratio: 0.2,
            recent: 32,
        };
        assert_eq!(
            run(&mut session(&model, Some(small)), &prompt, &greedy(24)).0,
            plain
        );
    }
}

#[test]
fn a_prefill_prunes_the_blocks_before_its_recent_window() {
    for dtype in [KvDtype::F16, KvDtype::Int8] {
        let model = load(dtype);
        let prompt = prompt(300);
        let mut plain = session(&model, None);
        let (plain_tokens, _) = run(&mut plain, &prompt, &greedy(16));
        let mut pruning = session(&model, Some(Think::default()));
        let (tokens, pruned) = run(&mut pruning, &prompt, &greedy(16));
        // Blocks of 32 positions wholly before the last 32 of the 300 prompt tokens.
        assert_eq!(pruned, (300 - 32) / 32, "{dtype:?}");
        assert_eq!(tokens.len(), 16);
        // The first token comes from the prefill's logits, before any pruning.
        assert_eq!(tokens[0], plain_tokens[0]);
        let cfg = &model.config;
        // 8 of 32 channels dropped per key row of every pruned block (an int8 cache's first block is f16).
        let per_block = cfg.layers * cfg.kv_heads * 32 * (cfg.head_dim - 24);
        let element = if dtype == KvDtype::Int8 { 1 } else { 2 };
        let saved = per_block * 2 + (pruned - 1) * per_block * element;
        assert_eq!(
            pruning.kv_held_bytes(),
            plain.kv_held_bytes() - saved,
            "{dtype:?}"
        );
        // A second turn prunes the blocks its prefill completes, with its own channels.
        let (more, pruned_again) = run(&mut pruning, &prompt[..100], &greedy(4));
        assert_eq!(more.len(), 4);
        assert_eq!(pruned_again, (300 + 16 + 100 - 32) / 32 - pruned);
    }
}

#[test]
fn forks_and_rewinds_go_on_over_pruned_blocks() {
    let model = load(KvDtype::F16);
    let mut pruning = session(&model, Some(Think::default()));
    run(&mut pruning, &prompt(300), &greedy(8));
    let mut fork = pruning.fork();
    let (a, _) = run(&mut pruning, &[7, 8, 9], &greedy(8));
    let (b, _) = run(&mut fork, &[7, 8, 9], &greedy(8));
    assert_eq!(a, b, "a fork continues as the session does");
    // A rewind to position 70 cuts inside a pruned block: its cache keeps the 64 positions before it and the session
    // feeds the rest again.
    let count = pruning.token_count();
    pruning.rewind(count - 70).unwrap();
    assert_eq!(pruning.token_count(), 70);
    assert_eq!(pruning.cached_token_count(), 64);
    let (again, _) = run(&mut pruning, &[], &greedy(8));
    assert_eq!(again.len(), 8);
    assert_eq!(pruning.cached_token_count(), 77);
}

#[test]
fn what_think_cannot_do_is_refused() {
    let model = load(KvDtype::F16);
    let refused = |r: Result<(), EngineError>| {
        let e = r.expect_err("refused");
        assert_eq!(e.code(), "INVALID_OPTION", "{e}");
        e.to_string()
    };
    let bad = Think {
        ratio: 1.0,
        recent: 32,
    };
    assert!(refused(
        Session::new(Arc::clone(&model), 512)
            .unwrap()
            .set_think(Some(bad))
    )
    .contains("ratio"));
    let mut pruning = session(&model, Some(Think::default()));
    let bound = BoundedCache {
        max_tokens: 256,
        sinks: 4,
        sirllm: None,
    };
    assert!(refused(pruning.set_bounded_cache(Some(bound))).contains("ThinK"));
    let sparse = GenerateParams {
        xattention: Some(XAttention::default()),
        ..greedy(4)
    };
    let e = pruning
        .generate(&prompt(40), &sparse, &AtomicBool::new(false), &mut |_| {})
        .expect_err("refused");
    assert!(e.to_string().contains("ThinK"), "{e}");
}

/// A saved ThinK session (its pruned blocks, in their kept channels, and its settings) loads and goes on as the
/// session does, pruning the next prompt's blocks alike; its bytes are the pruned ones.
#[test]
fn a_saved_think_session_continues_as_the_session_does() {
    for dtype in [KvDtype::F16, KvDtype::Int8] {
        let model = load(dtype);
        let mut session = session(&model, Some(Think::default()));
        run(&mut session, &prompt(300), &greedy(8));
        assert!(session.kv_held_bytes() > 0);
        let file = std::env::temp_dir().join(format!(
            "seedinfer-think-{}-{dtype:?}.session",
            std::process::id()
        ));
        session.save(&file).unwrap();
        let mut loaded = Session::load(Arc::clone(&model), &file).unwrap();
        std::fs::remove_file(&file).unwrap();
        assert_eq!(loaded.think(), Some(&Think::default()));
        assert_eq!(loaded.kv_held_bytes(), session.kv_held_bytes(), "{dtype:?}");
        let next = prompt(150);
        assert_eq!(
            run(&mut loaded, &next, &greedy(16)),
            run(&mut session, &next, &greedy(16))
        );
        assert_eq!(loaded.kv_held_bytes(), session.kv_held_bytes());
    }
}
