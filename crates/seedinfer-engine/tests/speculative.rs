//! Speculative decoding with prompt-lookup drafts is exact: on stories260K, greedy output with drafts equals plain
//! greedy output token for token — many prompts (repetitive ones, where drafts are accepted, and others),
//! repetition/presence/frequency penalties, stop strings, `max_tokens` and the context's end, and a continued
//! session — while drafts are really verified and accepted. Settings it cannot keep exact are refused.

use seedinfer_engine::{
    GenerateParams, GenerationOutput, SamplingParams, Session, SpeculativeParams,
};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

mod common;

fn greedy(max_tokens: usize, sampling: SamplingParams, stop: Vec<String>) -> GenerateParams {
    GenerateParams {
        max_tokens,
        sampling: SamplingParams {
            temperature: 0.0,
            ..sampling
        },
        stop,
        ..Default::default()
    }
}

fn generate(session: &mut Session, prompt: &[u32], params: &GenerateParams) -> GenerationOutput {
    session
        .generate(prompt, params, &AtomicBool::new(false), &mut |_| {})
        .expect("generates")
}

#[test]
fn prompt_lookup_drafts_give_the_plain_greedy_tokens() {
    let model = common::stories_model();
    let tokenizer = &model.tokenizer;
    let texts = [
        "Once upon a time, there was a little girl named Lily. She loved to play. Once upon a time, there was a little",
        "The cat sat on the mat. The dog sat on the mat. The bird sat on the",
        "Tom and Sam went to the park. Tom and Sam",
        "A big red ball",
    ];
    let penalties = SamplingParams {
        repetition_penalty: 1.3,
        presence_penalty: 0.3,
        frequency_penalty: 0.2,
        ..Default::default()
    };
    let mut accepted = 0;
    for text in texts {
        let prompt = tokenizer.encode(text, true, false).expect("encodes");
        for (sampling, stop, max_tokens, context) in [
            (SamplingParams::default(), vec![], 120, 512),
            (penalties.clone(), vec![], 80, 512),
            (SamplingParams::default(), vec!["mat".to_string()], 60, 512),
            (SamplingParams::default(), vec![], 200, prompt.len() + 40),
        ] {
            let plain_params = greedy(max_tokens, sampling, stop);
            let spec_params = GenerateParams {
                speculative: Some(SpeculativeParams::default()),
                ..plain_params.clone()
            };
            let mut plain_session = Session::new(Arc::clone(&model), context).expect("session");
            let mut spec_session = Session::new(Arc::clone(&model), context).expect("session");
            let plain = generate(&mut plain_session, &prompt, &plain_params);
            let spec = generate(&mut spec_session, &prompt, &spec_params);
            assert_eq!(spec.token_ids, plain.token_ids, "{text:?}");
            assert_eq!(spec.text, plain.text);
            assert_eq!(spec.stop_reason, plain.stop_reason);
            let report = spec.speculative.expect("a report");
            assert!(report.accepted <= report.drafted);
            accepted += report.accepted;
            // The sessions hold the same conversation afterwards and continue alike.
            assert_eq!(spec_session.all_tokens(), plain_session.all_tokens());
            if plain_session.token_count() + 20 < context {
                let more = greedy(15, SamplingParams::default(), vec![]);
                let spec_more = GenerateParams {
                    speculative: Some(SpeculativeParams::default()),
                    ..more.clone()
                };
                assert_eq!(
                    generate(&mut spec_session, &[], &spec_more).token_ids,
                    generate(&mut plain_session, &[], &more).token_ids
                );
            }
        }
    }
    assert!(accepted > 50, "drafts were accepted: {accepted}");
}

#[test]
fn settings_it_cannot_keep_exact_are_refused() {
    let model = common::stories_model();
    let mut session = Session::new(Arc::clone(&model), 256).expect("session");
    for params in [
        GenerateParams {
            sampling: SamplingParams {
                temperature: 0.7,
                ..Default::default()
            },
            speculative: Some(SpeculativeParams::default()),
            ..Default::default()
        },
        GenerateParams {
            sampling: SamplingParams {
                temperature: 0.0,
                ..Default::default()
            },
            speculative: Some(SpeculativeParams {
                max_draft: 0,
                ngram_max: 3,
            }),
            ..Default::default()
        },
    ] {
        let e = session
            .generate(&[1], &params, &AtomicBool::new(false), &mut |_| {})
            .expect_err("refused");
        assert_eq!(e.code(), "INVALID_OPTION", "{e}");
    }
    assert_eq!(session.token_count(), 0);
}
