//! Superposition prompting on stories260K: with one document the session holds the ordinary prompt [preamble,
//! document, query] with its logits bit for bit, and greedy answers agree; with several, each path's saliency is the
//! query's mean log-likelihood after the preamble and that document alone (checked against a plain forward pass), the
//! most salient path is kept, and a second query over the same documents takes their keys and values from the
//! prefix cache. Bad input is refused without changing the session.

use seedinfer_engine::{Session, TokenLogprobs};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

mod common;

fn encode(model: &seedinfer_engine::Model, text: &str) -> Vec<u32> {
    model.tokenizer.encode(text, false, false).expect("encodes")
}

#[test]
fn one_document_is_the_ordinary_prompt() {
    let model = common::stories_model();
    let mut preamble = vec![1];
    preamble.extend(encode(&model, "Read the story."));
    let document = encode(
        &model,
        "Lily had a red ball. She played with it in the park every day.",
    );
    let query = encode(&model, "What did Lily have?");
    let mut session = Session::new(Arc::clone(&model), 256).expect("session");
    let report = session
        .superpose(
            &preamble,
            std::slice::from_ref(&document),
            &query,
            1,
            &AtomicBool::new(false),
        )
        .expect("superposes");
    assert_eq!(report.kept, vec![0]);
    let ordinary: Vec<u32> = [&preamble[..], &document, &query].concat();
    assert_eq!(session.all_tokens(), ordinary);
    let mut plain = Session::new(Arc::clone(&model), 256).expect("session");
    let plain_out = plain
        .generate(
            &ordinary,
            &common::greedy(1),
            &AtomicBool::new(false),
            &mut |_| {},
        )
        .expect("generates");
    // The logits the answer starts from are the ordinary prompt's, bit for bit.
    let chunked = common::paged_logits(&model, &ordinary, &[ordinary.len()]);
    let vocab = model.config.vocab_size;
    assert_eq!(
        session.last_logits().expect("logits"),
        &chunked[chunked.len() - vocab..]
    );
    let answer = session
        .generate(
            &[],
            &common::greedy(30),
            &AtomicBool::new(false),
            &mut |_| {},
        )
        .expect("generates");
    let mut plain = Session::new(Arc::clone(&model), 256).expect("session");
    let plain_answer = plain
        .generate(
            &ordinary,
            &common::greedy(30),
            &AtomicBool::new(false),
            &mut |_| {},
        )
        .expect("generates");
    assert_eq!(answer.token_ids, plain_answer.token_ids);
    assert_eq!(answer.token_ids[0], plain_out.token_ids[0]);
    assert_eq!(report.prompt_tokens, ordinary.len());
}

#[test]
fn the_most_salient_path_is_kept_and_documents_are_reused() {
    let model = common::stories_model();
    let mut preamble = vec![1];
    preamble.extend(encode(
        &model,
        "Once upon a time, in a small town, there were three friends.",
    ));
    let documents: Vec<Vec<u32>> = [
        "Tom had a big dog. The dog liked to run and jump in the garden all day long.",
        "Lily had a red ball. She played with it in the park with her mom every day, and she was very happy.",
        "Sam liked to eat cake. One day he ate a very big cake and his tummy hurt.",
    ]
    .iter()
    .map(|t| encode(&model, t))
    .collect();
    let query = encode(&model, "Lily played with her red ball in the park.");
    let vocab = model.config.vocab_size;
    // Each path's saliency from a plain pass over [preamble, document, query].
    let expected: Vec<f32> = documents
        .iter()
        .map(|d| {
            let tokens: Vec<u32> = [&preamble[..], d, &query].concat();
            let logits = common::paged_logits(&model, &tokens, &[tokens.len()]);
            let first = preamble.len() + d.len();
            let total: f64 = (0..query.len())
                .map(|j| {
                    let row = &logits[(first + j - 1) * vocab..(first + j) * vocab];
                    TokenLogprobs::of(row, query[j], 0).logprob as f64
                })
                .sum();
            (total / query.len() as f64) as f32
        })
        .collect();
    let mut session = Session::new(Arc::clone(&model), 512).expect("session");
    let report = session
        .superpose(&preamble, &documents, &query, 1, &AtomicBool::new(false))
        .expect("superposes");
    for (got, want) in report.saliency.iter().zip(&expected) {
        assert!(
            (got - want).abs() < 1e-4,
            "{:?} vs {expected:?}",
            report.saliency
        );
    }
    assert_eq!(report.kept, vec![1], "{:?}", report.saliency);
    assert_eq!(
        session.all_tokens(),
        [&preamble[..], &documents[1], &query].concat()
    );
    assert_eq!(report.reused_tokens, 0);
    // A second query over the same documents: their full blocks come from the prefix cache.
    let other = encode(&model, "Tom's dog ran in the garden.");
    let mut again = Session::new(Arc::clone(&model), 512).expect("session");
    let second = again
        .superpose(&preamble, &documents, &other, 1, &AtomicBool::new(false))
        .expect("superposes");
    // Each path starts at the preamble's last block boundary: its (preamble tail, document) blocks are reused,
    // all but the partly filled last one.
    let block = model.kv_pool.layout().block_size;
    let tail = preamble.len() % block;
    let document_blocks: usize = documents
        .iter()
        .map(|d| (tail + d.len() - 1) / block * block)
        .sum();
    assert!(document_blocks > 0);
    assert!(second.reused_tokens >= document_blocks, "{second:?}");
    assert_eq!(second.kept, vec![0], "{:?}", second.saliency);
}

#[test]
fn bad_input_is_refused_and_leaves_the_session_alone() {
    let model = common::stories_model();
    let mut session = Session::new(Arc::clone(&model), 64).expect("session");
    let preamble = vec![1, 50, 60];
    let doc = vec![70, 80];
    let q = vec![90];
    let no = AtomicBool::new(false);
    for (documents, query, top_k) in [
        (vec![], q.clone(), 1),
        (vec![vec![]], q.clone(), 1),
        (vec![doc.clone()], vec![], 1),
        (vec![doc.clone()], q.clone(), 2),
        (vec![vec![5000]], q.clone(), 1),
        (vec![vec![70; 70]], q.clone(), 1),
    ] {
        let e = session
            .superpose(&preamble, &documents, &query, top_k, &no)
            .expect_err("refused");
        assert!(
            ["INVALID_OPTION", "INVALID_TOKEN_ID", "CONTEXT_OVERFLOW"].contains(&e.code()),
            "{e}"
        );
        assert_eq!(session.token_count(), 0);
    }
    let e = session
        .superpose(&preamble, &[doc], &q, 1, &AtomicBool::new(true))
        .expect_err("aborted");
    assert_eq!(e.code(), "ABORTED");
}
