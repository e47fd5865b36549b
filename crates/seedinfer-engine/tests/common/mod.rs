//! Shared by the integration tests: where stories260K lives and what it must generate, and logits of a sequence
//! fed in chunks.
#![allow(dead_code)]

use seedinfer_engine::forward::{forward, LogitsFor, Scratch};
use seedinfer_engine::kv_cache::{KvStore, PagedKv};
use seedinfer_engine::ops_seedinfer::SeedinferOps;
use seedinfer_engine::{
    GenerateParams, KvCacheOptions, KvDtype, LoadOptions, Model, PrefillStrategy, SamplingParams,
    Session, Stage,
};
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

/// The stories260K checkpoint: `$SEEDINFER_STORIES_DIR` or `../shared/models/stories260K` beside the repository.
pub fn stories_dir() -> PathBuf {
    std::env::var_os("SEEDINFER_STORIES_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../../shared/models/stories260K"
            ))
        })
}

/// stories260K loaded with two threads, shared by a test's sessions.
pub fn stories_model() -> Arc<Model> {
    let options = seedinfer_engine::LoadOptions {
        threads: Some(2),
        ..Default::default()
    };
    Arc::new(Model::load(&stories_dir(), &options).expect("stories260K loads"))
}

/// stories260K loaded with two threads and a KV cache of `dtype` elements in blocks of 16 positions, without prefix
/// caching (each session computes its whole prompt).
pub fn stories_with_cache(dtype: KvDtype) -> Arc<Model> {
    let options = LoadOptions {
        threads: Some(2),
        kv_cache: KvCacheOptions {
            dtype,
            block_size: 16,
            prefix_caching: false,
            ..Default::default()
        },
        ..Default::default()
    };
    Arc::new(Model::load(&stories_dir(), &options).expect("stories260K loads"))
}

pub fn read_json(name: &str) -> serde_json::Value {
    let path = stories_dir().join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The reference greedy continuation of `[1]` (200 token ids).
pub fn expected_greedy() -> Vec<u32> {
    read_json("expected_greedy.json")["greedy_token_ids"]
        .as_array()
        .expect("greedy_token_ids")
        .iter()
        .map(|v| v.as_u64().expect("token id") as u32)
        .collect()
}

/// Greedy decoding of `max_tokens` tokens that ignores end-of-generation tokens.
pub fn greedy(max_tokens: usize) -> GenerateParams {
    GenerateParams {
        max_tokens,
        sampling: SamplingParams {
            temperature: 0.0,
            ..Default::default()
        },
        ignore_eos: true,
        ..Default::default()
    }
}

/// LazyLLM keeping half the prompt's tokens from `layer` on, selecting once (in the prefill).
pub fn lazyllm_half_from(layer: usize) -> PrefillStrategy {
    PrefillStrategy::LazyLlm {
        schedule: vec![Stage { layer, keep: 0.5 }],
        reselect_in_decode: false,
    }
}

/// The greedy continuation of `[1]` (BOS) in a fresh 512-token session.
pub fn greedy_from_bos(model: &Arc<Model>, n: usize) -> Vec<u32> {
    let mut session = Session::new(Arc::clone(model), 512).expect("session");
    session
        .generate(&[1], &greedy(n), &AtomicBool::new(false), &mut |_| {})
        .expect("generates")
        .token_ids
}

/// `leading` chunk sizes, then one token at a time up to `total`.
pub fn chunk_plan(total: usize, leading: &[usize]) -> Vec<usize> {
    let mut plan = leading.to_vec();
    plan.resize(total - leading.iter().sum::<usize>() + leading.len(), 1);
    plan
}

/// Logits of every position of `tokens`, fed through `forward` in chunks of the sizes in `plan`.
pub fn logits_in_chunks<C: KvStore + Send>(
    model: &Model,
    cache: &mut C,
    tokens: &[u32],
    plan: &[usize],
    reserve: impl Fn(&mut C, usize),
) -> Vec<f32> {
    let mut scratch = Scratch::default();
    let (mut all, mut logits, mut at) = (Vec::new(), Vec::new(), 0);
    for &n in plan {
        reserve(cache, cache.len() + n);
        let chunk = &tokens[at..at + n];
        model.install(|| {
            forward::<SeedinferOps, _>(
                &model.config,
                &model.weights,
                chunk,
                cache,
                &mut scratch,
                &mut logits,
                LogitsFor::All,
            )
        });
        assert_eq!(logits.len(), n * model.config.vocab_size);
        all.extend_from_slice(&logits);
        at += n;
    }
    assert_eq!(at, tokens.len());
    all
}

pub fn paged_logits(model: &Model, tokens: &[u32], plan: &[usize]) -> Vec<f32> {
    let mut cache = PagedKv::new(model.kv_pool.clone(), tokens.len().max(512));
    logits_in_chunks(model, &mut cache, tokens, plan, |c, total| {
        c.reserve(total).expect("fits the budget")
    })
}
