//! Several sessions in one forward pass (`Session::feed_together`, the step of continuous batching): prompts of
//! different lengths, decode steps, a session joining mid-way and one leaving, each session's logits after every
//! step bit-identical to those of the same tokens fed alone (`predict_next`); the cache blocks all return.

use seedinfer_engine::sampler::argmax;
use seedinfer_engine::{LoadOptions, Model, Session};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

mod common;

fn load(path: &Path) -> Arc<Model> {
    let options = LoadOptions {
        threads: Some(2),
        ..Default::default()
    };
    Arc::new(Model::load(path, &options).expect("model loads"))
}

/// The logits after `tokens` fed alone, through the ordinary prompt path.
fn alone(model: &Arc<Model>, tokens: &[u32]) -> Vec<u32> {
    let mut session = Session::new(Arc::clone(model), 256).expect("session");
    session
        .predict_next(tokens, &AtomicBool::new(false))
        .expect("predicts");
    bits(session.last_logits().expect("logits"))
}

fn bits(logits: &[f32]) -> Vec<u32> {
    logits.iter().map(|v| v.to_bits()).collect()
}

/// Sessions A, B, C start with prompts of 5, 17 and 1 tokens in one pass; then every step each live session
/// feeds its greedy token; D joins at step 3 with a 9-token prompt while the others decode; B leaves after step 4.
fn check_batched_equals_alone(model: Arc<Model>) {
    let vocab = model.config.vocab_size as u32;
    let prompt = |len: usize, seed: u32| -> Vec<u32> {
        (0..len as u32)
            .map(|i| (seed * 131 + i * 37 + 3) % vocab)
            .collect()
    };
    let mut sessions: Vec<(Session, Vec<u32>)> = [(5, 1), (17, 2), (1, 3)]
        .into_iter()
        .map(|(len, seed)| {
            (
                Session::new(Arc::clone(&model), 256).expect("session"),
                prompt(len, seed),
            )
        })
        .collect();
    let mut history: Vec<Vec<u32>> = vec![Vec::new(); 3];
    for step in 0..8 {
        if step == 3 {
            sessions.push((
                Session::new(Arc::clone(&model), 256).expect("session"),
                prompt(9, 4),
            ));
            history.push(Vec::new());
        }
        let feeds: Vec<Vec<u32>> = sessions.iter().map(|(_, next)| next.clone()).collect();
        let refs: Vec<&[u32]> = feeds.iter().map(|f| f.as_slice()).collect();
        let mut live: Vec<&mut Session> = sessions.iter_mut().map(|(s, _)| s).collect();
        Session::feed_together(&mut live, &refs).expect("a batched step");
        for (i, ((session, next), fed)) in sessions.iter_mut().zip(&feeds).enumerate() {
            history[i].extend_from_slice(fed);
            let logits = session.last_logits().expect("logits");
            assert_eq!(
                bits(logits),
                alone(&model, &history[i]),
                "session {i} after step {step}: batched logits differ from the session alone"
            );
            *next = vec![argmax(logits)];
        }
        if step == 4 {
            sessions.remove(1);
            history.remove(1);
        }
    }
    drop(sessions);
    assert_eq!(
        model.kv_pool.stats().blocks_used,
        0,
        "every session's blocks return to the pool"
    );
}

#[test]
fn stories260k_sessions_batched_together_get_their_own_bits() {
    check_batched_equals_alone(load(&common::stories_dir()));
}

#[test]
fn qwen3_sessions_batched_together_get_their_own_bits() {
    // The architecture hooks (q/k norms, half-pair RoPE, GGUF layout) in the batched step.
    let fixture =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/architectures/qwen3/model.gguf");
    check_batched_equals_alone(load(&fixture));
}

#[test]
fn sessions_of_different_models_do_not_batch() {
    let (a, b) = (load(&common::stories_dir()), load(&common::stories_dir()));
    let (mut x, mut y) = (
        Session::new(a, 64).expect("session"),
        Session::new(b, 64).expect("session"),
    );
    let err = Session::feed_together(&mut [&mut x, &mut y], &[&[1], &[1]])
        .expect_err("two models refuse to batch");
    assert_eq!(err.code(), "INVALID_OPTION");
    assert_eq!(x.token_count(), 0);
}
