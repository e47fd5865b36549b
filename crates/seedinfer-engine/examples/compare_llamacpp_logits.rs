//! `cargo run --release -p seedinfer-engine --example compare_llamacpp_logits -- <model.gguf> <dir>`: runs the
//! model with `Numerics::LlamaCpp` on the tokens of a `bench/peers/llamacpp-logits` dump and compares the logits
//! with llama.cpp's, bit by bit: first the batch of `P` tokens (every position), then `M` single-token steps.
//! Exits 1 if any logit differs.
use seedinfer_engine::forward::{forward, LogitsFor, Scratch};
use seedinfer_engine::kv_cache::PagedKv;
use seedinfer_engine::ops_llamacpp::GgmlOps;
use seedinfer_engine::{LoadOptions, Model, Numerics};
use std::path::Path;

fn read_f32(path: &Path) -> Vec<f32> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

/// How many elements of `ours` equal `theirs` bit for bit, and the largest absolute difference.
fn compare(ours: &[f32], theirs: &[f32]) -> (usize, f32) {
    let same = ours
        .iter()
        .zip(theirs)
        .filter(|(a, b)| a.to_bits() == b.to_bits())
        .count();
    let max = ours
        .iter()
        .zip(theirs)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    (same, max)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [model_path, dir] = args.as_slice() else {
        eprintln!("usage: compare_llamacpp_logits <model.gguf> <dump dir>");
        std::process::exit(2);
    };
    let dir = Path::new(dir);
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("meta.json")).expect("meta.json"))
            .expect("meta.json is JSON");
    let count = |key: &str| meta[key].as_u64().expect("P and M in meta.json") as usize;
    let (p, m) = (count("P"), count("M"));
    let tokens: Vec<u32> = meta["tokens"]
        .as_array()
        .expect("tokens in meta.json")
        .iter()
        .map(|t| t.as_u64().expect("token ids") as u32)
        .collect();
    let options = LoadOptions {
        numerics: Numerics::LlamaCpp,
        ..Default::default()
    };
    let model = Model::load(Path::new(model_path), &options).expect("the model loads");
    let vocab = model.config.vocab_size;
    let batch = read_f32(&dir.join("batch_logits.f32"));
    let decode = read_f32(&dir.join("decode_logits.f32"));
    assert_eq!((batch.len(), decode.len()), (p * vocab, m * vocab));

    let mut cache = PagedKv::new(model.kv_pool.clone(), p + m);
    cache.reserve(p + m).expect("the cache has room");
    let (mut logits, mut scratch) = (Vec::new(), Scratch::default());
    let mut run = |tokens: &[u32], logits_for| {
        model.install(|| {
            forward::<GgmlOps, _>(
                &model.config,
                &model.weights,
                tokens,
                &mut cache,
                &mut scratch,
                &mut logits,
                logits_for,
            )
        });
        logits.clone()
    };
    let mut all_same = true;
    let ours = run(&tokens[..p], LogitsFor::All);
    let (same, max) = compare(&ours, &batch);
    all_same &= same == batch.len();
    println!(
        "batch of {p}: {same} of {} logits bit-identical, largest difference {max}",
        batch.len()
    );
    let (mut same_steps, mut max_step) = (0, 0.0f32);
    for (i, &token) in tokens[p..p + m].iter().enumerate() {
        let ours = run(&[token], LogitsFor::Last);
        let (same, max) = compare(&ours, &decode[i * vocab..(i + 1) * vocab]);
        same_steps += usize::from(same == vocab);
        max_step = max_step.max(max);
    }
    all_same &= same_steps == m;
    println!("{m} single-token steps: {same_steps} bit-identical, largest difference {max_step}");
    std::process::exit(if all_same { 0 } else { 1 });
}
