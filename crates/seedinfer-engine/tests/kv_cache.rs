//! The paged KV cache (issue 5) against stories260K: the same logits as a contiguous cache and under any batching
//! or thread count, prefix reuse, forks, rewind, save/load, the byte budget, and the f16/int8 caches.

use seedinfer_engine::kv_cache::ContiguousKv;
use seedinfer_engine::{
    GenerateParams, KvCacheOptions, KvDtype, LoadOptions, Model, Session, WeightFormat,
};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

mod common;
use common::{chunk_plan, greedy, greedy_from_bos, logits_in_chunks, paged_logits, stories_dir};

fn kv(dtype: KvDtype, block_size: usize) -> KvCacheOptions {
    KvCacheOptions {
        dtype,
        block_size,
        ..Default::default()
    }
}

fn load_with(
    threads: usize,
    kv_cache: KvCacheOptions,
    weights: Option<WeightFormat>,
) -> Arc<Model> {
    let options = LoadOptions {
        threads: Some(threads),
        weights,
        kv_cache,
        ..Default::default()
    };
    Arc::new(Model::load(&stories_dir(), &options).expect("stories260K loads"))
}

fn load(kv_cache: KvCacheOptions) -> Arc<Model> {
    load_with(2, kv_cache, None)
}

/// BOS followed by stories260K's own greedy continuation: `len` tokens of natural text.
fn story(len: usize) -> Vec<u32> {
    let model = load(kv(KvDtype::F32, 32));
    let mut tokens = vec![1];
    tokens.extend(greedy_from_bos(&model, len - 1));
    tokens
}

fn no_abort() -> AtomicBool {
    AtomicBool::new(false)
}

fn generate(session: &mut Session, prompt: &[u32], params: &GenerateParams) -> Vec<u32> {
    session
        .generate(prompt, params, &no_abort(), &mut |_| {})
        .expect("generates")
        .token_ids
}

/// Greedy continuation of `prompt` in a fresh session of `model`.
fn fresh(model: &Arc<Model>, prompt: &[u32], n: usize) -> Vec<u32> {
    generate(
        &mut Session::new(Arc::clone(model), 512).expect("session"),
        prompt,
        &greedy(n),
    )
}

/// Everything a session holds (tokens, pending token, last logits, cached keys and values) as its saved bytes.
fn state(session: &Session) -> Vec<u8> {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("state.session");
    session.save(&path).expect("saves");
    std::fs::read(&path).expect("reads back")
}

#[test]
fn paged_cache_gives_the_same_logits_as_a_contiguous_cache() {
    let tokens = story(300);
    let plan = chunk_plan(300, &[100, 37]);
    for block_size in [8, 32] {
        let model = load(kv(KvDtype::F32, block_size));
        let c = &model.config;
        let mut contiguous =
            ContiguousKv::new(c.layers, c.kv_heads * c.head_dim, c.head_dim, block_size);
        let reference = logits_in_chunks(&model, &mut contiguous, &tokens, &plan, |_, _| {});
        let paged = paged_logits(&model, &tokens, &plan);
        assert!(
            paged == reference,
            "block size {block_size}: paged and contiguous logits differ"
        );
    }
}

#[test]
fn a_prompt_in_one_chunk_equals_the_same_prompt_token_by_token() {
    let tokens = story(300);
    let one_chunk = [300];
    let by_token = chunk_plan(300, &[]);
    let mixed = chunk_plan(300, &[7, 120, 64]);
    // Every dtype: int8 also scales keys and queries by channel past the first block.
    for dtype in [KvDtype::F32, KvDtype::F16, KvDtype::Int8] {
        let mut reference = None;
        for threads in [1, 4] {
            let model = load_with(threads, kv(dtype, 32), None);
            for plan in [&one_chunk[..], &by_token, &mixed] {
                let logits = paged_logits(&model, &tokens, plan);
                let reference = reference.get_or_insert_with(|| logits.clone());
                assert!(
                    logits == *reference,
                    "{dtype:?}, threads {threads}, {} chunks: logits differ from one chunk on one thread",
                    plan.len()
                );
            }
        }
    }
}

