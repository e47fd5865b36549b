//! Token pruning (issue 6) on stories260K: the exactness switch of each strategy, pruning that really skips
//! tokens at the scheduled layers, revival from the aux cache in decode (each position computed once per layer),
//! and pruned sessions that fork, rewind and refuse to be saved.

use seedinfer_engine::{GenerateParams, KvDtype, Model, PrefillStrategy, Session, Stage};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

mod common;
use common::{greedy, greedy_from_bos, stories_with_cache};

const LAYERS: usize = 5;

fn load(dtype: KvDtype) -> Arc<Model> {
    stories_with_cache(dtype)
}

/// BOS followed by stories260K's own greedy continuation: `len` tokens of natural text.
fn story(model: &Arc<Model>, len: usize) -> Vec<u32> {
    let mut tokens = vec![1];
    tokens.extend(greedy_from_bos(model, len - 1));
    tokens
}

fn with(strategy: PrefillStrategy, n: usize) -> GenerateParams {
    GenerateParams {
        prefill: strategy,
        ..greedy(n)
    }
}

fn run(
    session: &mut Session,
    prompt: &[u32],
    params: &GenerateParams,
) -> seedinfer_engine::GenerationOutput {
    session
        .generate(prompt, params, &AtomicBool::new(false), &mut |_| {})
        .expect("generates")
}

/// A schedule from `(layer, keep)` pairs.
fn stages(pairs: &[(usize, f64)]) -> Vec<Stage> {
    pairs
        .iter()
        .map(|&(layer, keep)| Stage { layer, keep })
        .collect()
}

fn lazy(pairs: &[(usize, f64)]) -> PrefillStrategy {
    PrefillStrategy::LazyLlm {
        schedule: stages(pairs),
        reselect_in_decode: true,
    }
}

/// A prompt that is not the model's own continuation (so the next tokens are not a foregone conclusion).
fn prompt(model: &Arc<Model>) -> Vec<u32> {
    let mut tokens = story(model, 150);
    tokens.extend_from_slice(&story(model, 60)[1..]);
    tokens
}

#[test]
fn keeping_every_token_gives_the_dense_output() {
    for dtype in [KvDtype::F32, KvDtype::Int8] {
        let model = load(dtype);
        let prompt = prompt(&model);
        let dense = run(
            &mut Session::new(Arc::clone(&model), 512).unwrap(),
            &prompt,
            &greedy(40),
        )
        .token_ids;
        let switches = [
            lazy(&[(1, 1.0), (2, 1.0), (3, 1.0)]),
            PrefillStrategy::PromptDistill {
                layer: 2,
                keep_tokens: prompt.len(),
                question_tokens: 8,
                pooling: 5,
            },
            PrefillStrategy::Feather {
                schedule: stages(&[(1, 1.0), (2, 1.0)]),
                uniform_share: 0.25,
            },
        ];
        for strategy in switches {
            let mut session = Session::new(Arc::clone(&model), 512).unwrap();
            let out = run(&mut session, &prompt, &with(strategy.clone(), 40));
            assert_eq!(
                out.token_ids,
                dense,
                "{} with every token kept ({dtype:?} cache)",
                strategy.name()
            );
            assert_eq!(out.prefill.layer_tokens, vec![prompt.len(); LAYERS]);
            assert_eq!(out.prefill.dropped, 0);
            assert!(session.pruned_positions().is_none());
        }
    }
}

