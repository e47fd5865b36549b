//! The RoPE-layout trap on a real model: stories260K (Hugging Face layout, rotate_half RoPE) is converted
//! in-test to GGUF exactly as llama.cpp's convert_hf_to_gguf.py does for llama (q/k rows permuted to the
//! interleaved-pair layout, SentencePiece tokenizer metadata), and the GGUF file must then reproduce the
//! reference greedy continuation. An engine that applies the wrong RoPE variant to either layout fails here.

use seedinfer_engine::{LoadOptions, Model, RopeStyle};
use seedinfer_formats::{GgufValue, GgufWriter, SafetensorsDir, TensorType};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

mod common;
use common::read_json;
use common::{expected_greedy, greedy_from_bos, stories_dir};

/// llama.cpp's `LlamaModel.permute`:
/// `w.reshape(n_head, 2, rows / n_head / 2, cols).swapaxes(1, 2).reshape(rows, cols)`.
/// Row `h*hd + i*2 + j` of the result is row `h*hd + j*(hd/2) + i` of the input (hd = rows / n_head).
fn permute(w: &[f32], rows: usize, cols: usize, n_head: usize) -> Vec<f32> {
    assert_eq!(w.len(), rows * cols);
    assert_eq!(
        rows % (2 * n_head),
        0,
        "rows {rows} not divisible by 2 * n_head {n_head}"
    );
    let hd = rows / n_head;
    let half = hd / 2;
    let mut out = Vec::with_capacity(w.len());
    for h in 0..n_head {
        for i in 0..half {
            for j in 0..2 {
                let src = h * hd + j * half + i;
                out.extend_from_slice(&w[src * cols..(src + 1) * cols]);
            }
        }
    }
    out
}

#[test]
fn permute_matches_numpy_reshape_swapaxes() {
    // 2 heads of head dim 4, one column: numpy gives [0, 2, 1, 3, 4, 6, 5, 7].
    let w: Vec<f32> = (0..8).map(|v| v as f32).collect();
    assert_eq!(
        permute(&w, 8, 1, 2),
        [0.0, 2.0, 1.0, 3.0, 4.0, 6.0, 5.0, 7.0]
    );
}

fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn f16_bytes(values: &[f32]) -> Vec<u8> {
    values
        .iter()
        .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
        .collect()
}

/// The SentencePiece vocabulary llama.cpp's converter would write for this tokenizer.json:
/// (tokens in id order, scores, token types).
fn spm_vocab() -> (Vec<String>, Vec<f32>, Vec<i32>) {
    let tokenizer = read_json("tokenizer.json");
    let model = &tokenizer["model"];
    let vocab = model["vocab"].as_object().expect("model.vocab");
    let mut tokens = vec![String::new(); vocab.len()];
    for (piece, id) in vocab {
        let id = id.as_u64().expect("vocab id") as usize;
        assert!(tokens[id].is_empty(), "id {id} appears twice");
        tokens[id] = piece.clone();
    }
    assert!(
        tokens.iter().all(|t| !t.is_empty()),
        "vocabulary ids are not contiguous"
    );

    // A piece created by merge rank r scores -r: the SentencePiece BPE encoder applies the highest-scoring
    // merge first, which then is exactly the BPE merge order.
    let mut merge_rank: HashMap<String, usize> = HashMap::new();
    for (rank, merge) in model["merges"]
        .as_array()
        .expect("model.merges")
        .iter()
        .enumerate()
    {
        let (a, b) = match merge {
            serde_json::Value::String(s) => {
                let (a, b) = s.split_once(' ').expect("merge 'a b'");
                (a.to_string(), b.to_string())
            }
            serde_json::Value::Array(pair) => (
                pair[0].as_str().expect("merge").to_string(),
                pair[1].as_str().expect("merge").to_string(),
            ),
            other => panic!("unexpected merge {other}"),
        };
        merge_rank.entry(a + &b).or_insert(rank);
    }

    let special: Vec<u64> = tokenizer["added_tokens"].as_array().map_or(vec![], |a| {
        a.iter().filter_map(|t| t["id"].as_u64()).collect()
    });
    let mut scores = Vec::with_capacity(tokens.len());
    let mut types = Vec::with_capacity(tokens.len());
    for (id, piece) in tokens.iter().enumerate() {
        let is_byte = piece.len() == 6 && piece.starts_with("<0x") && piece.ends_with('>');
        let token_type = if piece == "<unk>" {
            2
        } else if piece == "<s>" || piece == "</s>" || special.contains(&(id as u64)) {
            3
        } else if is_byte {
            6
        } else {
            1
        };
        let score = match merge_rank.get(piece) {
            Some(&rank) if token_type == 1 => -(rank as f32),
            _ if token_type == 1 => -1e6,
            _ => 0.0,
        };
        types.push(token_type);
        scores.push(score);
    }
    (tokens, scores, types)
}

