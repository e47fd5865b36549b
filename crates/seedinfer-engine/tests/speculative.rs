//! Speculative decoding is exact: on stories260K, greedy output with drafts from prompt lookup, from a draft model
//! (the model itself, and an 8-bit copy) and from the model's first layers equals plain greedy output token for
//! token — many prompts (repetitive ones, where drafts are accepted, and others), repetition/presence/frequency
//! penalties, stop strings, `max_tokens` and the context's end, and a continued session — while drafts are really
//! verified and accepted. Sampled output with prompt-lookup drafts is plain sampling's for a seed; with drafts drawn
//! from a draft's own distribution, the next token over 10,000 seeds follows its exact distribution (a chi-square
//! test that does flag a change of temperature). Settings it cannot keep exact are refused.

use seedinfer_engine::sampler::Sampler;
use seedinfer_engine::{
    DraftSource, GenerateParams, GenerationOutput, LoadOptions, Model, SamplingParams, Session,
    SpeculativeParams, WeightFormat,
};
use std::collections::BTreeMap;
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

/// Every draft source on stories260K: prompt lookup, the model itself as its draft, an 8-bit copy, and the
/// first one to four of its five layers.
fn draft_sources(model: &Arc<Model>) -> Vec<DraftSource> {
    let q8 = Model::load(
        &common::stories_dir(),
        &LoadOptions {
            threads: Some(2),
            weights: Some(WeightFormat::Q8_0),
            ..Default::default()
        },
    )
    .expect("stories260K loads as Q8_0");
    let mut sources = vec![
        DraftSource::PromptLookup,
        DraftSource::Model(Arc::clone(model)),
        DraftSource::Model(Arc::new(q8)),
    ];
    sources.extend((1..model.config.layers).map(DraftSource::FirstLayers));
    sources
}

fn with_source(source: &DraftSource) -> Option<SpeculativeParams> {
    Some(SpeculativeParams {
        source: source.clone(),
        ..Default::default()
    })
}

#[test]
fn drafts_from_every_source_give_the_plain_greedy_tokens() {
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
    for source in draft_sources(&model) {
        let (mut accepted, mut drafted) = (0, 0);
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
                    speculative: with_source(&source),
                    ..plain_params.clone()
                };
                let mut plain_session = Session::new(Arc::clone(&model), context).expect("session");
                let mut spec_session = Session::new(Arc::clone(&model), context).expect("session");
                let plain = generate(&mut plain_session, &prompt, &plain_params);
                let spec = generate(&mut spec_session, &prompt, &spec_params);
                assert_eq!(spec.token_ids, plain.token_ids, "{source:?} {text:?}");
                assert_eq!(spec.text, plain.text);
                assert_eq!(spec.stop_reason, plain.stop_reason);
                let report = spec.speculative.expect("a report");
                assert!(report.accepted <= report.drafted);
                accepted += report.accepted;
                drafted += report.drafted;
                // The sessions hold the same conversation afterwards and continue alike.
                assert_eq!(spec_session.all_tokens(), plain_session.all_tokens());
                if plain_session.token_count() + 20 < context {
                    let more = greedy(15, SamplingParams::default(), vec![]);
                    let spec_more = GenerateParams {
                        speculative: with_source(&source),
                        ..more.clone()
                    };
                    assert_eq!(
                        generate(&mut spec_session, &[], &spec_more).token_ids,
                        generate(&mut plain_session, &[], &more).token_ids
                    );
                }
            }
        }
        // Truncated to one or two layers, stories260K drafts poorly (hardly a token accepted: drafting then pauses
        // more and more), yet drafts are verified.
        let least = match source {
            DraftSource::FirstLayers(n) if n < 3 => 0,
            DraftSource::FirstLayers(_) => 10,
            _ => 50,
        };
        eprintln!("{source:?}: {accepted} of {drafted} drafts accepted");
        assert!(
            drafted > 0 && accepted >= least,
            "{source:?}: {accepted} of {drafted} drafts accepted"
        );
    }
}

#[test]
fn sampling_with_prompt_lookup_drafts_gives_plain_sampling_for_a_seed() {
    let model = common::stories_model();
    let prompt = model
        .tokenizer
        .encode(
            "The cat sat on the mat. The dog sat on the mat. The",
            true,
            false,
        )
        .expect("encodes");
    let mut accepted = 0;
    for seed in 0..40 {
        let plain_params = GenerateParams {
            max_tokens: 60,
            sampling: SamplingParams {
                temperature: 0.6,
                repetition_penalty: 1.1,
                seed,
                ..Default::default()
            },
            ..Default::default()
        };
        let spec_params = GenerateParams {
            speculative: Some(SpeculativeParams::default()),
            ..plain_params.clone()
        };
        let plain = generate(
            &mut Session::new(Arc::clone(&model), 256).expect("session"),
            &prompt,
            &plain_params,
        );
        let spec = generate(
            &mut Session::new(Arc::clone(&model), 256).expect("session"),
            &prompt,
            &spec_params,
        );
        assert_eq!(spec.token_ids, plain.token_ids, "seed {seed}");
        accepted += spec.speculative.expect("a report").accepted;
    }
    assert!(accepted > 50, "drafts were accepted: {accepted}");
}