#[test]
fn lazyllm_computes_fewer_tokens_at_each_stage() {
    let model = load(KvDtype::F16);
    let prompt = prompt(&model);
    let n = prompt.len();
    let mut session = Session::new(Arc::clone(&model), 512).unwrap();
    let out = run(&mut session, &prompt, &with(lazy(&[(1, 0.6), (3, 0.3)]), 1));
    let kept = |f: f64| (f * n as f64).ceil() as usize;
    assert_eq!(
        out.prefill.layer_tokens,
        vec![n, n, kept(0.6), kept(0.6), kept(0.3)]
    );
    assert_eq!(out.prefill.dropped, n - kept(0.3));
    let pruned = session.pruned_positions().expect("holes left");
    assert_eq!(pruned.aux_len(), n - kept(0.3));
    assert_eq!(pruned.held_at(4), kept(0.3));
    // The last token is never dropped.
    assert_eq!(pruned.depth(n - 1), Some(LAYERS - 1));
    // Pruning changes the computation: the first-token logits are not dense's (the token may still agree).
    let mut dense = Session::new(Arc::clone(&model), 512).unwrap();
    run(&mut dense, &prompt, &greedy(1));
    assert_ne!(dense.last_logits(), session.last_logits());
}

#[test]
fn a_pruned_token_selected_in_decode_is_computed_from_the_aux_cache() {
    let model = load(KvDtype::F16);
    let prompt = prompt(&model);
    let n = prompt.len();
    let mut session = Session::new(Arc::clone(&model), 512).unwrap();
    // Prefill drops half the prompt after layer 2.
    let first = run(&mut session, &prompt, &with(lazy(&[(2, 0.5)]), 1));
    let dropped = first.prefill.dropped;
    assert!(dropped > 0);
    let pruned = session.pruned_positions().unwrap();
    let dropped_positions: Vec<usize> = (0..n).filter(|&p| pruned.in_aux(p)).collect();
    assert_eq!(dropped_positions.len(), dropped);
    assert!(dropped_positions
        .iter()
        .all(|&p| pruned.depth(p) == Some(2)));
    // Decode with a schedule that selects every token at layer 2: every dropped token is revived there.
    let second = run(&mut session, &[], &with(lazy(&[(2, 1.0)]), 3));
    assert_eq!(second.prefill.revived, dropped);
    // Revived tokens were computed from their layer-2 state: at layers 3 and 4 only, never at layers 0..=2.
    assert_eq!(
        second.prefill.layer_tokens,
        vec![1, 1, 1, 1 + dropped, 1 + dropped]
    );
    // Every position now holds every layer's keys and values, each computed exactly once per layer.
    assert!(session.pruned_positions().is_none());
    let positions = n + 3; // prompt, first generated token, two decode steps fed
    let computed_per_layer: Vec<usize> = (0..LAYERS)
        .map(|l| first.prefill.layer_tokens[l] + second.prefill.layer_tokens[l] + 2)
        .collect();
    assert_eq!(computed_per_layer, vec![positions; LAYERS]);
}

#[test]
fn decode_steps_select_again_and_revive_under_lazyllm() {
    let model = load(KvDtype::F16);
    let prompt = prompt(&model);
    let mut session = Session::new(Arc::clone(&model), 512).unwrap();
    let out = run(
        &mut session,
        &prompt,
        &with(lazy(&[(1, 0.5), (3, 0.25)]), 24),
    );
    assert_eq!(out.token_ids.len(), 24);
    // Later steps' queries choose differently from the prompt's last token: some dropped tokens come back.
    assert!(out.decode_revived > 0, "no token was revived in decode");
    let pruned = session.pruned_positions().unwrap();
    for l in 0..LAYERS {
        assert!(pruned.held_at(l) <= session.all_tokens().len());
    }
}