#[test]
fn a_session_reusing_a_cached_prefix_generates_what_a_fresh_session_does() {
    let bs = 32;
    let caching = load(kv(KvDtype::F16, bs));
    let plain = load(KvCacheOptions {
        prefix_caching: false,
        ..kv(KvDtype::F16, bs)
    });
    let text = story(300);
    let prompt = &text[..150];

    let mut a = Session::new(caching.clone(), 512).unwrap();
    let out_a = a
        .generate(prompt, &greedy(30), &no_abort(), &mut |_| {})
        .unwrap();
    assert_eq!(
        out_a.timings.reused_prompt_tokens, 0,
        "nothing was cached yet"
    );
    let hits_before = caching.kv_pool.stats().prefix_hit_blocks;

    let mut b = Session::new(caching.clone(), 512).unwrap();
    let out_b = b
        .generate(prompt, &greedy(30), &no_abort(), &mut |_| {})
        .unwrap();
    // Whole blocks, always leaving at least one prompt token to compute.
    let expected_reuse = (prompt.len() - 1) / bs * bs;
    assert_eq!(out_b.timings.reused_prompt_tokens, expected_reuse);
    assert!(expected_reuse > 0 && expected_reuse < prompt.len());
    assert_eq!(out_b.token_ids, out_a.token_ids);
    let stats = caching.kv_pool.stats();
    assert_eq!(
        stats.prefix_hit_blocks - hits_before,
        (expected_reuse / bs) as u64
    );
    assert_eq!(
        stats.blocks_shared,
        expected_reuse / bs,
        "the reused blocks are held by A, B and the cache: {stats:?}"
    );

    let mut p = Session::new(plain.clone(), 512).unwrap();
    let out_p = p
        .generate(prompt, &greedy(30), &no_abort(), &mut |_| {})
        .unwrap();
    assert_eq!(out_p.token_ids, out_a.token_ids);
    assert_eq!(out_p.timings.reused_prompt_tokens, 0);
    let out_p2 = Session::new(plain.clone(), 512)
        .unwrap()
        .generate(prompt, &greedy(30), &no_abort(), &mut |_| {})
        .unwrap();
    assert_eq!(out_p2.timings.reused_prompt_tokens, 0);
    assert_eq!(plain.kv_pool.stats().prefix_hit_blocks, 0);

    // Shares only the first 70 tokens, then goes on differently.
    let diverging: Vec<u32> = text[..70].iter().chain(&text[200..280]).copied().collect();
    let hits_before = caching.kv_pool.stats().prefix_hit_blocks;
    let out_c = Session::new(caching.clone(), 512)
        .unwrap()
        .generate(&diverging, &greedy(30), &no_abort(), &mut |_| {})
        .unwrap();
    assert_eq!(out_c.timings.reused_prompt_tokens, 70 / bs * bs);
    assert_eq!(out_c.token_ids, fresh(&plain, &diverging, 30));
    assert_eq!(
        caching.kv_pool.stats().prefix_hit_blocks - hits_before,
        (70 / bs) as u64
    );

    // A prompt of whole cached blocks: the last block is recomputed, as a prompt token must be.
    let aligned = &prompt[..4 * bs];
    let first_pass = fresh(&caching, aligned, 10);
    let out_d = Session::new(caching.clone(), 512)
        .unwrap()
        .generate(aligned, &greedy(10), &no_abort(), &mut |_| {})
        .unwrap();
    assert_eq!(out_d.timings.reused_prompt_tokens, 3 * bs);
    assert_eq!(out_d.token_ids, first_pass);
    assert_eq!(out_d.token_ids, fresh(&plain, aligned, 10));

    drop(b);
    assert_eq!(caching.kv_pool.stats().blocks_shared, 0);
}

