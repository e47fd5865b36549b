//! Llama 3.x (RoPE scaling), Qwen2/2.5, Qwen3, Gemma 3 (sliding-window layers) and Phi-3 (fused projections)
//! against transformers: tiny random-weight checkpoints made by
//! `scripts/make-architecture-fixtures.py`, with transformers' f32 logits at every prompt position and its greedy
//! continuation (`tests/data/architectures/<name>/reference.json`).

use seedinfer_engine::{EngineError, KvCacheOptions, KvDtype, LoadOptions, Model, Session};
use seedinfer_formats::{GgufFile, GgufValue, GgufWriter};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

mod common;
use common::{chunk_plan, greedy, paged_logits};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/architectures")
        .join(name)
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Loads with an f32 KV cache: the comparison with transformers is in f32 throughout.
fn load(dir: &Path) -> Result<Arc<Model>, EngineError> {
    let options = LoadOptions {
        threads: Some(2),
        kv_cache: KvCacheOptions {
            dtype: KvDtype::F32,
            ..Default::default()
        },
        ..Default::default()
    };
    Model::load(dir, &options).map(Arc::new)
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .expect("an array of token ids")
        .iter()
        .map(|t| t.as_u64().expect("a token id") as u32)
        .collect()
}

fn rows(v: &Value) -> Vec<Vec<f32>> {
    v.as_array()
        .expect("an array of logit rows")
        .iter()
        .map(|row| {
            row.as_array()
                .expect("a logit row")
                .iter()
                .map(|x| x.as_f64().expect("a logit") as f32)
                .collect()
        })
        .collect()
}

/// Our logits after each prefix of `prompt` (a fresh session per prefix, so each is a batched prefill).
fn logits_per_position(model: &Arc<Model>, prompt: &[u32]) -> Vec<Vec<f32>> {
    (1..=prompt.len())
        .map(|n| {
            let mut session = Session::new(Arc::clone(model), 64).expect("session");
            session
                .generate(
                    &prompt[..n],
                    &greedy(1),
                    &AtomicBool::new(false),
                    &mut |_| {},
                )
                .expect("generates");
            session.last_logits().expect("logits").to_vec()
        })
        .collect()
}

/// `max |ours - reference| / std(reference)` over every position and token.
fn relative_max_error(ours: &[Vec<f32>], reference: &[Vec<f32>]) -> f64 {
    assert_eq!(ours.len(), reference.len());
    let all: Vec<f64> = reference.iter().flatten().map(|&v| v as f64).collect();
    let mean = all.iter().sum::<f64>() / all.len() as f64;
    let std = (all.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / all.len() as f64).sqrt();
    let max = ours
        .iter()
        .zip(reference)
        .flat_map(|(a, b)| {
            assert_eq!(a.len(), b.len());
            a.iter().zip(b).map(|(a, b)| (a - b).abs() as f64)
        })
        .fold(0.0, f64::max);
    max / std
}

/// Logits within 1e-3 · std of transformers' at every position, and the same greedy continuation.
fn check_against_transformers(name: &str) {
    let dir = fixture(name);
    let reference = read_json(&dir.join("reference.json"));
    let model = load(&dir).unwrap_or_else(|e| panic!("{name} loads: {e}"));
    let prompt = ids(&reference["prompt"]);
    let error = relative_max_error(
        &logits_per_position(&model, &prompt),
        &rows(&reference["logits"]),
    );
    assert!(error <= 1e-3, "{name}: max |Δlogit| = {error:.2e} · std");
    let expected = ids(&reference["greedy"]);
    let out = Session::new(Arc::clone(&model), 64)
        .expect("session")
        .generate(
            &prompt,
            &greedy(expected.len()),
            &AtomicBool::new(false),
            &mut |_| {},
        )
        .expect("generates");
    assert_eq!(out.token_ids, expected, "{name}: greedy continuation");
}

#[test]
fn llama3_rope_scaling_matches_transformers() {
    check_against_transformers("llama3");
}

#[test]
fn qwen2_matches_transformers() {
    check_against_transformers("qwen2");
}

