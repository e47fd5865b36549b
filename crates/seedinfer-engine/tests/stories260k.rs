//! The engine against a real float32 checkpoint: stories260K reproduces its known greedy continuation.

use seedinfer_engine::{GenerateParams, LoadOptions, Model, Session, StopReason};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

mod common;
use common::{expected_greedy, greedy, stories_dir};

fn load() -> Arc<Model> {
    load_with_threads(2)
}

fn load_with_threads(threads: usize) -> Arc<Model> {
    Arc::new(
        Model::load(
            &stories_dir(),
            &LoadOptions {
                threads: Some(threads),
                weights: None,
                ..Default::default()
            },
        )
        .expect("stories260K loads"),
    )
}

#[test]
fn greedy_from_bos_reproduces_the_reference_200_tokens() {
    let model = load();
    let expected = expected_greedy();
    assert_eq!(expected.len(), 200);
    let mut session = Session::new(model, 512).expect("session");
    let out = session
        .generate(&[1], &greedy(200), &AtomicBool::new(false), &mut |_| {})
        .expect("generates");
    assert_eq!(out.token_ids, expected);
    assert_eq!(out.stop_reason, StopReason::MaxTokens);
    assert!(
        out.text
            .starts_with("Once upon a time, there was a little girl named Lily."),
        "{}",
        out.text
    );
}

#[test]
fn generating_in_pieces_equals_generating_at_once() {
    let model = load();
    let expected = expected_greedy();
    let mut session = Session::new(model, 512).expect("session");
    let stop = AtomicBool::new(false);
    let mut all = session
        .generate(&[1], &greedy(30), &stop, &mut |_| {})
        .expect("first part")
        .token_ids;
    // An empty prompt continues from the last generated token.
    all.extend(
        session
            .generate(&[], &greedy(70), &stop, &mut |_| {})
            .expect("second part")
            .token_ids,
    );
    assert_eq!(all, expected[..100]);
    assert_eq!(session.token_count(), 101);
}

#[test]
fn split_decode_attention_and_tiled_prefill_attention_choose_the_same_tokens() {
    // Decoding 400 tokens one at a time runs attention split into position ranges and merged once the cache
    // holds 256 positions; teacher forcing the same sequence runs the prompt's attention in tiles folded with the
    // online softmax. Both must choose the same tokens (the test fails if either merge is broken).
    // Eight threads make four ranges per KV head (about two tasks per thread over stories260K's 4 KV heads).
    let model = load_with_threads(8);
    let stop = AtomicBool::new(false);
    let decoded = Session::new(model.clone(), 512)
        .expect("session")
        .generate(&[1], &greedy(400), &stop, &mut |_| {})
        .expect("generates")
        .token_ids;
    let sequence: Vec<u32> = std::iter::once(1).chain(decoded.iter().copied()).collect();
    let predicted = Session::new(model, 512)
        .expect("session")
        .predict_next(&sequence[..400], &stop)
        .expect("predicts");
    assert_eq!(predicted, decoded);
}

#[test]
fn model_info_describes_the_checkpoint() {
    let model = load();
    let c = &model.config;
    assert_eq!(
        (
            c.layers,
            c.hidden_size,
            c.heads,
            c.kv_heads,
            c.head_dim,
            c.vocab_size
        ),
        (5, 64, 8, 4, 8, 512)
    );
    assert!(c.tied_embeddings);
    assert_eq!(model.info.parameter_count, 260_032);
    assert_eq!(model.info.file_tensor_formats.get("F32"), Some(&47));
}

#[test]
fn prompt_longer_than_the_context_is_a_typed_error() {
    let model = load();
    let mut session = Session::new(model, 16).expect("session");
    let err = session
        .generate(&[1; 40], &greedy(4), &AtomicBool::new(false), &mut |_| {})
        .unwrap_err();
    assert_eq!(err.code(), "CONTEXT_OVERFLOW");
    let err = session
        .generate(&[9999], &greedy(4), &AtomicBool::new(false), &mut |_| {})
        .unwrap_err();
    assert_eq!(err.code(), "INVALID_TOKEN_ID");
}

#[test]
fn generation_stops_at_a_stop_string_and_hides_it() {
    let model = load();
    let mut session = Session::new(model, 512).expect("session");
    let params = GenerateParams {
        stop: vec!["Lily".into()],
        ..greedy(100)
    };
    let mut streamed = String::new();
    let out = session
        .generate(&[1], &params, &AtomicBool::new(false), &mut |c| {
            streamed.push_str(c.text)
        })
        .expect("generates");
    assert_eq!(out.stop_reason, StopReason::Stop);
    assert_eq!(out.text, "Once upon a time, there was a little girl named ");
    assert_eq!(streamed, out.text);
}

#[test]
fn logprobs_follow_each_token_and_greedy_picks_the_top_one() {
    let model = load();
    let mut session = Session::new(Arc::clone(&model), 512).expect("session");
    let params = GenerateParams {
        logprobs: Some(3),
        ..greedy(20)
    };
    let mut streamed = Vec::new();
    let out = session
        .generate(&[1], &params, &AtomicBool::new(false), &mut |c| {
            if let Some(l) = c.logprobs {
                streamed.push(l.clone());
            }
        })
        .expect("generates");
    assert_eq!(out.logprobs.len(), out.token_ids.len());
    assert_eq!(
        streamed, out.logprobs,
        "each streamed token carries its logprobs"
    );
    for (token, l) in out.token_ids.iter().zip(&out.logprobs) {
        assert_eq!(l.top.len(), 3);
        assert_eq!(
            l.top[0],
            (*token, l.logprob),
            "greedy takes the most likely token"
        );
        assert!(l.logprob <= 0.0 && l.top[1].1 <= l.top[0].1 && l.top[2].1 <= l.top[1].1);
    }
    let too_many = GenerateParams {
        logprobs: Some(seedinfer_engine::MAX_TOP_LOGPROBS + 1),
        ..greedy(2)
    };
    let err = session
        .generate(&[], &too_many, &AtomicBool::new(false), &mut |_| {})
        .expect_err("too many alternatives");
    assert_eq!(err.code(), "INVALID_OPTION");
}
