//! Perplexity on a real float32 checkpoint (stories260K): each scored token's negative log-likelihood equals the
//! one computed from a session fed token by token, windows count what they should, bad input is refused.

use seedinfer_engine::{LoadOptions, Model, Session};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

mod common;
use common::stories_dir;

const TEXT: &str = "Once upon a time, there was a little girl named Lily. She loved to play outside in the park \
with her dog, Max. One day, Lily saw a big red ball under a tree. She ran to get it, but a boy was already \
holding it. \"Can I play too?\" Lily asked. The boy smiled and said yes. They kicked the ball all afternoon, and \
when the sun went down, they were friends. Lily went home happy and told her mom about her new friend.";

fn load() -> Arc<Model> {
    Arc::new(
        Model::load(
            &stories_dir(),
            &LoadOptions {
                threads: Some(2),
                ..Default::default()
            },
        )
        .expect("stories260K loads"),
    )
}

fn text_tokens(model: &Model) -> Vec<u32> {
    model.tokenizer.encode(TEXT, true, false).expect("encodes")
}

/// `-log softmax(logits)[target]`, written out independently of the engine's.
fn reference_nll(logits: &[f32], target: u32) -> f64 {
    let logits: Vec<f64> = logits.iter().map(|&l| l as f64).collect();
    let max = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let log_sum = logits.iter().map(|l| (l - max).exp()).sum::<f64>().ln() + max;
    log_sum - logits[target as usize]
}

#[test]
fn each_scored_token_matches_a_session_fed_token_by_token() {
    let model = load();
    let tokens = text_tokens(&model);
    assert!(tokens.len() > 60, "{} tokens", tokens.len());
    let tokens = &tokens[..60];
    // 60 tokens in windows of 25: 25, 25 and 10, so scoring restarts twice and the last window is partial.
    let window = 25;
    let scored = model
        .perplexity(tokens, Some(window), &AtomicBool::new(false))
        .expect("scores")
        .expect("not aborted");
    let no_abort = AtomicBool::new(false);
    let mut expected = Vec::new();
    for span in tokens.chunks(window) {
        let mut session = Session::new(Arc::clone(&model), window).expect("session");
        for pair in span.windows(2) {
            session.predict_next(&pair[..1], &no_abort).expect("feeds");
            let logits = session.last_logits().expect("logits");
            expected.push(reference_nll(logits, pair[1]));
        }
    }
    assert_eq!(scored.token_nll.len(), expected.len());
    for (i, (got, want)) in scored.token_nll.iter().zip(&expected).enumerate() {
        assert!(
            (got - want).abs() < 1e-4,
            "token {i}: perplexity scored {got}, step by step {want}"
        );
    }
    let lens: Vec<usize> = scored.windows.iter().map(|w| w.len).collect();
    assert_eq!(lens, [25, 25, 10]);
    let counted: Vec<usize> = scored.windows.iter().map(|w| w.tokens).collect();
    assert_eq!(counted, [24, 24, 9]);
    let total: f64 = expected.iter().sum();
    assert!(
        (scored.nll - total).abs() < 1e-3,
        "{} vs {total}",
        scored.nll
    );
    let first: f64 = expected[..24].iter().sum();
    assert!((scored.windows[0].nll - first).abs() < 1e-3);
}

#[test]
fn perplexity_of_real_text_is_finite_and_above_one() {
    let model = load();
    let tokens = text_tokens(&model);
    let scored = model
        .perplexity(&tokens, None, &AtomicBool::new(false))
        .expect("scores")
        .expect("not aborted");
    // The text is shorter than the default window (min(512, context 512)): one window.
    assert_eq!(scored.window, 512);
    assert_eq!(scored.windows.len(), 1);
    assert_eq!(scored.tokens, tokens.len() - 1);
    let ppl = scored.perplexity();
    assert!(ppl.is_finite() && ppl > 1.0, "perplexity {ppl}");
    // A 260K-parameter model trained on such stories predicts them far better than uniform over 512 tokens.
    assert!(ppl < 512.0 / 4.0, "perplexity {ppl}");
    assert!(scored.token_nll.iter().all(|n| n.is_finite() && *n >= 0.0));
}

#[test]
fn windows_score_all_tokens_but_each_windows_first() {
    let model = load();
    let text = text_tokens(&model);
    let no_abort = AtomicBool::new(false);
    // n = 100 in windows of 32: 32, 32, 32, 4. n = 65: 32, 32 and a single token that is not scored.
    for (n, window, windows) in [(100, 32, 4), (65, 32, 3), (64, 32, 2), (2, 2, 1), (7, 2, 4)] {
        let tokens: Vec<u32> = text.iter().cycle().take(n).copied().collect();
        let scored = model
            .perplexity(&tokens, Some(window), &no_abort)
            .expect("scores")
            .expect("not aborted");
        assert_eq!(scored.windows.len(), windows, "n = {n}, window = {window}");
        assert_eq!(scored.tokens, n - windows, "n = {n}, window = {window}");
        assert_eq!(scored.token_nll.len(), n - windows);
        let per_window: usize = scored.windows.iter().map(|w| w.tokens).sum();
        assert_eq!(per_window, scored.tokens);
        // A window of one token scores nothing: +0, not -0.
        for w in scored.windows.iter().filter(|w| w.tokens == 0) {
            assert!(w.nll == 0.0 && w.nll.is_sign_positive(), "{}", w.nll);
        }
    }
}

#[test]
fn bad_windows_and_tokens_are_refused_and_an_abort_stops_it() {
    let model = load();
    let tokens = text_tokens(&model);
    let no_abort = AtomicBool::new(false);
    let code = |tokens: &[u32], window: Option<usize>| {
        model
            .perplexity(tokens, window, &no_abort)
            .expect_err("refused")
            .code()
    };
    assert_eq!(code(&tokens, Some(1)), "INVALID_OPTION");
    assert_eq!(code(&tokens, Some(0)), "INVALID_OPTION");
    assert_eq!(code(&tokens, Some(513)), "INVALID_OPTION");
    assert_eq!(code(&tokens[..1], None), "INVALID_OPTION");
    assert_eq!(code(&[], None), "INVALID_OPTION");
    assert_eq!(code(&[1, 512, 3], None), "INVALID_TOKEN_ID");
    let aborted = model
        .perplexity(&tokens, None, &AtomicBool::new(true))
        .expect("no error");
    assert!(aborted.is_none());
}