#[test]
fn qwen3_matches_transformers() {
    check_against_transformers("qwen3");
}

#[test]
fn gemma3_matches_transformers() {
    // Six layers, five of them local with a window of 8 positions: the 24-token prompt leaves most positions
    // outside the windows.
    check_against_transformers("gemma3");
}

#[test]
fn phi3_matches_transformers() {
    check_against_transformers("phi3");
}

#[test]
fn phi3_sliding_window_on_every_layer_matches_transformers() {
    let windowed = with_config("phi3", |c| c["sliding_window"] = 8.into());
    let reference = read_json(&fixture("phi3").join("reference.json"));
    let prompt = ids(&reference["prompt"]);
    let model = load(windowed.path()).expect("loads");
    assert_eq!(
        model.config.sliding_window.as_ref().map(|w| w.describe()),
        Some("8 positions on 2 of 2 layers".to_string())
    );
    let error = relative_max_error(
        &logits_per_position(&model, &prompt),
        &rows(&reference["sliding_window_8_logits"]),
    );
    assert!(error <= 1e-3, "max |Δlogit| = {error:.2e} · std");
}

/// The phi3 fixture with the LongRoPE settings transformers ran with an original context of `original`.
fn phi3_longrope(original: usize) -> tempfile::TempDir {
    let reference = read_json(&fixture("phi3").join("reference.json"));
    let scaling = reference[format!("longrope_original_{original}")]["rope_scaling"].clone();
    with_config("phi3", |c| {
        c["max_position_embeddings"] = 4096.into();
        c["original_max_position_embeddings"] = original.into();
        c["rope_scaling"] = scaling;
    })
}

#[test]
fn phi3_longrope_matches_transformers_with_long_and_short_factors() {
    // Sessions of 64 positions: past an original context of 16 the long factors, within 64 the short ones; the
    // 24-token prompt makes transformers choose the same.
    let reference = read_json(&fixture("phi3").join("reference.json"));
    let prompt = ids(&reference["prompt"]);
    for original in [16, 64] {
        let dir = phi3_longrope(original);
        let model = load(dir.path()).expect("loads");
        assert!(
            model
                .config
                .rope_scaling
                .describe()
                .starts_with("longrope(8 factors"),
            "{}",
            model.config.rope_scaling.describe()
        );
        let expected = rows(&reference[format!("longrope_original_{original}")]["logits"]);
        let error = relative_max_error(&logits_per_position(&model, &prompt), &expected);
        assert!(
            error <= 1e-3,
            "original {original}: max |Δlogit| = {error:.2e} · std"
        );
    }
}

#[test]
fn phi3_longrope_from_gguf_tensors_equals_the_hf_config() {
    // llama.cpp's converter stores LongRoPE as rope_factors_short/long tensors, the original context and the
    // attention factor: the converted fixture with them added gives the HF directory's logits.
    let reference = read_json(&fixture("phi3").join("reference.json"));
    let scaling = &reference["longrope_original_16"]["rope_scaling"];
    let factors = |key: &str| -> Vec<u8> {
        scaling[key]
            .as_array()
            .expect("factors")
            .iter()
            .flat_map(|f| (f.as_f64().expect("a factor") as f32).to_le_bytes())
            .collect()
    };
    let gguf = gguf_with("phi3", |w| {
        for (name, key) in [
            ("rope_factors_short.weight", "short_factor"),
            ("rope_factors_long.weight", "long_factor"),
        ] {
            w.add_tensor(name, seedinfer_formats::TensorType::F32, &[8], factors(key))
                .expect("tensor");
        }
        w.add_metadata("phi3.context_length", GgufValue::U32(4096));
        w.add_metadata(
            "phi3.rope.scaling.original_context_length",
            GgufValue::U32(16),
        );
        // The converter's value for 4096 over 16: √(1 + ln 256 / ln 16) = √3.
        w.add_metadata("phi3.rope.scaling.attn_factor", GgufValue::F32(3f32.sqrt()));
    });
    let prompt = ids(&reference["prompt"]);
    let from_gguf = logits_per_position(
        &load(&gguf.path().join("model.gguf")).expect("loads"),
        &prompt,
    );
    let error = relative_max_error(
        &from_gguf,
        &rows(&reference["longrope_original_16"]["logits"]),
    );
    assert!(error <= 1e-3, "max |Δlogit| = {error:.2e} · std");
}

