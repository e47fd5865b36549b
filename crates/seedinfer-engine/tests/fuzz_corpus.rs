//! Replays every committed fuzz input (`fuzz/corpus/<target>/`, and `fuzz/regressions/<target>/`: each input a
//! fuzzer once crashed on) through its target's body on stable: none may panic.

use seedinfer_engine::fuzz_inputs::TARGETS;
use std::path::Path;

#[test]
fn every_committed_fuzz_input_is_handled() {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
    // The targets write their files under the temporary directory: one of this test's own.
    let scratch = tempfile::tempdir().expect("temp dir");
    std::env::set_var("TMPDIR", scratch.path());
    for (name, target) in TARGETS {
        let mut count = 0;
        for dir in ["corpus", "regressions"] {
            let Ok(entries) = std::fs::read_dir(fuzz.join(dir).join(name)) else {
                continue;
            };
            let mut paths: Vec<_> = entries.filter_map(|e| e.ok()).map(|e| e.path()).collect();
            paths.sort();
            for path in paths {
                // A fuzzer running on this corpus meanwhile may have replaced a file.
                let data = match std::fs::read(&path) {
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    read => read.unwrap_or_else(|e| panic!("{}: {e}", path.display())),
                };
                target(&data);
                count += 1;
            }
        }
        assert!(count > 0, "no committed inputs for fuzz target {name}");
        eprintln!("fuzz target {name}: {count} committed inputs handled");
    }
}

/// Writes the seed corpora from the test checkpoints: `cargo test -p seedinfer-engine --test fuzz_corpus --
/// --ignored`. A fuzzer's run adds its own finds (minimised with `-merge=1` before they are committed).
#[test]
#[ignore]
fn write_seed_corpora() {
    use seedinfer_engine::fuzz_inputs::session_model;
    use seedinfer_engine::{GenerateParams, Session};
    use seedinfer_formats::GgufFile;
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;

    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let corpus = root.join("../../fuzz/corpus");
    let fixtures = root.join("tests/data/architectures");
    let write = |target: &str, name: &str, bytes: &[u8]| {
        let dir = corpus.join(target);
        std::fs::create_dir_all(&dir).expect("corpus dir");
        std::fs::write(dir.join(name), bytes).expect("seed");
    };
    // GGUF: each converted checkpoint's header, metadata and tensor table (the data section left out).
    for arch in ["llama3", "qwen2", "qwen3", "phi3", "gemma3"] {
        let path = fixtures.join(arch).join("model.gguf");
        let bytes = std::fs::read(&path).expect("fixture");
        let header = GgufFile::open(&path).expect("parses").data_offset() as usize;
        write("gguf", &format!("{arch}-header"), &bytes[..header]);
    }
    // GGUF fields: the unchanged model, then a few edits of each kind.
    write("gguf_fields", "unchanged", &[]);
    for what in 0u8..6 {
        let mut edits = Vec::new();
        for which in [3u16, 17] {
            edits.push(what);
            edits.extend_from_slice(&which.to_le_bytes());
            edits.extend_from_slice(&(0x100u64 | (u64::from(which) << 9)).to_le_bytes());
        }
        write("gguf_fields", &format!("edit-{what}"), &edits);
    }
    // A Hugging Face directory: the llama3 checkpoint's config with a one-layer model of hidden size 16 in
    // safetensors.
    let mut config: serde_json::Value = serde_json::from_slice(
        &std::fs::read(fixtures.join("llama3/config.json")).expect("config"),
    )
    .expect("json");
    for (key, value) in [
        ("hidden_size", 16),
        ("intermediate_size", 32),
        ("num_hidden_layers", 1),
        ("num_attention_heads", 2),
        ("num_key_value_heads", 1),
    ] {
        config[key] = value.into();
    }
    let shapes: [(&str, [usize; 2]); 12] = [
        ("model.embed_tokens.weight", [320, 16]),
        ("model.layers.0.input_layernorm.weight", [1, 16]),
        ("model.layers.0.self_attn.q_proj.weight", [16, 16]),
        ("model.layers.0.self_attn.k_proj.weight", [8, 16]),
        ("model.layers.0.self_attn.v_proj.weight", [8, 16]),
        ("model.layers.0.self_attn.o_proj.weight", [16, 16]),
        ("model.layers.0.post_attention_layernorm.weight", [1, 16]),
        ("model.layers.0.mlp.gate_proj.weight", [32, 16]),
        ("model.layers.0.mlp.up_proj.weight", [32, 16]),
        ("model.layers.0.mlp.down_proj.weight", [16, 32]),
        ("model.norm.weight", [1, 16]),
        ("lm_head.weight", [320, 16]),
    ];
    let data: Vec<Vec<u8>> = shapes
        .iter()
        .enumerate()
        .map(|(i, (_, [r, c]))| {
            (0..r * c)
                .flat_map(|j| (((i * 31 + j * 7) % 13) as f32 / 13.0 - 0.5).to_le_bytes())
                .collect()
        })
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView)> = shapes
        .iter()
        .zip(&data)
        .map(|((name, [r, c]), bytes)| {
            let shape = if *r == 1 { vec![*c] } else { vec![*r, *c] };
            let view = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape, bytes)
                .expect("view");
            (name.to_string(), view)
        })
        .collect();
    let weights = safetensors::tensor::serialize(views, None).expect("serialises");
    let mut input = serde_json::to_vec(&config).expect("config");
    input.extend_from_slice(&[0xff, 0xfe]);
    input.extend_from_slice(&weights);
    write("hf_dir", "llama-hidden-16", &input);
    // Tokenizers: the test checkpoints' byte-level BPE and stories260K's SentencePiece-style one, when present.
    let tokenizer = std::fs::read(fixtures.join("llama3/tokenizer.json")).expect("tokenizer");
    write("tokenizer_json", "byte-level-bpe", &tokenizer);
    let stories = root.join("../../../shared/models/stories260K/tokenizer.json");
    if let Ok(tokenizer) = std::fs::read(stories) {
        write("tokenizer_json", "stories260k", &tokenizer);
    }
    // Saved sessions of the llama3 checkpoint (without their SHA-256): empty, after a prompt, after a generation.
    let model = session_model().expect("the llama3 checkpoint loads");
    let dir = tempfile::tempdir().expect("temp dir");
    let mut session = Session::new(Arc::clone(model), 64).expect("session");
    for (name, prompt, max_tokens) in [
        ("empty", &[][..], 0),
        ("prompt", &[1, 5, 9, 40][..], 1),
        ("generated", &[7, 8][..], 3),
    ] {
        if !prompt.is_empty() {
            let params = GenerateParams {
                max_tokens,
                ..Default::default()
            };
            session
                .generate(prompt, &params, &AtomicBool::new(false), &mut |_| {})
                .expect("generates");
        }
        let path = dir.path().join(name);
        session.save(&path).expect("saves");
        // The target appends the checksum itself.
        let saved = std::fs::read(&path).expect("saved");
        write("session_file", name, &saved[..saved.len() - 32]);
    }
}