#[test]
fn forks_continue_exactly_as_fresh_sessions() {
    let bs = 32;
    let model = load(kv(KvDtype::F16, bs));
    let plain = load(KvCacheOptions {
        prefix_caching: false,
        ..kv(KvDtype::F16, bs)
    });
    let text = story(300);
    let mut parent = Session::new(model.clone(), 512).unwrap();
    generate(&mut parent, &text[..45], &greedy(10));
    // 45 prompt tokens + 9 fed generated ones: the last block is partly filled.
    assert_eq!(parent.token_count(), 55);
    assert_ne!((parent.token_count() - 1) % bs, 0);
    let history = parent.all_tokens();

    let used_before = model.kv_pool.stats().used_bytes;
    let mut child = parent.fork();
    let stats = model.kv_pool.stats();
    assert_eq!(stats.used_bytes, used_before, "a fork copies no block");
    assert_eq!(child.kv_held_bytes(), parent.kv_held_bytes());
    assert_eq!(
        stats.blocks_shared, 1,
        "the full block is shared: {stats:?}"
    );
    assert_eq!(child.all_tokens(), history);

    let (prompt_p, prompt_c) = (&text[100..120], &text[200..213]);
    let with = |prompt: &[u32]| -> Vec<u32> { history.iter().chain(prompt).copied().collect() };
    let mut fresh_p = Session::new(plain.clone(), 512).unwrap();
    let mut fresh_c = Session::new(plain.clone(), 512).unwrap();
    let expected_p = generate(&mut fresh_p, &with(prompt_p), &greedy(15));
    let expected_c = generate(&mut fresh_c, &with(prompt_c), &greedy(15));
    assert_ne!(expected_p, expected_c);

    // Alternating, so each writes while the other holds blocks it shared.
    let (mut got_p, mut got_c) = (Vec::new(), Vec::new());
    for round in 0..3 {
        let (pp, pc) = if round == 0 {
            (prompt_p, prompt_c)
        } else {
            (&[][..], &[][..])
        };
        got_p.extend(generate(&mut parent, pp, &greedy(5)));
        got_c.extend(generate(&mut child, pc, &greedy(5)));
    }
    assert_eq!(got_p, expected_p);
    assert_eq!(got_c, expected_c);
    // Bit for bit the same keys, values and logits as the fresh sessions.
    assert!(
        state(&parent) == state(&fresh_p),
        "the parent's state differs"
    );
    assert!(state(&child) == state(&fresh_c), "the fork's state differs");
    // The partly filled block was copied, not shared, once both wrote.
    assert!(model.kv_pool.stats().used_bytes > used_before);
}

#[test]
fn rewind_then_regenerate_equals_never_having_generated() {
    let bs = 32;
    let model = load(kv(KvDtype::F16, bs));
    let text = story(100);
    let prompt = &text[..50];
    let mut session = Session::new(model.clone(), 512).unwrap();
    let first = generate(&mut session, prompt, &greedy(40));
    assert_eq!(session.token_count(), 90);
    let never_rewound = state(&session);

    session.rewind(40).unwrap();
    assert_eq!(session.token_count(), 50);
    assert_eq!(session.all_tokens(), prompt);
    assert_eq!(generate(&mut session, &[], &greedy(40)), first);
    assert!(state(&session) == never_rewound);

    // Into the generated tokens.
    session.rewind(10).unwrap();
    assert_eq!(generate(&mut session, &[], &greedy(10)), first[30..]);
    assert!(state(&session) == never_rewound);

    // Into the middle of a block, inside the prompt: block 0 is in the prefix cache, so it is copied on write.
    for keep in [37, 20] {
        assert_ne!(keep % bs, 0);
        let count = session.token_count();
        session.rewind(count - keep).unwrap();
        assert_eq!(session.all_tokens(), &prompt[..keep]);
        assert_eq!(generate(&mut session, &prompt[keep..], &greedy(40)), first);
        assert!(state(&session) == never_rewound, "rewound to {keep}");
    }

    let count = session.token_count();
    let err = session.rewind(count + 1).unwrap_err();
    assert_eq!(err.code(), "INVALID_OPTION");
    assert_eq!(
        session.token_count(),
        count,
        "a failed rewind changes nothing"
    );

    session.rewind(count).unwrap();
    assert_eq!(session.token_count(), 0);
    assert!(session.all_tokens().is_empty());
    assert_eq!(session.kv_held_bytes(), 0);
    let err = session
        .generate(&[], &greedy(1), &no_abort(), &mut |_| {})
        .unwrap_err();
    assert_eq!(err.code(), "INVALID_OPTION");
    assert_eq!(generate(&mut session, prompt, &greedy(40)), first);
}

