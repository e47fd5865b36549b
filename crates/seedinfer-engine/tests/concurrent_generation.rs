//! Sessions generating at the same time on one model batch their decode steps (`batcher.rs`): eight sessions on
//! eight threads — different prompts and lengths, greedy and seeded sampling, repetition/presence/frequency
//! penalties, log-probabilities, one aborted mid-way, one joining late (its prompt fed in chunks next to the others'
//! decode steps), two decoding speculatively (their drafts verified in the shared passes) — each produce exactly the
//! tokens they produce alone, the passes really held several sessions, and every KV block returns.

use seedinfer_engine::{
    DraftSource, GenerateParams, LoadOptions, Model, SamplingParams, Session, SpeculativeParams,
    StopReason, TokenLogprobs,
};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};

mod common;

struct Request {
    prompt: Vec<u32>,
    params: GenerateParams,
    /// Abort after this many tokens.
    abort_after: Option<usize>,
    /// Start after the others have generated a while.
    late: bool,
}

fn requests() -> Vec<Request> {
    let sampled = |seed: u64, temperature: f32| SamplingParams {
        temperature,
        seed,
        top_k: 40,
        top_p: 0.95,
        ..Default::default()
    };
    (0..8u32)
        .map(|i| {
            let sampling = match i % 3 {
                0 => SamplingParams {
                    temperature: 0.0,
                    ..Default::default()
                },
                1 => sampled(1000 + i as u64, 0.8),
                _ => SamplingParams {
                    repetition_penalty: 1.3,
                    presence_penalty: 0.4,
                    frequency_penalty: 0.2,
                    ..sampled(7 * i as u64, 1.1)
                },
            };
            Request {
                prompt: std::iter::once(1)
                    .chain((0..3 + 5 * i).map(|t| 10 + (t * 17 + i * 29) % 400))
                    .collect(),
                params: GenerateParams {
                    max_tokens: 40 + 12 * i as usize,
                    sampling,
                    ignore_eos: true,
                    logprobs: (i % 2 == 0).then_some(i as usize),
                    speculative: match i {
                        3 => Some(SpeculativeParams::default()),
                        6 => Some(SpeculativeParams {
                            source: DraftSource::FirstLayers(3),
                            ..Default::default()
                        }),
                        _ => None,
                    },
                    ..Default::default()
                },
                abort_after: (i == 5).then_some(23),
                late: i == 7,
            }
        })
        .collect()
}

/// The tokens of `r` generated in a fresh session, with their log-probabilities when asked for.
fn run(model: &Arc<Model>, r: &Request) -> (Vec<u32>, StopReason, Vec<TokenLogprobs>) {
    let mut session = Session::new(Arc::clone(model), 512).expect("session");
    let abort = AtomicBool::new(false);
    let mut seen = 0;
    let out = session
        .generate(&r.prompt, &r.params, &abort, &mut |_| {
            seen += 1;
            if r.abort_after == Some(seen) {
                abort.store(true, Ordering::Relaxed);
            }
        })
        .expect("generates");
    assert_eq!(
        out.logprobs.len(),
        if r.params.logprobs.is_some() {
            out.token_ids.len()
        } else {
            0
        }
    );
    (out.token_ids, out.stop_reason, out.logprobs)
}

#[test]
fn concurrent_sessions_batch_and_each_gets_its_tokens_alone() {
    let options = LoadOptions {
        threads: Some(2),
        // Prompts that arrive while others decode are fed in chunks of 8 tokens next to the decode steps.
        max_batch_tokens: Some(16),
        ..Default::default()
    };
    let model = Arc::new(Model::load(&common::stories_dir(), &options).expect("loads"));
    let requests = requests();
    let alone: Vec<_> = requests.iter().map(|r| run(&model, r)).collect();
    assert_eq!(model.batcher.stats().largest, 1, "one at a time, no batch");

    // The runs alone left their prompts' blocks in the prefix cache: drop them, so every prompt is computed again.
    model.kv_pool.clear_prefix_cache();
    let before = model.batcher.stats();
    let early = requests.iter().filter(|r| !r.late).count();
    let start = Arc::new(Barrier::new(early));
    let together: Vec<_> = std::thread::scope(|scope| {
        let handles: Vec<_> = requests
            .iter()
            .map(|r| {
                let (model, start) = (Arc::clone(&model), Arc::clone(&start));
                scope.spawn(move || {
                    if r.late {
                        // Join once the others decode (a few batched steps each).
                        while model.batcher.stats().steps < before.steps + 24 {
                            std::thread::sleep(std::time::Duration::from_micros(200));
                        }
                    } else {
                        start.wait();
                    }
                    run(&model, r)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .collect()
    });
    for (i, (a, b)) in alone.iter().zip(&together).enumerate() {
        assert_eq!(
            a, b,
            "request {i}: batched tokens differ from the request alone"
        );
    }
    assert_eq!(together[5].1, StopReason::Aborted);
    let stats = model.batcher.stats();
    assert!(
        stats.largest > 1 && stats.steps > stats.passes,
        "the concurrent sessions shared passes: {stats:?}"
    );
    assert!(
        stats.verified_tokens > before.verified_tokens,
        "the speculative sessions verified drafts in the shared passes: {stats:?}"
    );
    let late = &requests[7];
    assert!(
        stats.prompt_tokens - before.prompt_tokens >= late.prompt.len() as u64
            && late.prompt.len() > 16,
        "the late request's prompt went through the batcher in chunks: {stats:?}"
    );
    let pool = model.kv_pool.stats();
    assert_eq!(
        pool.blocks_used, pool.blocks_cached,
        "every session's blocks return (those left are the prefix cache's)"
    );
}