/// Our logits after `prompt`, in one prefill.
fn logits_after(model: &Arc<Model>, prompt: &[u32]) -> Vec<f32> {
    let mut session = Session::new(Arc::clone(model), prompt.len() + 1).expect("session");
    session
        .generate(prompt, &greedy(1), &AtomicBool::new(false), &mut |_| {})
        .expect("generates");
    session.last_logits().expect("logits").to_vec()
}

#[test]
fn gemma3_long_prompt_matches_transformers() {
    // 4096 tokens through five local layers with a window of 8 and a global one.
    let reference = read_json(&fixture("gemma3").join("reference.json"));
    let long = &reference["long_prompt"];
    let tokens = ids(&long["tokens"]);
    let model = load(&fixture("gemma3")).expect("loads");
    for (n, key) in [(1000, "logits_after_1000"), (4096, "logits_after_4096")] {
        let ours = logits_after(&model, &tokens[..n]);
        let expected: Vec<f32> = rows(&serde_json::json!([long[key]])).remove(0);
        let error = relative_max_error(&[ours], &[expected]);
        assert!(
            error <= 1e-3,
            "{n} tokens: max |Δlogit| = {error:.2e} · std"
        );
    }
}

#[test]
fn gemma3_sliding_window_gives_the_same_bits_in_chunks_and_token_by_token() {
    // A window of 300 positions: decoded tokens past 256 seen positions take the split (flash-decoding) path, whose
    // ranges of blocks start inside the window.
    let wide = with_config("gemma3", |c| c["sliding_window"] = 300.into());
    let model = load(wide.path()).expect("loads");
    let reference = read_json(&fixture("gemma3").join("reference.json"));
    let tokens = &ids(&reference["long_prompt"]["tokens"])[..700];
    let one_chunk = paged_logits(&model, tokens, &[700]);
    for plan in [chunk_plan(700, &[]), chunk_plan(700, &[7, 320, 64])] {
        let logits = paged_logits(&model, tokens, &plan);
        assert!(
            logits == one_chunk,
            "{} chunks: logits differ from one chunk",
            plan.len()
        );
    }
}

#[test]
fn gemma3_reads_query_pre_attn_scalar() {
    let scaled = with_config("gemma3", |c| c["query_pre_attn_scalar"] = 24.into());
    let reference = read_json(&fixture("gemma3").join("reference.json"));
    let prompt = ids(&reference["prompt"]);
    let error = relative_max_error(
        &logits_per_position(&load(scaled.path()).expect("loads"), &prompt),
        &rows(&reference["query_scalar_24_logits"]),
    );
    assert!(error <= 1e-3, "max |Δlogit| = {error:.2e} · std");
}

#[test]
fn gemma3_window_changes_the_logits_and_transformers5_rope_parameters_are_read() {
    let reference = read_json(&fixture("gemma3").join("reference.json"));
    let prompt = ids(&reference["prompt"]);
    let base = logits_per_position(&load(&fixture("gemma3")).expect("loads"), &prompt);
    // With a window longer than the prompt, positions inside the window of 8 keep their bits and the others
    // move: the window is in effect.
    let wide = with_config("gemma3", |c| c["sliding_window"] = 64.into());
    let unwindowed = logits_per_position(&load(wide.path()).expect("loads"), &prompt);
    assert!(unwindowed[..8] == base[..8], "positions inside the window");
    assert!(relative_max_error(&unwindowed[8..], &base[8..]) > 1e-2);
    // transformers 5's per-layer-type RoPE parameters give the bits of the transformers-4 keys.
    let moved = with_config("gemma3", |c| {
        let o = c.as_object_mut().expect("object");
        o.remove("rope_theta");
        o.remove("rope_local_base_freq");
        o.insert(
            "rope_parameters".into(),
            serde_json::json!({
                "full_attention": {"rope_type": "default", "rope_theta": 1000000.0},
                "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0}
            }),
        );
    });
    assert_eq!(
        logits_per_position(&load(moved.path()).expect("loads"), &prompt),
        base
    );
}

