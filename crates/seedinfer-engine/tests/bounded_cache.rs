//! Bounded KV caches (issue 24: StreamingLLM and SirLLM) on stories260K: a bound the history fits in changes
//! nothing (the exactness switch), streams and generations longer than the context run in flat memory, SirLLM keeps
//! a surprising token that StreamingLLM drops, forks continue alike, and what a bounded cache cannot do is refused.

use seedinfer_engine::{
    BoundedCache, DraftSource, EngineError, GenerateParams, KvDtype, Model, Session, SirLlm,
    SpeculativeParams,
};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

mod common;
use common::{greedy, greedy_from_bos, lazyllm_half_from, stories_with_cache};

fn load(dtype: KvDtype) -> Arc<Model> {
    stories_with_cache(dtype)
}

fn streaming(max_tokens: usize) -> BoundedCache {
    BoundedCache {
        max_tokens,
        sinks: 4,
        sirllm: None,
    }
}

fn sirllm(max_tokens: usize, recent: usize, decay: f64) -> BoundedCache {
    BoundedCache {
        max_tokens,
        sinks: 4,
        sirllm: Some(SirLlm { recent, decay }),
    }
}

fn bounded(model: &Arc<Model>, context: usize, bound: BoundedCache) -> Session {
    let mut session = Session::new(Arc::clone(model), context).unwrap();
    session.set_bounded_cache(Some(bound)).unwrap();
    session
}

fn generate(session: &mut Session, prompt: &[u32], params: &GenerateParams) -> Vec<u32> {
    session
        .generate(prompt, params, &AtomicBool::new(false), &mut |_| {})
        .expect("generates")
        .token_ids
}

/// Natural text of `len` tokens: stories260K's own greedy story from BOS, then again without the BOS.
fn story(model: &Arc<Model>, len: usize) -> Vec<u32> {
    let mut text = vec![1];
    let once = greedy_from_bos(model, 200);
    while text.len() < len {
        text.extend_from_slice(&once);
    }
    text.truncate(len);
    text
}

#[test]
fn a_bound_the_history_fits_in_changes_nothing() {
    for dtype in [KvDtype::F32, KvDtype::F16, KvDtype::Int8] {
        let model = load(dtype);
        let prompt = story(&model, 120);
        let then = &story(&model, 300)[150..250];
        let mut unbounded = Session::new(Arc::clone(&model), 512).unwrap();
        let plain = generate(&mut unbounded, &prompt, &greedy(150));
        let plain_nll = unbounded
            .score_tokens(then, &AtomicBool::new(false))
            .unwrap();
        for bound in [streaming(512), sirllm(512, 64, 0.7)] {
            let mut session = bounded(&model, 512, bound);
            assert_eq!(
                generate(&mut session, &prompt, &greedy(150)),
                plain,
                "{bound:?}, {dtype:?} cache"
            );
            let nll = session.score_tokens(then, &AtomicBool::new(false)).unwrap();
            assert_eq!(nll.len(), 100);
            assert!(
                nll.iter()
                    .zip(&plain_nll)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "{bound:?}, {dtype:?} cache"
            );
            assert_eq!(session.evicted_tokens(), 0);
        }
    }
}

#[test]
fn streams_and_generations_longer_than_the_context_run_in_flat_memory() {
    let model = load(KvDtype::F16);
    let text = story(&model, 1500);
    for bound in [streaming(128), sirllm(128, 32, 0.7)] {
        let mut session = bounded(&model, 256, bound);
        let mut held = Vec::new();
        let mut nll = Vec::new();
        for piece in text.chunks(100) {
            nll.extend(
                session
                    .score_tokens(piece, &AtomicBool::new(false))
                    .unwrap(),
            );
            assert!(
                session.token_count() <= 128,
                "{bound:?}: {} tokens held",
                session.token_count()
            );
            held.push(session.kv_held_bytes());
        }
        assert_eq!(nll.len(), 1500);
        assert!(nll[0].is_nan() && nll[1..].iter().all(|x| x.is_finite() && *x >= 0.0));
        assert_eq!(session.evicted_tokens() + session.token_count(), 1500);
        // The model's own story repeats: once it is in the cache, the rest is predictable.
        let late: f64 = nll[1000..].iter().sum::<f64>() / 500.0;
        assert!(late < 1.0, "{bound:?}: mean nll late in the stream {late}");
        let first_full = held[2];
        assert!(
            held[2..].iter().all(|&b| b <= first_full),
            "{bound:?}: KV bytes {held:?}"
        );
        // Generation goes on past the context as well.
        let out = generate(&mut session, &[], &greedy(400));
        assert_eq!(out.len(), 400);
        assert!(session.token_count() <= 128);
    }
}

#[test]
fn sirllm_keeps_a_surprising_token_that_streaming_drops() {
    let model = load(KvDtype::F16);
    let text = story(&model, 400);
    // A token the story never uses, in the middle of it: the model finds it very surprising.
    let odd = (3..512u32)
        .rev()
        .find(|t| !text.contains(t))
        .expect("an unused token");
    let mut stream = text[..150].to_vec();
    stream.push(odd);
    stream.extend_from_slice(&text[150..]);
    for (bound, kept) in [(streaming(128), false), (sirllm(128, 32, 1.0), true)] {
        let mut session = bounded(&model, 512, bound);
        session
            .score_tokens(&stream, &AtomicBool::new(false))
            .unwrap();
        assert!(session.evicted_tokens() > 250);
        assert_eq!(session.all_tokens().contains(&odd), kept, "{bound:?}");
    }
}

