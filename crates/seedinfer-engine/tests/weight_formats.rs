//! Weights converted at load (`LoadOptions::weights`): stories260K stays on its greedy reference in Q8_0, and
//! matrices whose rows are not whole blocks visibly stay f32.

use seedinfer_engine::{LoadOptions, Model, WeightFormat};
use std::sync::Arc;

mod common;
use common::{expected_greedy, greedy_from_bos, stories_dir};

fn greedy_tokens(weights: WeightFormat, n: usize) -> (Arc<Model>, Vec<u32>) {
    let options = LoadOptions {
        threads: Some(2),
        weights: Some(weights),
        ..Default::default()
    };
    let model = Arc::new(Model::load(&stories_dir(), &options).expect("stories260K loads"));
    let tokens = greedy_from_bos(&model, n);
    (model, tokens)
}

fn matching_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

#[test]
fn q8_0_weights_keep_the_greedy_reference_for_100_tokens_and_down_proj_falls_back_to_f32() {
    let (model, tokens) = greedy_tokens(WeightFormat::Q8_0, 200);
    let same = matching_prefix(&tokens, &expected_greedy());
    println!("q8_0: {same} of 200 reference tokens");
    assert!(same >= 100, "only {same} tokens match");
    assert_eq!(model.info.compute_format, "Q8_0 x int8 ×31, f32 ×5");
    assert_eq!(model.info.weight_fallbacks.len(), 5);
    assert!(model.info.weight_fallbacks[0]
        .starts_with("model.layers.0.mlp.down_proj.weight: 172 columns"));
    // 4.25 bits per weight instead of 32 for everything but the five down projections.
    let f32_bytes = 260_032 * 4;
    assert!(
        model.info.weight_bytes < f32_bytes / 2,
        "{} bytes",
        model.info.weight_bytes
    );
}

#[test]
fn four_bit_weights_load_and_stay_close_to_the_reference() {
    for format in [WeightFormat::Q4_0, WeightFormat::Q4_1] {
        let (model, tokens) = greedy_tokens(format, 50);
        let same = matching_prefix(&tokens, &expected_greedy());
        println!(
            "{format:?}: {same} of 50 reference tokens; {}",
            model.info.compute_format
        );
        assert!(model.info.compute_format.contains("x int8 ×31"));
        assert!(same >= 5, "{format:?}: only {same} tokens match");
    }
}

#[test]
fn f16_weights_are_kept_half_and_reproduce_the_reference() {
    let (model, tokens) = greedy_tokens(WeightFormat::F16, 200);
    let same = matching_prefix(&tokens, &expected_greedy());
    println!("f16: {same} of 200 reference tokens");
    assert!(same >= 100, "only {same} tokens match");
    assert_eq!(model.info.compute_format, "F16 x f32 ×36");
    assert!(
        model.info.weight_bytes < 260_032 * 3,
        "{} bytes",
        model.info.weight_bytes
    );
}

#[test]
fn f32_weights_reproduce_the_reference_from_a_quantised_request_path() {
    let (model, tokens) = greedy_tokens(WeightFormat::F32, 200);
    assert_eq!(tokens, expected_greedy());
    assert_eq!(model.info.compute_format, "f32 ×36");
    assert!(model.info.weight_fallbacks.is_empty());
}
