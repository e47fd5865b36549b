//! A SentencePiece ("llama") GGUF vocabulary built from the stories260K tokenizer.json must
//! tokenize exactly like the tokenizer.json itself.

mod common;

use std::collections::HashMap;

use seedinfer_formats::{GgufFile, GgufValue, GgufWriter};
use seedinfer_tokenizer::{token_type, GgufVocab, StreamDecoder, Tokenizer};
use serde_json::Value;

/// Converts stories260K's tokenizer.json into GGUF-style vocabulary metadata: tokens in id
/// order, token types, and scores chosen so the derived merge order equals the file's merges
/// (a merged piece scores -(rank of the first merge creating it); base pieces score lower).
fn stories_vocab() -> GgufVocab {
    let path = common::stories_dir().join("tokenizer.json");
    let text = std::fs::read_to_string(&path).unwrap();
    let json: Value = serde_json::from_str(&text).unwrap();
    let model = &json["model"];
    let vocab = model["vocab"].as_object().unwrap();
    let mut tokens = vec![String::new(); vocab.len()];
    for (piece, id) in vocab {
        tokens[id.as_u64().unwrap() as usize] = piece.clone();
    }
    let mut rank_of: HashMap<String, usize> = HashMap::new();
    for (rank, m) in model["merges"].as_array().unwrap().iter().enumerate() {
        let (l, r) = match m {
            Value::String(s) => {
                let (l, r) = s.split_once(' ').unwrap();
                (l.to_string(), r.to_string())
            }
            Value::Array(a) => (
                a[0].as_str().unwrap().to_string(),
                a[1].as_str().unwrap().to_string(),
            ),
            other => panic!("unexpected merge {other:?}"),
        };
        rank_of.entry(format!("{l}{r}")).or_insert(rank);
    }
    let mut scores = Vec::new();
    let mut types = Vec::new();
    for (id, piece) in tokens.iter().enumerate() {
        let is_byte = piece.len() == 6 && piece.starts_with("<0x") && piece.ends_with('>');
        if matches!(piece.as_str(), "<unk>" | "<s>" | "</s>") {
            types.push(token_type::CONTROL);
            scores.push(0.0);
        } else if is_byte {
            types.push(token_type::BYTE);
            scores.push(0.0);
        } else {
            types.push(token_type::NORMAL);
            scores.push(match rank_of.get(piece) {
                Some(&rank) => -(rank as f32),
                None => -1.0e6 - id as f32,
            });
        }
    }
    GgufVocab {
        model: "llama".to_string(),
        tokens,
        scores: Some(scores),
        token_types: Some(types),
        bos: Some(1),
        eos: Some(2),
        unk: Some(0),
        add_bos: Some(true),
        add_space_prefix: Some(true),
        ..Default::default()
    }
}

fn write_gguf(vocab: &GgufVocab, path: &std::path::Path) {
    let strings =
        |v: &[String]| GgufValue::Array(v.iter().cloned().map(GgufValue::String).collect());
    let mut w = GgufWriter::new();
    w.add_metadata("general.architecture", GgufValue::String("llama".into()));
    w.add_metadata(
        "tokenizer.ggml.model",
        GgufValue::String(vocab.model.clone()),
    );
    w.add_metadata("tokenizer.ggml.tokens", strings(&vocab.tokens));
    w.add_metadata(
        "tokenizer.ggml.scores",
        GgufValue::Array(
            vocab
                .scores
                .as_ref()
                .unwrap()
                .iter()
                .map(|&s| GgufValue::F32(s))
                .collect(),
        ),
    );
    w.add_metadata(
        "tokenizer.ggml.token_type",
        GgufValue::Array(
            vocab
                .token_types
                .as_ref()
                .unwrap()
                .iter()
                .map(|&t| GgufValue::I32(t))
                .collect(),
        ),
    );
    w.add_metadata("tokenizer.ggml.bos_token_id", GgufValue::U32(1));
    w.add_metadata("tokenizer.ggml.eos_token_id", GgufValue::U32(2));
    w.add_metadata("tokenizer.ggml.unknown_token_id", GgufValue::U32(0));
    w.add_metadata("tokenizer.ggml.add_bos_token", GgufValue::Bool(true));
    w.add_metadata("tokenizer.ggml.add_space_prefix", GgufValue::Bool(true));
    w.add_metadata(
        "tokenizer.chat_template",
        GgufValue::String("{{ messages }}".into()),
    );
    w.write_file(path).unwrap();
}

