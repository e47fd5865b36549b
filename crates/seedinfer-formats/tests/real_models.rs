//! Tests against real checkpoints. The tiny stories260K model is part of the repo's
//! shared assets and must be present; the SmolLM2 GGUF is optional (env var).

use std::path::PathBuf;

use seedinfer_formats::{GgufFile, SafetensorsDir, TensorType};

fn stories_dir() -> PathBuf {
    std::env::var_os("SEEDINFER_STORIES_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/models/stories260K")
        })
}

#[test]
fn stories260k_safetensors() {
    let dir = stories_dir();
    let st = SafetensorsDir::open(&dir)
        .unwrap_or_else(|e| panic!("opening {} ({}): {e}", dir.display(), e.code()));
    let names = st.tensor_names();
    // Embeddings, final norm and 9 tensors per layer; the LM head is tied.
    assert_eq!(names.len(), 2 + 5 * 9, "{names:?}");
    let embed = st.tensor("model.embed_tokens.weight").unwrap();
    assert_eq!(embed.tensor_type, TensorType::F32);
    embed.expect_shape(&[512, 64]).unwrap();
    for layer in 0..5 {
        let p = format!("model.layers.{layer}");
        let shape = |n: &str| st.tensor(&format!("{p}.{n}")).unwrap().shape;
        assert_eq!(shape("mlp.gate_proj.weight"), [172, 64]);
        assert_eq!(shape("mlp.up_proj.weight"), [172, 64]);
        assert_eq!(shape("mlp.down_proj.weight"), [64, 172]);
        assert_eq!(shape("self_attn.q_proj.weight"), [64, 64]);
        assert_eq!(shape("self_attn.k_proj.weight"), [32, 64]);
        assert_eq!(shape("self_attn.v_proj.weight"), [32, 64]);
        assert_eq!(shape("self_attn.o_proj.weight"), [64, 64]);
        assert_eq!(shape("input_layernorm.weight"), [64]);
        assert_eq!(shape("post_attention_layernorm.weight"), [64]);
    }
    assert!(st.tensor("model.layers.5.mlp.up_proj.weight").is_err());
    assert_eq!(st.tensor("model.norm.weight").unwrap().shape, [64]);
    let values = embed.to_f32().unwrap();
    assert_eq!(values.len(), 512 * 64);
    assert!(values.iter().all(|v| v.is_finite()));
    assert!(values.iter().any(|&v| v != 0.0));
    let err = embed.expect_shape(&[64, 512]).unwrap_err();
    assert_eq!(err.code(), "TENSOR_SHAPE_MISMATCH");
}

#[test]
fn smollm2_q4_1_gguf() {
    let Some(path) = std::env::var_os("SEEDINFER_DEFAULT_GGUF").map(PathBuf::from) else {
        eprintln!("note: SEEDINFER_DEFAULT_GGUF not set; skipping the real GGUF test");
        return;
    };
    let file = GgufFile::open(&path)
        .unwrap_or_else(|e| panic!("opening {} ({}): {e}", path.display(), e.code()));
    assert_eq!(file.tensors().len(), 272);
    assert_eq!(file.get_u64("llama.block_count"), Some(30));
    assert_eq!(file.get_str("general.architecture"), Some("llama"));
    let count = |t| file.tensors().iter().filter(|i| i.tensor_type == t).count();
    assert_eq!(count(TensorType::Q4_1), 210);
    assert_eq!(count(TensorType::F32), 61);
    assert_eq!(count(TensorType::Q8_0), 1);

    let embd = file.tensor("token_embd.weight").unwrap();
    assert_eq!(embd.tensor_type, TensorType::Q8_0);
    assert_eq!(embd.shape, [49152, 576]);
    assert_eq!(
        file.tensor("blk.0.ffn_down.weight").unwrap().shape,
        [576, 1536]
    );
    assert_eq!(
        file.tensor("blk.0.ffn_gate.weight").unwrap().shape,
        [1536, 576]
    );
    let tokens = file.get_str_array("tokenizer.ggml.tokens").unwrap();
    assert_eq!(tokens.len(), 49152);

    // Row 7 of blk.0.attn_q.weight as dequantized by gguf-py (gguf.quants.dequantize).
    let q = file.tensor("blk.0.attn_q.weight").unwrap();
    assert_eq!(q.tensor_type, TensorType::Q4_1);
    let row = q.row_to_f32(7).unwrap();
    let expected_head = [
        0.36224365234375f64,
        -0.22039794921875,
        0.0709228515625,
        0.94488525390625,
        -0.51171875,
        0.0709228515625,
        -0.02618408203125,
        -0.02618408203125,
    ];
    // These are exact binary fractions; compare in f64 so the literals stay exact.
    let head: Vec<f64> = row[..8].iter().map(|&v| f64::from(v)).collect();
    assert_eq!(head, expected_head);
    let sum: f64 = row.iter().map(|&v| v as f64).sum();
    assert!((sum - -5.409759521484375).abs() < 1e-9, "row sum {sum}");
    assert_eq!(q.to_f32().unwrap()[7 * 576..8 * 576], row[..]);
}