/// The same checkpoint converted by llama.cpp's `convert_hf_to_gguf.py` (`scripts/make-architecture-gguf.py`):
/// our logits after the prompt within 1e-3 · std of transformers' and 1e-2 · std of llama.cpp's, and llama.cpp's
/// greedy continuation.
fn check_gguf(name: &str) {
    let dir = fixture(name);
    let reference = read_json(&dir.join("reference.json"));
    let llamacpp = read_json(&dir.join("llamacpp.json"));
    let model = load(&dir.join("model.gguf")).unwrap_or_else(|e| panic!("{name} GGUF loads: {e}"));
    let prompt = ids(&reference["prompt"]);
    let ours = Session::new(Arc::clone(&model), 64)
        .expect("session")
        .generate(&prompt, &greedy(16), &AtomicBool::new(false), &mut |_| {})
        .expect("generates");
    assert_eq!(
        ours.token_ids,
        ids(&llamacpp["greedy"]),
        "{name}: llama.cpp's greedy tokens"
    );
    let last = logits_per_position(&model, &prompt).pop().expect("logits");
    let transformers = rows(&reference["logits"]).pop().expect("logits");
    let error = relative_max_error(std::slice::from_ref(&last), &[transformers]);
    assert!(
        error <= 1e-3,
        "{name} GGUF: max |Δlogit| = {error:.2e} · std of transformers'"
    );
    // llama.cpp keeps an f16 KV cache and rounds activations to f16 in attention: a looser bound.
    let llamacpp_last: Vec<f32> = rows(&serde_json::json!([llamacpp["last_logits"]])).remove(0);
    let error = relative_max_error(&[last], &[llamacpp_last]);
    assert!(
        error <= 1e-2,
        "{name} GGUF: max |Δlogit| = {error:.2e} · std of llama.cpp's"
    );
}

#[test]
fn llama3_gguf_matches_llama_cpp() {
    check_gguf("llama3");
}

#[test]
fn qwen2_gguf_matches_llama_cpp() {
    check_gguf("qwen2");
}

#[test]
fn qwen3_gguf_matches_llama_cpp() {
    check_gguf("qwen3");
}

#[test]
fn phi3_gguf_matches_llama_cpp() {
    // llama.cpp's converter keeps q/k/v and gate/up fused (attn_qkv, ffn_up); the loader splits them by rows.
    check_gguf("phi3");
}

#[test]
fn gemma3_gguf_matches_llama_cpp() {
    // llama.cpp's run kept an f32 cache (`llamacpp.json`'s kv_cache): see scripts/make-architecture-gguf.py.
    check_gguf("gemma3");
}

/// A copy of `name`'s fixture with its config.json passed through `edit`.
fn with_config(name: &str, edit: impl FnOnce(&mut Value)) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().expect("temp dir");
    for entry in std::fs::read_dir(fixture(name)).expect("fixture") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "gguf") {
            continue;
        }
        std::fs::copy(&path, tmp.path().join(path.file_name().expect("name"))).expect("copy");
    }
    let mut config = read_json(&tmp.path().join("config.json"));
    edit(&mut config);
    std::fs::write(tmp.path().join("config.json"), config.to_string()).expect("write config");
    tmp
}