#[test]
fn promptdistill_trims_every_layer_and_feather_keeps_early_layers() {
    let model = load(KvDtype::F16);
    let prompt = prompt(&model);
    let n = prompt.len();
    let mut session = Session::new(Arc::clone(&model), 512).unwrap();
    let distill = PrefillStrategy::PromptDistill {
        layer: 2,
        keep_tokens: 64,
        question_tokens: 16,
        pooling: 5,
    };
    let out = run(&mut session, &prompt, &with(distill, 8));
    assert_eq!(out.prefill.layer_tokens, vec![n, n, n, 80, 80]);
    let pruned = session.pruned_positions().unwrap();
    // Trimmed tokens are gone from every layer, question tokens stay.
    assert_eq!(pruned.held_at(0), 80 + 7);
    assert!((n - 16..n).all(|p| pruned.depth(p) == Some(LAYERS - 1)));
    assert_eq!(pruned.aux_len(), 0);
    assert_eq!(out.decode_revived, 0);

    let mut session = Session::new(Arc::clone(&model), 512).unwrap();
    let feather = PrefillStrategy::Feather {
        schedule: stages(&[(1, 0.5), (2, 0.25)]),
        uniform_share: 0.25,
    };
    let out = run(&mut session, &prompt, &with(feather, 8));
    let kept = |f: f64| (f * n as f64).ceil() as usize;
    assert_eq!(
        out.prefill.layer_tokens,
        vec![n, n, kept(0.5), kept(0.25), kept(0.25)]
    );
    let pruned = session.pruned_positions().unwrap();
    // 8 generated tokens: the last is pending, 7 were fed.
    assert_eq!(pruned.held_at(0), n + 7);
    assert_eq!(pruned.held_at(1), n + 7);
    assert_eq!(pruned.held_at(2), kept(0.5) + 7);
}

#[test]
fn pruned_sessions_fork_rewind_and_refuse_to_save() {
    let model = load(KvDtype::F16);
    let prompt = prompt(&model);
    let mut session = Session::new(Arc::clone(&model), 512).unwrap();
    run(&mut session, &prompt, &with(lazy(&[(1, 0.5)]), 4));
    let mut fork = session.fork();
    // Revival writes into blocks the fork shares: each gets its own copy, and both continue alike.
    let revive_all = with(lazy(&[(1, 1.0)]), 12);
    let a = run(&mut session, &[], &revive_all).token_ids;
    let b = run(&mut fork, &[], &revive_all).token_ids;
    assert_eq!(a, b);
    let dir = tempfile::tempdir().unwrap();
    let mut pruned = Session::new(Arc::clone(&model), 512).unwrap();
    run(&mut pruned, &prompt, &with(lazy(&[(1, 0.5)]), 2));
    let error = pruned.save(&dir.path().join("s.session")).unwrap_err();
    assert_eq!(error.code(), "INVALID_OPTION");
    // Rewinding into the dense part of the conversation leaves no holes.
    let mut dense_then_pruned = Session::new(Arc::clone(&model), 512).unwrap();
    run(&mut dense_then_pruned, &prompt[..40], &greedy(1));
    run(
        &mut dense_then_pruned,
        &prompt[40..],
        &with(lazy(&[(1, 0.5)]), 1),
    );
    assert!(dense_then_pruned.pruned_positions().is_some());
    let count = dense_then_pruned.token_count();
    dense_then_pruned.rewind(count - 30).unwrap();
    assert!(dense_then_pruned.pruned_positions().is_none());
    assert!(dense_then_pruned
        .save(&dir.path().join("d.session"))
        .is_ok());
}

#[test]
fn bad_schedules_are_refused() {
    let model = load(KvDtype::F16);
    let mut session = Session::new(Arc::clone(&model), 512).unwrap();
    for strategy in [
        lazy(&[(4, 0.5)]),
        lazy(&[(2, 0.5), (1, 0.3)]),
        lazy(&[(1, 0.0)]),
        lazy(&[(1, 1.5)]),
        PrefillStrategy::PromptDistill {
            layer: 1,
            keep_tokens: 0,
            question_tokens: 0,
            pooling: 5,
        },
        PrefillStrategy::PromptDistill {
            layer: 1,
            keep_tokens: 8,
            question_tokens: 0,
            pooling: 4,
        },
    ] {
        let error = session
            .generate(
                &[1, 2, 3],
                &with(strategy, 1),
                &AtomicBool::new(false),
                &mut |_| {},
            )
            .unwrap_err();
        assert_eq!(error.code(), "INVALID_OPTION");
    }
    assert_eq!(session.token_count(), 0);
}