const EXTRA: &[&str] = &[
    "Lily and Ben went to the park to play with their ball.",
    "The sun was shining and the birds were singing happily!",
    "\"Hello,\" said the big, brown dog.",
    "a\n\nb",
    "   ",
];

fn check_same(hf: &Tokenizer, gg: &Tokenizer) {
    for text in common::SAMPLES.iter().chain(EXTRA) {
        for (bos, special) in [(true, true), (false, false), (true, false)] {
            let a = hf.encode(text, bos, special).unwrap();
            let b = gg.encode(text, bos, special).unwrap();
            assert_eq!(a, b, "text {text:?} bos={bos} special={special}");
        }
        let ids = hf.encode(text, true, true).unwrap();
        assert_eq!(
            hf.decode(&ids, true).unwrap(),
            gg.decode(&ids, true).unwrap()
        );
        assert_eq!(
            hf.decode(&ids, false).unwrap(),
            gg.decode(&ids, false).unwrap()
        );
    }
}

#[test]
fn gguf_vocab_matches_hf_tokenizer() {
    let hf = Tokenizer::from_hf_dir(&common::stories_dir()).unwrap();
    let gg = Tokenizer::from_gguf_vocab(&stories_vocab()).unwrap();
    assert_eq!(gg.vocab_size(), hf.vocab_size());
    assert_eq!(gg.bos_token_id(), Some(1));
    assert_eq!(gg.bos_token(), Some("<s>"));
    assert_eq!(gg.eos_token(), Some("</s>"));
    assert_eq!(gg.eos_token_ids(), vec![2]);
    assert_eq!(
        gg.encode("Once upon a time", true, true).unwrap(),
        vec![1, 403, 407, 261, 378]
    );
    check_same(&hf, &gg);
}

#[test]
fn gguf_file_round_trip_matches_hf_tokenizer() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stories-vocab.gguf");
    let vocab = stories_vocab();
    write_gguf(&vocab, &path);
    let gguf = GgufFile::open(&path).unwrap();
    let read = GgufVocab::from_gguf(&gguf).unwrap();
    assert_eq!(
        read,
        GgufVocab {
            chat_template: Some("{{ messages }}".into()),
            ..vocab
        }
    );
    let gg = Tokenizer::from_gguf(&gguf).unwrap();
    assert_eq!(gg.chat_template(), Some("{{ messages }}"));
    let hf = Tokenizer::from_hf_dir(&common::stories_dir()).unwrap();
    check_same(&hf, &gg);

    // Streaming over byte-fallback tokens.
    let text = "A café for €5 😀 日本";
    let ids = gg.encode(text, true, true).unwrap();
    let mut sd = StreamDecoder::new(true);
    let mut out = String::new();
    for &id in &ids {
        let chunk = sd.push(&gg, id).unwrap();
        assert!(!chunk.contains('\u{FFFD}'));
        out.push_str(&chunk);
    }
    out.push_str(&sd.finish(&gg).unwrap());
    assert_eq!(out, text);
}

#[test]
fn missing_tokenizer_model_is_load_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("empty.gguf");
    let mut w = GgufWriter::new();
    w.add_metadata("general.architecture", GgufValue::String("llama".into()));
    w.write_file(&path).unwrap();
    let gguf = GgufFile::open(&path).unwrap();
    let err = Tokenizer::from_gguf(&gguf).unwrap_err();
    assert_eq!(err.code(), "TOKENIZER_LOAD_FAILED");
}

#[test]
fn unsupported_gguf_model_names_it() {
    let mut v = stories_vocab();
    v.model = "bert".into();
    let err = Tokenizer::from_gguf_vocab(&v).unwrap_err();
    assert_eq!(err.code(), "UNSUPPORTED_TOKENIZER");
    assert!(err.to_string().contains("bert"), "{err}");
}