#[test]
fn save_load_continue_equals_continuing() {
    let dir = tempfile::tempdir().unwrap();
    let text = story(100);
    let mut f32_file = None;
    for dtype in [KvDtype::F32, KvDtype::F16, KvDtype::Int8] {
        let model = load(kv(dtype, 16));
        let mut session = Session::new(model.clone(), 512).unwrap();
        generate(&mut session, &text[..30], &greedy(50));
        let path = dir.path().join(format!("{}.session", dtype.name()));
        session.save(&path).unwrap();
        let mut loaded = Session::load(model.clone(), &path).unwrap();
        assert!(state(&loaded) == std::fs::read(&path).unwrap());
        assert_eq!(loaded.token_count(), session.token_count());
        assert_eq!(loaded.all_tokens(), session.all_tokens());
        assert_eq!(loaded.context_size(), 512);
        let continued = generate(&mut session, &[], &greedy(50));
        assert_eq!(
            generate(&mut loaded, &[], &greedy(50)),
            continued,
            "{dtype:?}: the loaded session continues differently"
        );
        assert_eq!(loaded.token_count(), session.token_count());
        assert!(
            state(&loaded) == state(&session),
            "{dtype:?}: states differ"
        );
        if dtype == KvDtype::F32 {
            f32_file = Some((model, path));
        }
    }

    let (model, path) = f32_file.unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let load_bytes = |name: &str, bytes: &[u8]| {
        let p = dir.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        Session::load(model.clone(), &p).map(|_| ()).unwrap_err()
    };
    let mut flipped = bytes.clone();
    flipped[bytes.len() / 2] ^= 0x40;
    let mut bad_magic = bytes.clone();
    bad_magic[0] = b'X';
    for (name, damaged) in [
        ("flipped", &flipped[..]),
        ("truncated", &bytes[..bytes.len() - 100]),
        ("header-only", &bytes[..20]),
        ("empty", &[][..]),
        ("bad-magic", &bad_magic[..]),
    ] {
        let err = load_bytes(name, damaged);
        assert_eq!(err.code(), "SESSION_FILE_INVALID", "{name}: {err}");
    }
    let missing = Session::load(model.clone(), &dir.path().join("missing"))
        .map(|_| ())
        .unwrap_err();
    assert_eq!(missing.code(), "SESSION_FILE_INVALID");

    for (what, other) in [
        ("KV dtype", load(kv(KvDtype::F16, 16))),
        ("block size", load(kv(KvDtype::F32, 32))),
        (
            "fingerprint",
            load_with(2, kv(KvDtype::F32, 16), Some(WeightFormat::Q8_0)),
        ),
    ] {
        let err = Session::load(other, &path).map(|_| ()).unwrap_err();
        assert_eq!(err.code(), "SESSION_FILE_MISMATCH", "{what}: {err}");
        assert!(err.to_string().contains(what), "{what}: {err}");
    }
}

#[test]
fn a_session_that_filled_its_context_saves_and_loads() {
    let dir = tempfile::tempdir().unwrap();
    let model = load(kv(KvDtype::F32, 16));
    let mut session = Session::new(model.clone(), 40).unwrap();
    let out = session
        .generate(&story(10), &greedy(100), &no_abort(), &mut |_| {})
        .unwrap();
    assert_eq!(out.stop_reason.name(), "contextFull");
    let path = dir.path().join("full.session");
    session.save(&path).unwrap();
    let loaded = Session::load(model, &path).unwrap();
    assert_eq!(loaded.all_tokens(), session.all_tokens());
}