/// How often each second generated token occurs over `seeds` generations after `prompt`.
fn second_tokens(
    model: &Arc<Model>,
    prompt: &[u32],
    sampling: &SamplingParams,
    speculative: Option<SpeculativeParams>,
    seeds: u64,
) -> (BTreeMap<u32, u32>, usize) {
    let mut counts = BTreeMap::new();
    let mut accepted = 0;
    let mut session = Session::new(Arc::clone(model), 64).expect("session");
    for seed in 0..seeds {
        let params = GenerateParams {
            // The second token is drafted (a draft needs a token left after it).
            max_tokens: 3,
            ignore_eos: true,
            sampling: SamplingParams {
                seed,
                ..sampling.clone()
            },
            speculative: speculative.clone(),
            ..Default::default()
        };
        // The prompt stays in the session: each seed generates after it.
        let fed = if seed == 0 { prompt } else { &[] };
        let out = generate(&mut session, fed, &params);
        *counts.entry(out.token_ids[1]).or_insert(0) += 1;
        accepted += out.speculative.map_or(0, |r| r.accepted);
        session.rewind(out.token_ids.len()).expect("rewinds");
    }
    (counts, accepted)
}

/// The exact distribution of the second generated token after `prompt` under `sampling` (no penalties):
/// the sum over first tokens t of p(t) p(. | t), from plain forward passes.
fn second_token_distribution(
    model: &Model,
    prompt: &[u32],
    sampling: &SamplingParams,
) -> BTreeMap<u32, f64> {
    let vocab = model.config.vocab_size;
    let last_row = |tokens: &[u32]| {
        let logits = common::paged_logits(model, tokens, &[tokens.len()]);
        logits[logits.len() - vocab..].to_vec()
    };
    let mut sampler = Sampler::new(sampling.clone());
    let first = sampler.distribution(&last_row(prompt), prompt, None);
    let mut second = BTreeMap::new();
    for (t, p) in first.probabilities() {
        let history: Vec<u32> = prompt.iter().copied().chain([t]).collect();
        for (u, q) in sampler
            .distribution(&last_row(&history), &history, None)
            .probabilities()
        {
            *second.entry(u).or_insert(0.0) += p as f64 * q as f64;
        }
    }
    second
}

/// Pearson's chi-square statistic of `counts` (of `n` draws) against `expected` probabilities, over the tokens
/// expected at least 5 times (the rarer ones pooled), and its degrees of freedom.
fn chi_square(counts: &BTreeMap<u32, u32>, expected: &BTreeMap<u32, f64>, n: u64) -> (f64, usize) {
    let mut bins: Vec<(f64, f64)> = Vec::new();
    let mut rare = (0.0, 0.0);
    let tokens: std::collections::BTreeSet<u32> =
        counts.keys().chain(expected.keys()).copied().collect();
    for t in tokens {
        let seen = counts.get(&t).copied().unwrap_or(0) as f64;
        let wanted = expected.get(&t).copied().unwrap_or(0.0) * n as f64;
        if wanted >= 5.0 {
            bins.push((seen, wanted));
        } else {
            rare = (rare.0 + seen, rare.1 + wanted);
        }
    }
    if rare.1 > 0.0 {
        bins.push(rare);
    }
    let statistic = bins.iter().map(|(o, e)| (o - e).powi(2) / e).sum();
    (statistic, bins.len() - 1)
}

/// The chi-square critical value at significance 0.001 for `df` degrees of freedom (Wilson-Hilferty).
fn critical_value(df: usize) -> f64 {
    let k = df as f64;
    let z = 3.090; // the standard normal's 0.999 quantile
    k * (1.0 - 2.0 / (9.0 * k) + z * (2.0 / (9.0 * k)).sqrt()).powi(3)
}

#[test]
fn sampling_with_drafts_from_their_own_distribution_follows_the_exact_distribution() {
    // One thread: passes over a few rows of a tiny model cost less than waking a second one.
    let model = Arc::new(
        Model::load(
            &common::stories_dir(),
            &LoadOptions {
                threads: Some(1),
                ..Default::default()
            },
        )
        .expect("stories260K loads"),
    );
    let prompt = model
        .tokenizer
        .encode("Once upon a time, there was a", true, false)
        .expect("encodes");
    const SEEDS: u64 = 10_000;
    for sampling in [
        SamplingParams {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            ..Default::default()
        },
        SamplingParams::default(),
    ] {
        let exact = second_token_distribution(&model, &prompt, &sampling);
        // Three layers of five draft a distribution unlike the model's: many drafts are rejected.
        let spec = with_source(&DraftSource::FirstLayers(3));
        let (drafted, accepted) = second_tokens(&model, &prompt, &sampling, spec, SEEDS);
        let (statistic, df) = chi_square(&drafted, &exact, SEEDS);
        assert!(
            df >= 5 && statistic < critical_value(df),
            "{sampling:?}: chi-square {statistic:.1} with {df} degrees of freedom"
        );
        assert!(
            accepted > 0 && (accepted as u64) < SEEDS * 9 / 10,
            "accepted {accepted} of {SEEDS}"
        );
        if sampling.top_k != 0 {
            continue;
        }
        // The test notices a distribution that differs as little as a temperature of 1.1 makes it.
        let warmer = SamplingParams {
            temperature: sampling.temperature * 1.1,
            ..sampling.clone()
        };
        let (other, _) = second_tokens(&model, &prompt, &warmer, None, SEEDS);
        let (statistic, df) = chi_square(&other, &exact, SEEDS);
        assert!(
            statistic > critical_value(df),
            "{sampling:?}: a warmer sample passes: chi-square {statistic:.1}, {df} degrees of freedom"
        );
    }
}

#[test]
fn settings_it_cannot_serve_are_refused() {
    let model = common::stories_model();
    let mut session = Session::new(Arc::clone(&model), 256).expect("session");
    for params in [
        GenerateParams {
            sampling: SamplingParams {
                temperature: 0.0,
                ..Default::default()
            },
            speculative: with_source(&DraftSource::FirstLayers(model.config.layers)),
            ..Default::default()
        },
        GenerateParams {
            sampling: SamplingParams {
                temperature: 0.0,
                ..Default::default()
            },
            speculative: Some(SpeculativeParams {
                max_draft: 0,
                ..Default::default()
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