#[test]
fn transformers5_rope_parameters_equal_rope_scaling() {
    // transformers 5 writes the RoPE settings, theta included, under rope_parameters.
    let moved = with_config("llama3", |c| {
        let o = c.as_object_mut().expect("object");
        let mut params = o.remove("rope_scaling").expect("rope_scaling");
        let theta = o.remove("rope_theta").expect("rope_theta");
        params["rope_theta"] = theta;
        o.insert("rope_parameters".into(), params);
    });
    let prompt = ids(&read_json(&fixture("llama3").join("reference.json"))["prompt"]);
    let a = logits_per_position(&load(&fixture("llama3")).expect("loads"), &prompt);
    let b = logits_per_position(&load(moved.path()).expect("loads"), &prompt);
    assert_eq!(a, b);
    // And the scaling is in effect: without it the logits move.
    let unscaled = with_config("llama3", |c| {
        c.as_object_mut().expect("object").remove("rope_scaling");
    });
    let c = logits_per_position(&load(unscaled.path()).expect("loads"), &prompt);
    assert!(relative_max_error(&c, &a) > 1e-2);
}

#[test]
fn linear_rope_scaling_matches_transformers() {
    let linear = with_config("llama3", |c| {
        c["rope_scaling"] = serde_json::json!({"type": "linear", "factor": 4.0});
    });
    let reference = read_json(&fixture("llama3").join("reference.json"));
    let prompt = ids(&reference["prompt"]);
    let error = relative_max_error(
        &logits_per_position(&load(linear.path()).expect("loads"), &prompt),
        &rows(&reference["linear_factor_4_logits"]),
    );
    assert!(error <= 1e-3, "max |Δlogit| = {error:.2e} · std");
}

fn expect_unsupported(dir: &Path, key: &str) {
    match load(dir) {
        Err(e) => {
            assert_eq!(e.code(), "UNSUPPORTED_CONFIG", "{e}");
            assert!(e.to_string().contains(key), "{e} names {key}");
        }
        Ok(_) => panic!(
            "{} loaded; expected UNSUPPORTED_CONFIG naming {key}",
            dir.display()
        ),
    }
}

#[test]
fn keys_that_change_the_arithmetic_are_read_or_refused() {
    let yarn = with_config("llama3", |c| {
        c["rope_scaling"] = serde_json::json!({"rope_type": "yarn", "factor": 4.0});
    });
    expect_unsupported(yarn.path(), "rope_scaling.rope_type");
    let yarn5 = with_config("llama3", |c| {
        let o = c.as_object_mut().expect("object");
        o.remove("rope_scaling");
        o.insert(
            "rope_parameters".into(),
            serde_json::json!({"rope_type": "dynamic", "factor": 2.0, "rope_theta": 500000.0}),
        );
    });
    expect_unsupported(yarn5.path(), "rope_parameters.rope_type");
    let sliding = with_config("qwen2", |c| {
        c["use_sliding_window"] = true.into();
        c["max_window_layers"] = 1.into();
    });
    expect_unsupported(sliding.path(), "sliding_window");
    let mistral = with_config("llama3", |c| {
        c["model_type"] = "mistral".into();
        c["sliding_window"] = 4096.into();
    });
    expect_unsupported(mistral.path(), "sliding_window");
    let layer_types = with_config("qwen3", |c| {
        c["layer_types"] = serde_json::json!(["full_attention", "sliding_attention"]);
    });
    expect_unsupported(layer_types.path(), "layer_types");
    let bias = with_config("llama3", |c| c["attention_bias"] = true.into());
    expect_unsupported(bias.path(), "attention_bias");
    let mlp_bias = with_config("qwen3", |c| c["mlp_bias"] = true.into());
    expect_unsupported(mlp_bias.path(), "mlp_bias");
    let gelu = with_config("qwen2", |c| c["hidden_act"] = "gelu".into());
    expect_unsupported(gelu.path(), "hidden_act");
    let erf_gelu = with_config("gemma3", |c| c["hidden_activation"] = "gelu".into());
    expect_unsupported(erf_gelu.path(), "hidden_activation");
    let softcap = with_config("gemma3", |c| c["final_logit_softcapping"] = 30.0.into());
    expect_unsupported(softcap.path(), "final_logit_softcapping");
    let chunked = with_config("gemma3", |c| {
        c["layer_types"] = serde_json::json!(vec!["chunked_attention"; 6]);
    });
    expect_unsupported(chunked.path(), "layer_types");
    let partial = with_config("qwen3", |c| c["partial_rotary_factor"] = 0.5.into());
    expect_unsupported(partial.path(), "partial_rotary_factor");
    // Keys that change nothing here load: a Mistral without a window, Qwen's unused window settings.
    let mistral_v3 = with_config("llama3", |c| {
        c["model_type"] = "mistral".into();
        c["sliding_window"] = Value::Null;
    });
    load(mistral_v3.path()).expect("a Mistral config without a sliding window loads");
}