#[test]
fn budget_exhausted_is_a_typed_error_and_dropping_sessions_frees_blocks() {
    let bs = 8;
    let block_bytes = load(kv(KvDtype::F32, bs)).kv_pool.layout().block_bytes();
    let model = load(KvCacheOptions {
        budget_bytes: Some(4 * block_bytes),
        ..kv(KvDtype::F32, bs)
    });
    let roomy = load(kv(KvDtype::F32, bs));
    let text = story(300);
    let (a, b, c) = (&text[..60], &text[100..140], &text[200..210]);

    // 40 positions need 5 blocks of the 4 the budget holds.
    let mut s1 = Session::new(model.clone(), 512).unwrap();
    let err = s1
        .generate(&a[..40], &greedy(2), &no_abort(), &mut |_| {})
        .unwrap_err();
    assert_eq!(err.code(), "KV_BUDGET_EXCEEDED");
    let message = err.to_string();
    assert!(
        message.contains(&format!("needs {} more bytes", 5 * block_bytes))
            && message.contains(&format!("only {} of its", 4 * block_bytes)),
        "{message}"
    );
    assert_eq!(s1.token_count(), 0);
    assert_eq!(
        model.kv_pool.stats().used_bytes,
        0,
        "nothing stays allocated"
    );

    // Still usable: 10 + 4 fed tokens take 2 blocks.
    assert_eq!(
        generate(&mut s1, &a[..10], &greedy(5)),
        fresh(&roomy, &a[..10], 5)
    );
    // A second session takes the other 2 blocks (16 positions).
    let mut s2 = Session::new(model.clone(), 512).unwrap();
    let first = generate(&mut s2, &b[..16], &greedy(1));
    assert_eq!(model.kv_pool.stats().blocks_free, 0);

    // Every block is held by a session: nothing to evict.
    let history = s2.all_tokens();
    let err = s2
        .generate(&b[16..20], &greedy(1), &no_abort(), &mut |_| {})
        .unwrap_err();
    assert_eq!(err.code(), "KV_BUDGET_EXCEEDED");
    assert!(err.to_string().contains("only 0 of its"), "{err}");
    assert_eq!(
        s2.all_tokens(),
        history,
        "the failed call changed the session"
    );
    let err = s2.predict_next(&b[16..20], &no_abort()).unwrap_err();
    assert_eq!(err.code(), "KV_BUDGET_EXCEEDED");
    assert_eq!(
        s2.all_tokens(),
        history,
        "the failed call changed the session"
    );

    // Dropping s1 frees its partly filled block; its full block stays cached.
    drop(s1);
    let stats = model.kv_pool.stats();
    assert_eq!(
        (stats.blocks_used, stats.blocks_cached),
        (3, 1),
        "{stats:?}"
    );
    let full: Vec<u32> = b[..16]
        .iter()
        .chain(&first)
        .chain(&b[16..20])
        .copied()
        .collect();
    assert_eq!(
        generate(&mut s2, &b[16..20], &greedy(1)),
        fresh(&roomy, &full, 1)
    );
    assert_eq!(model.kv_pool.stats().evicted_blocks, 0);

    // The budget is full again: a new session gets the block only the cache holds.
    let mut s3 = Session::new(model.clone(), 512).unwrap();
    assert_eq!(
        generate(&mut s3, &c[..5], &greedy(2)),
        fresh(&roomy, &c[..5], 2)
    );
    let stats = model.kv_pool.stats();
    assert_eq!(stats.evicted_blocks, 1, "{stats:?}");

    drop((s2, s3));
    let stats = model.kv_pool.stats();
    assert!(stats.blocks_cached > 0);
    assert_eq!(stats.blocks_used, stats.blocks_cached, "{stats:?}");
    assert_eq!(stats.used_bytes, stats.blocks_cached * block_bytes);
    model.kv_pool.clear_prefix_cache();
    let stats = model.kv_pool.stats();
    assert_eq!((stats.used_bytes, stats.blocks_used), (0, 0), "{stats:?}");
    assert_eq!(stats.blocks_free, 4);
}

#[test]
fn int8_and_f16_caches_stay_close_to_f32() {
    let text = story(300);
    let predict = |dtype: KvDtype| {
        Session::new(load(kv(dtype, 32)), 512)
            .unwrap()
            .predict_next(&text[..300], &no_abort())
            .unwrap()
    };
    let reference = predict(KvDtype::F32);
    assert_eq!(reference.len(), 300);
    for dtype in [KvDtype::F16, KvDtype::Int8] {
        let predictions = predict(dtype);
        let same = predictions
            .iter()
            .zip(&reference)
            .filter(|(a, b)| a == b)
            .count();
        let share = same as f64 / reference.len() as f64;
        println!("{dtype:?} KV: {same} of 300 teacher-forced predictions match f32 KV");
        assert!(
            share >= 0.95,
            "{dtype:?} KV agrees with f32 KV on {same} of 300 positions ({:.1}%)",
            100.0 * share
        );
    }
}