#[derive(Clone, Copy, PartialEq)]
enum OutType {
    F32,
    F16,
}

/// Converts stories260K to GGUF as convert_hf_to_gguf.py does for LlamaForCausalLM.
fn convert(out: &Path, out_type: OutType) {
    let dir = stories_dir();
    let config = read_json("config.json");
    let int = |k: &str| {
        config[k]
            .as_u64()
            .unwrap_or_else(|| panic!("config.json {k}")) as usize
    };
    let hidden = int("hidden_size");
    let ffn = int("intermediate_size");
    let layers = int("num_hidden_layers");
    let heads = int("num_attention_heads");
    let kv_heads = config["num_key_value_heads"]
        .as_u64()
        .map_or(heads, |v| v as usize);
    let vocab_size = int("vocab_size");
    let context = int("max_position_embeddings");
    let eps = config["rms_norm_eps"].as_f64().expect("rms_norm_eps") as f32;
    let theta = config["rope_theta"].as_f64().unwrap_or(10_000.0) as f32;
    assert_eq!(
        config["tie_word_embeddings"].as_bool(),
        Some(true),
        "this conversion assumes tied embeddings"
    );
    let head_dim = hidden / heads;

    let mut w = GgufWriter::new();
    w.add_metadata("general.architecture", "llama".into());
    w.add_metadata("general.name", "stories260K".into());
    w.add_metadata(
        "general.file_type",
        GgufValue::U32(if out_type == OutType::F32 { 0 } else { 1 }),
    );
    w.add_metadata("llama.block_count", GgufValue::U32(layers as u32));
    w.add_metadata("llama.context_length", GgufValue::U32(context as u32));
    w.add_metadata("llama.embedding_length", GgufValue::U32(hidden as u32));
    w.add_metadata("llama.feed_forward_length", GgufValue::U32(ffn as u32));
    w.add_metadata("llama.attention.head_count", GgufValue::U32(heads as u32));
    w.add_metadata(
        "llama.attention.head_count_kv",
        GgufValue::U32(kv_heads as u32),
    );
    w.add_metadata("llama.rope.freq_base", GgufValue::F32(theta));
    w.add_metadata(
        "llama.attention.layer_norm_rms_epsilon",
        GgufValue::F32(eps),
    );
    w.add_metadata(
        "llama.rope.dimension_count",
        GgufValue::U32(head_dim as u32),
    );
    w.add_metadata("llama.vocab_size", GgufValue::U32(vocab_size as u32));

    let (tokens, scores, types) = spm_vocab();
    assert_eq!(tokens.len(), vocab_size);
    w.add_metadata("tokenizer.ggml.model", "llama".into());
    w.add_metadata(
        "tokenizer.ggml.tokens",
        GgufValue::Array(tokens.into_iter().map(GgufValue::String).collect()),
    );
    w.add_metadata(
        "tokenizer.ggml.scores",
        GgufValue::Array(scores.into_iter().map(GgufValue::F32).collect()),
    );
    w.add_metadata(
        "tokenizer.ggml.token_type",
        GgufValue::Array(types.into_iter().map(GgufValue::I32).collect()),
    );
    w.add_metadata("tokenizer.ggml.bos_token_id", GgufValue::U32(1));
    w.add_metadata("tokenizer.ggml.eos_token_id", GgufValue::U32(2));
    w.add_metadata("tokenizer.ggml.unknown_token_id", GgufValue::U32(0));
    w.add_metadata("tokenizer.ggml.add_bos_token", GgufValue::Bool(true));
    w.add_metadata("tokenizer.ggml.add_eos_token", GgufValue::Bool(false));
    w.add_metadata("tokenizer.ggml.add_space_prefix", GgufValue::Bool(true));

    let st = SafetensorsDir::open(&dir).expect("stories260K safetensors open");
    let mut add = |hf: &str, gguf: &str, permute_heads: Option<usize>| {
        let view = st.tensor(hf).unwrap_or_else(|e| panic!("{hf}: {e}"));
        let shape = view.shape.clone();
        let mut values = view.to_f32().unwrap_or_else(|e| panic!("{hf}: {e}"));
        if let Some(n_head) = permute_heads {
            assert_eq!(shape.len(), 2);
            values = permute(&values, shape[0], shape[1], n_head);
        }
        // llama.cpp keeps 1-D tensors (the norms) in F32 whatever the output type.
        let (ty, data) = match out_type {
            OutType::F16 if shape.len() > 1 => (TensorType::F16, f16_bytes(&values)),
            _ => (TensorType::F32, f32_bytes(&values)),
        };
        w.add_tensor(gguf, ty, &shape, data)
            .unwrap_or_else(|e| panic!("{gguf}: {e}"));
    };
    add("model.embed_tokens.weight", "token_embd.weight", None);
    for i in 0..layers {
        let hf = |p: &str| format!("model.layers.{i}.{p}.weight");
        let gg = |p: &str| format!("blk.{i}.{p}.weight");
        add(&hf("input_layernorm"), &gg("attn_norm"), None);
        add(&hf("self_attn.q_proj"), &gg("attn_q"), Some(heads));
        add(&hf("self_attn.k_proj"), &gg("attn_k"), Some(kv_heads));
        add(&hf("self_attn.v_proj"), &gg("attn_v"), None);
        add(&hf("self_attn.o_proj"), &gg("attn_output"), None);
        add(&hf("post_attention_layernorm"), &gg("ffn_norm"), None);
        add(&hf("mlp.gate_proj"), &gg("ffn_gate"), None);
        add(&hf("mlp.up_proj"), &gg("ffn_up"), None);
        add(&hf("mlp.down_proj"), &gg("ffn_down"), None);
    }
    add("model.norm.weight", "output_norm.weight", None);
    w.write_file(out).expect("GGUF written");
}