#[test]
fn a_qwen3_checkpoint_without_its_head_norms_is_refused() {
    // The qwen2 fixture has no q_norm/k_norm tensors: loading it as qwen3 names the first missing one.
    let qwen2_as_qwen3 = with_config("qwen2", |c| {
        c["model_type"] = "qwen3".into();
        c["architectures"] = serde_json::json!(["Qwen3ForCausalLM"]);
    });
    match load(qwen2_as_qwen3.path()) {
        Err(e) => assert!(e.to_string().contains("q_norm"), "{e}"),
        Ok(_) => panic!("qwen2 weights loaded as qwen3"),
    }
}

/// A copy of `name`'s converted GGUF with `edit` applied to its metadata (tensors unchanged).
fn gguf_with(name: &str, edit: impl FnOnce(&mut GgufWriter)) -> tempfile::TempDir {
    let source = GgufFile::open(&fixture(name).join("model.gguf")).expect("fixture GGUF");
    let mut writer = GgufWriter::new();
    for (key, value) in source.metadata() {
        if key != "general.alignment" {
            writer.add_metadata(key, value.clone());
        }
    }
    for t in source.tensors() {
        let data = source.tensor(&t.name).expect("tensor").data.to_vec();
        writer
            .add_tensor(&t.name, t.tensor_type, &t.shape, data)
            .expect("tensor copies");
    }
    edit(&mut writer);
    let tmp = tempfile::tempdir().expect("temp dir");
    writer
        .write_file(&tmp.path().join("model.gguf"))
        .expect("writes");
    tmp
}

#[test]
fn gguf_keys_that_change_the_arithmetic_are_read_or_refused() {
    let yarn = gguf_with("qwen3", |w| {
        w.add_metadata("qwen3.rope.scaling.type", "yarn".into());
        w.add_metadata("qwen3.rope.scaling.factor", GgufValue::F32(4.0));
    });
    expect_unsupported(&yarn.path().join("model.gguf"), "qwen3.rope.scaling.type");
    let window = gguf_with("qwen2", |w| {
        w.add_metadata("qwen2.attention.sliding_window", GgufValue::U32(16))
    });
    expect_unsupported(
        &window.path().join("model.gguf"),
        "qwen2.attention.sliding_window",
    );
    let partial = gguf_with("qwen3", |w| {
        w.add_metadata("qwen3.rope.dimension_count", GgufValue::U32(16))
    });
    expect_unsupported(
        &partial.path().join("model.gguf"),
        "qwen3.rope.dimension_count",
    );
    // Linear scaling is read: the model loads and reports it.
    let linear = gguf_with("llama3", |w| {
        w.add_metadata("llama.rope.scaling.type", "linear".into());
        w.add_metadata("llama.rope.scaling.factor", GgufValue::F32(4.0));
    });
    let model = load(&linear.path().join("model.gguf")).expect("linear scaling loads");
    assert_eq!(
        model.config.rope_scaling,
        seedinfer_engine::RopeScaling::Linear { factor: 4.0 }
    );
}

#[test]
fn llamacpp_numerics_refuse_other_architectures_and_scaled_rope() {
    for (name, says) in [("qwen2", "qwen2"), ("llama3", "RoPE")] {
        let options = LoadOptions {
            numerics: seedinfer_engine::Numerics::LlamaCpp,
            ..Default::default()
        };
        match Model::load(&fixture(name).join("model.gguf"), &options) {
            Err(e) => {
                assert_eq!(e.code(), "INVALID_OPTION", "{e}");
                assert!(e.to_string().contains(says), "{e} names {says}");
            }
            Ok(_) => panic!("{name} loaded with numerics 'llamacpp'"),
        }
    }
}