#[test]
fn a_fork_of_a_bounded_session_continues_as_the_session_does() {
    let model = load(KvDtype::F16);
    let mut session = bounded(&model, 256, sirllm(96, 24, 0.7));
    generate(&mut session, &story(&model, 80), &greedy(100));
    assert!(session.evicted_tokens() > 0);
    let mut fork = session.fork();
    assert_eq!(
        generate(&mut fork, &[], &greedy(120)),
        generate(&mut session, &[], &greedy(120))
    );
    assert_eq!(fork.all_tokens(), session.all_tokens());
}

/// A saved bounded session (its bound, SirLLM's scores, the evicted count and the re-rotated keys) loads and goes
/// on as the session does, evicting the same tokens, for both policies and f16 and int8 caches.
#[test]
fn a_saved_bounded_session_continues_as_the_session_does() {
    for dtype in [KvDtype::F16, KvDtype::Int8] {
        let model = load(dtype);
        for bound in [streaming(96), sirllm(96, 24, 0.7)] {
            let mut session = bounded(&model, 256, bound);
            generate(&mut session, &story(&model, 80), &greedy(100));
            assert!(session.evicted_tokens() > 0);
            let file = std::env::temp_dir().join(format!(
                "seedinfer-bounded-{}-{dtype:?}.session",
                std::process::id()
            ));
            session.save(&file).unwrap();
            let mut loaded = Session::load(Arc::clone(&model), &file).unwrap();
            std::fs::remove_file(&file).unwrap();
            assert_eq!(loaded.bounded_cache(), Some(&bound));
            assert_eq!(loaded.evicted_tokens(), session.evicted_tokens());
            assert_eq!(loaded.kv_held_bytes(), session.kv_held_bytes());
            assert_eq!(
                generate(&mut loaded, &[], &greedy(120)),
                generate(&mut session, &[], &greedy(120)),
                "{dtype:?} {bound:?}"
            );
            assert_eq!(loaded.all_tokens(), session.all_tokens());
            assert_eq!(loaded.evicted_tokens(), session.evicted_tokens());
        }
    }
}

fn invalid<T>(r: seedinfer_engine::Result<T>) -> bool {
    matches!(r, Err(EngineError::InvalidOption(_)))
}

#[test]
fn what_a_bounded_cache_cannot_do_is_refused() {
    let model = load(KvDtype::F16);
    let mut session = bounded(&model, 256, streaming(128));
    let lazy = GenerateParams {
        prefill: lazyllm_half_from(1),
        ..greedy(4)
    };
    assert!(invalid(session.generate(
        &[1, 2, 3],
        &lazy,
        &AtomicBool::new(false),
        &mut |_| {}
    )));
    let speculative = GenerateParams {
        speculative: Some(SpeculativeParams {
            source: DraftSource::PromptLookup,
            max_draft: SpeculativeParams::DEFAULT_MAX_DRAFT,
            ngram_max: SpeculativeParams::DEFAULT_NGRAM_MAX,
        }),
        ..greedy(4)
    };
    assert!(invalid(session.generate(
        &[1, 2, 3],
        &speculative,
        &AtomicBool::new(false),
        &mut |_| {}
    )));
    assert!(invalid(session.superpose(
        &[1],
        &[vec![2, 3]],
        &[4],
        1,
        &AtomicBool::new(false)
    )));
    for bad in [
        streaming(300),
        streaming(32),
        BoundedCache {
            sinks: 40,
            ..streaming(128)
        },
        sirllm(128, 100, 0.7),
    ] {
        let mut s = Session::new(Arc::clone(&model), 256).unwrap();
        assert!(invalid(s.set_bounded_cache(Some(bad))), "{bad:?}");
    }
    assert_eq!(session.token_count(), 0, "nothing was fed");
}

#[test]
fn a_bounded_session_prefills_a_prompt_longer_than_its_bound_with_xattention() {
    let model = load(KvDtype::F16);
    let mut session = bounded(&model, 512, streaming(256));
    let params = GenerateParams {
        xattention: Some(seedinfer_engine::XAttention {
            stride: 4,
            block_size: 32,
            ..Default::default()
        }),
        ..greedy(8)
    };
    let out = session
        .generate(
            &story(&model, 700),
            &params,
            &AtomicBool::new(false),
            &mut |_| {},
        )
        .expect("generates");
    assert_eq!(out.token_ids.len(), 8);
    assert!(session.evicted_tokens() > 0 && session.token_count() <= 256);
    assert!(out.prefill.selected_blocks < out.prefill.causal_blocks);
}

#[test]
fn an_eviction_needs_no_more_memory_than_the_bound() {
    // A pool with room for the bound and two blocks more: evictions move rows in place.
    let block_bytes = load(KvDtype::F16).kv_pool.stats().block_bytes;
    let options = seedinfer_engine::LoadOptions {
        threads: Some(2),
        kv_cache: seedinfer_engine::KvCacheOptions {
            block_size: 16,
            budget_bytes: Some((256 / 16 + 2) * block_bytes),
            prefix_caching: false,
            ..Default::default()
        },
        ..Default::default()
    };
    let model = Arc::new(Model::load(&common::stories_dir(), &options).expect("stories260K loads"));
    let mut session = bounded(&model, 512, streaming(256));
    let nll = session
        .score_tokens(&story(&model, 1200), &AtomicBool::new(false))
        .expect("fits in the budget");
    assert_eq!(nll.len(), 1200);
    assert!(session.evicted_tokens() > 900);
}