fn converted(out_type: OutType) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().expect("temp dir");
    let name = if out_type == OutType::F32 {
        "stories260K-f32.gguf"
    } else {
        "stories260K-f16.gguf"
    };
    let path = tmp.path().join(name);
    convert(&path, out_type);
    (tmp, path)
}

fn load(path: &Path) -> Model {
    Model::load(
        path,
        &LoadOptions {
            threads: Some(2),
            weights: None,
            ..Default::default()
        },
    )
    .unwrap_or_else(|e| panic!("{}: {} ({e})", path.display(), e.code()))
}

#[test]
fn converted_f32_gguf_uses_interleaved_rope_and_reproduces_the_reference() {
    let (_tmp, path) = converted(OutType::F32);
    let model = load(&path);
    assert_eq!(model.config.rope_style, RopeStyle::Interleaved);
    assert!(
        model.config.tied_embeddings,
        "no output.weight means tied embeddings"
    );
    assert_eq!(model.info.file_format, "gguf");
    assert_eq!(model.info.file_tensor_formats.get("F32"), Some(&47));
    assert_eq!(model.info.parameter_count, 260_032);
    let expected = expected_greedy();
    assert_eq!(expected.len(), 200);
    let got = greedy_from_bos(&Arc::new(model), 200);
    let matching = got
        .iter()
        .zip(&expected)
        .take_while(|(a, b)| a == b)
        .count();
    assert_eq!(
        got, expected,
        "F32 GGUF matches the reference for the first {matching} tokens only"
    );
}

#[test]
fn converted_f16_gguf_follows_the_reference() {
    let (_tmp, path) = converted(OutType::F16);
    let model = load(&path);
    assert_eq!(model.config.rope_style, RopeStyle::Interleaved);
    // 5 layers x 7 matrices + the embedding in F16; 5 x 2 norms + the final norm in F32.
    assert_eq!(model.info.file_tensor_formats.get("F16"), Some(&36));
    assert_eq!(model.info.file_tensor_formats.get("F32"), Some(&11));
    let expected = expected_greedy();
    let got = greedy_from_bos(&Arc::new(model), 200);
    let matching = got
        .iter()
        .zip(&expected)
        .take_while(|(a, b)| a == b)
        .count();
    eprintln!("F16 GGUF: {matching} of 200 greedy tokens match the f64 reference");
    assert!(
        matching >= 50,
        "F16 GGUF matches only the first {matching} reference tokens"
    );
}

#[test]
fn gguf_tokenizer_encodes_like_the_hugging_face_one() {
    let (_tmp, path) = converted(OutType::F32);
    let model = load(&path);
    let ids = model
        .tokenizer
        .encode("Once upon a time", true, true)
        .expect("encodes");
    assert_eq!(ids, [1, 403, 407, 261, 378]);
    // And the Hugging Face directory's tokenizer agrees.
    let hf = load(&stories_dir());
    assert_eq!(hf.config.rope_style, RopeStyle::Half);
    assert_eq!(
        hf.tokenizer
            .encode("Once upon a time", true, true)
            .expect("encodes"),
        ids
    );
}
