//! XAttention (issue 24) on stories260K through `Session::generate`: the exactness switch (threshold 1 gives the
//! dense output token for token, alone and with token pruning, on f32, f16 and int8 caches), a sparse prefill
//! that really leaves blocks out and reports it, alone and under token pruning, and settings that are refused.

use seedinfer_engine::{
    EngineError, GenerateParams, KvDtype, Model, PrefillStrategy, Session, Stage, XAttention,
};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

mod common;
use common::{greedy, greedy_from_bos, lazyllm_half_from, stories_with_cache};

fn load(dtype: KvDtype) -> Arc<Model> {
    stories_with_cache(dtype)
}

/// Two of stories260K's own continuations back to back: 420 tokens of text the model knows how to continue.
fn prompt(model: &Arc<Model>) -> Vec<u32> {
    let mut tokens = vec![1];
    tokens.extend(greedy_from_bos(model, 300));
    tokens.extend(greedy_from_bos(model, 120));
    tokens
}

fn run(
    model: &Arc<Model>,
    prompt: &[u32],
    params: &GenerateParams,
) -> seedinfer_engine::Result<seedinfer_engine::GenerationOutput> {
    Session::new(Arc::clone(model), 512)?.generate(
        prompt,
        params,
        &AtomicBool::new(false),
        &mut |_| {},
    )
}

fn sparse(threshold: f64) -> XAttention {
    XAttention {
        stride: 4,
        block_size: 32,
        threshold,
        ..XAttention::default()
    }
}

#[test]
fn a_threshold_of_one_gives_the_dense_output() {
    for dtype in [KvDtype::F32, KvDtype::F16, KvDtype::Int8] {
        let model = load(dtype);
        let prompt = prompt(&model);
        let dense = run(&model, &prompt, &greedy(40)).unwrap();
        let lazy_all = PrefillStrategy::LazyLlm {
            schedule: vec![
                Stage {
                    layer: 1,
                    keep: 1.0,
                },
                Stage {
                    layer: 3,
                    keep: 1.0,
                },
            ],
            reselect_in_decode: true,
        };
        for prefill in [PrefillStrategy::Dense, lazy_all] {
            let params = GenerateParams {
                prefill: prefill.clone(),
                xattention: Some(sparse(1.0)),
                ..greedy(40)
            };
            let out = run(&model, &prompt, &params).unwrap();
            assert_eq!(
                out.token_ids,
                dense.token_ids,
                "{} + xattention τ = 1, {dtype:?} cache",
                prefill.name()
            );
            assert_eq!(out.prefill.selected_blocks, 0, "no estimate is computed");
        }
    }
}

#[test]
fn a_sparse_prefill_leaves_blocks_out_alone_and_with_token_pruning() {
    let model = load(KvDtype::F16);
    let prompt = prompt(&model);
    let dense = run(&model, &prompt, &greedy(24)).unwrap();
    let mut densities = Vec::new();
    for threshold in [0.99, 0.9, 0.5] {
        let params = GenerateParams {
            xattention: Some(sparse(threshold)),
            ..greedy(24)
        };
        let out = run(&model, &prompt, &params).unwrap();
        let (selected, causal) = (out.prefill.selected_blocks, out.prefill.causal_blocks);
        // 421 tokens in chunks of 256: query blocks 0..=13 of 32 positions, per layer (5) and KV head (4).
        let blocks: u64 = (1..=14).sum::<u64>() * 5 * 4;
        assert_eq!(causal, blocks);
        assert!(selected < causal, "τ = {threshold}: {selected} of {causal}");
        densities.push(selected as f64 / causal as f64);
        assert_eq!(out.token_ids.len(), 24);
        if threshold == 0.99 {
            // Nearly all the mass: the first token is still dense's.
            assert_eq!(out.token_ids[0], dense.token_ids[0]);
        }
    }
    assert!(
        densities.windows(2).all(|w| w[0] >= w[1]),
        "a lower threshold keeps fewer blocks: {densities:?}"
    );
    // Composed with token pruning: pruning picks the tokens, XAttention the blocks among those a layer holds.
    let params = GenerateParams {
        prefill: lazyllm_half_from(2),
        xattention: Some(sparse(0.9)),
        ..greedy(16)
    };
    let out = run(&model, &prompt, &params).unwrap();
    assert!(out.prefill.dropped > 0 && out.prefill.selected_blocks < out.prefill.causal_blocks);
    assert_eq!(out.token_ids.len(), 16);
}

#[test]
fn bad_settings_are_refused_before_any_work() {
    let model = load(KvDtype::F16);
    for x in [
        XAttention {
            block_size: 24,
            ..sparse(0.9)
        },
        XAttention {
            block_size: 36,
            stride: 3,
            ..sparse(0.9)
        },
        XAttention {
            threshold: 0.0,
            ..sparse(0.9)
        },
    ] {
        let params = GenerateParams {
            xattention: Some(x),
            ..greedy(4)
        };
        let mut session = Session::new(Arc::clone(&model), 512).unwrap();
        let err = session.generate(&[1, 2, 3], &params, &AtomicBool::new(false), &mut |_| {});
        assert!(matches!(err, Err(EngineError::InvalidOption(_))), "{x:?}");
        assert_eq!(session.token_count(), 0);
    }
}
