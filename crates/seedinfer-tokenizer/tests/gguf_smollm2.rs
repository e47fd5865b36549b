//! The real SmolLM2-135M-Instruct GGUF (byte-level BPE, pre-tokenizer "smollm") against
//! llama.cpp's own tokenizations (`__test__/fixtures/llamacpp-smollm2.json`, produced by
//! bench/peers with node-llama-cpp). Needs `SEEDINFER_DEFAULT_GGUF`; skipped without it.

use std::path::PathBuf;

use seedinfer_formats::GgufFile;
use seedinfer_tokenizer::{StreamDecoder, Tokenizer};
use serde_json::Value;

fn load() -> Option<Tokenizer> {
    let Some(path) = std::env::var_os("SEEDINFER_DEFAULT_GGUF").map(PathBuf::from) else {
        eprintln!("note: SEEDINFER_DEFAULT_GGUF is not set; skipping the SmolLM2 GGUF test");
        return None;
    };
    let gguf = GgufFile::open(&path).unwrap();
    Some(Tokenizer::from_gguf(&gguf).unwrap())
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

#[test]
fn smollm2_gguf_matches_llama_cpp() {
    let Some(tok) = load() else { return };

    assert_eq!(tok.vocab_size(), 49152);
    assert_eq!(tok.bos_token_id(), Some(1));
    assert_eq!(tok.bos_token(), Some("<|im_start|>"));
    assert_eq!(tok.eos_token(), Some("<|im_end|>"));
    // EOS first, then <|endoftext|> (EOG by text, like llama.cpp).
    assert_eq!(tok.eos_token_ids(), vec![2, 0]);
    assert!(!tok.adds_bos());
    assert!(tok
        .chat_template()
        .is_some_and(|t| t.contains("<|im_start|>")));

    // A few fixed encodings.
    assert_eq!(
        tok.encode("The capital of France is", true, true).unwrap(),
        vec![504, 3575, 282, 4649, 314]
    );
    assert_eq!(
        tok.encode("Hello world! 123", true, true).unwrap(),
        vec![19556, 905, 17, 216, 33, 34, 35]
    );
    assert_eq!(tok.encode("\n", false, true).unwrap(), vec![198]);

    // Special token parsing.
    let user = tok.encode("user", false, true).unwrap();
    let parsed = tok.encode("<|im_start|>user", false, true).unwrap();
    assert_eq!(parsed[0], 1);
    assert_eq!(&parsed[1..], &user[..]);
    let plain = tok.encode("<|im_start|>user", false, false).unwrap();
    assert!(!plain.contains(&1), "{plain:?}");
    assert_eq!(tok.decode(&plain, false).unwrap(), "<|im_start|>user");
    assert_eq!(tok.decode(&parsed, true).unwrap(), "user");
    assert_eq!(tok.decode(&parsed, false).unwrap(), "<|im_start|>user");

    // Every tokenization case recorded from llama.cpp.
    let fixture = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../__test__/fixtures/llamacpp-smollm2.json"
    );
    let json: Value = match std::fs::read_to_string(fixture) {
        Ok(text) => serde_json::from_str(&text).unwrap(),
        Err(e) => {
            eprintln!("note: {fixture} unreadable ({e}); skipping llama.cpp comparison");
            return;
        }
    };
    let cases = json["tokenization"]["cases"].as_array().unwrap();
    assert!(cases.len() > 20);
    let mut failures = Vec::new();
    for case in cases {
        let text = case["text"].as_str().unwrap();
        let name = case["name"].as_str().unwrap();
        for (key, special) in [("noSpecial", false), ("special", true)] {
            let expected = ids(&case[key]);
            let got = tok.encode(text, false, special).unwrap();
            if got != expected {
                failures.push(format!(
                    "{name} ({key}) {text:?}\n  expected {expected:?}\n  got      {got:?}"
                ));
            }
        }
        // Decoding round-trips and streaming matches decode.
        let got = tok.encode(text, false, true).unwrap();
        let decoded = tok.decode(&got, false).unwrap();
        assert_eq!(decoded, text, "{name}");
        let mut sd = StreamDecoder::new(false);
        let mut out = String::new();
        for &id in &got {
            let chunk = sd.push(&tok, id).unwrap();
            assert!(!chunk.contains('\u{FFFD}'), "{name}: {chunk:?}");
            out.push_str(&chunk);
        }
        out.push_str(&sd.finish(&tok).unwrap());
        assert_eq!(out, decoded, "{name}");
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
