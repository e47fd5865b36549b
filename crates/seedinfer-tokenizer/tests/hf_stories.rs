//! stories260K through the Hugging Face tokenizer.json path.

mod common;

use seedinfer_tokenizer::{StreamDecoder, Tokenizer};

fn load() -> Tokenizer {
    let dir = common::stories_dir();
    match Tokenizer::from_hf_dir(&dir) {
        Ok(t) => t,
        Err(e) => panic!("loading {}: {e}", dir.display()),
    }
}

#[test]
fn encodes_known_ids() {
    let tok = load();
    assert_eq!(
        tok.encode("Once upon a time", true, true).unwrap(),
        vec![1, 403, 407, 261, 378]
    );
    assert_eq!(
        tok.encode("Once upon a time", false, true).unwrap(),
        vec![403, 407, 261, 378]
    );
}

#[test]
fn metadata() {
    let tok = load();
    assert_eq!(tok.vocab_size(), 512);
    assert_eq!(tok.bos_token_id(), Some(1));
    assert_eq!(tok.bos_token(), Some("<s>"));
    assert_eq!(tok.eos_token(), Some("</s>"));
    assert_eq!(tok.eos_token_ids(), vec![2]);
    assert!(tok.adds_bos());
    assert!(!tok.adds_eos());
    assert_eq!(tok.chat_template(), None);
    assert_eq!(tok.token_text(1).as_deref(), Some("<s>"));
    assert_eq!(tok.token_text(259).as_deref(), Some("\u{2581}t"));
    assert_eq!(tok.token_text(100_000), None);
}

#[test]
fn decode_round_trips() {
    let tok = load();
    for text in common::SAMPLES {
        let ids = tok.encode(text, true, false).unwrap();
        assert_eq!(&tok.decode(&ids, true).unwrap(), text, "ids {ids:?}");
    }
}

#[test]
fn byte_fallback_tokens() {
    let tok = load();
    let ids = tok.encode("😀", false, true).unwrap();
    // "▁" then the four UTF-8 bytes of '😀' as byte-fallback tokens.
    let texts: Vec<String> = ids.iter().filter_map(|&i| tok.token_text(i)).collect();
    assert_eq!(
        texts,
        vec!["\u{2581}", "<0xF0>", "<0x9F>", "<0x98>", "<0x80>"]
    );
    assert_eq!(tok.decode(&ids, false).unwrap(), "😀");
    // Decoding the bytes of '€' yields the character.
    let euro: Vec<u32> = ["<0xE2>", "<0x82>", "<0xAC>"]
        .iter()
        .filter_map(|t| tok.token_id(t))
        .collect();
    assert_eq!(tok.decode(&euro, false).unwrap(), "€");
}

#[test]
fn special_tokens_in_text() {
    let tok = load();
    let parsed = tok.encode("<s>", false, true).unwrap();
    assert_eq!(parsed, vec![1]);
    let plain = tok.encode("<s>", false, false).unwrap();
    assert!(!plain.contains(&1), "{plain:?}");
    assert_eq!(tok.decode(&plain, false).unwrap(), "<s>");
    // skip_special drops BOS/EOS in decode.
    assert_eq!(tok.decode(&[1, 403, 2], true).unwrap(), "Once");
    assert_eq!(tok.decode(&[1, 403, 2], false).unwrap(), "<s> Once</s>");
}

#[test]
fn invalid_token_id() {
    let tok = load();
    let err = tok.decode(&[1, 512], false).unwrap_err();
    assert_eq!(err.code(), "INVALID_TOKEN_ID");
    let mut sd = StreamDecoder::new(true);
    assert_eq!(sd.push(&tok, 9999).unwrap_err().code(), "INVALID_TOKEN_ID");
    // The decoder is still usable after the error.
    assert_eq!(sd.push(&tok, 403).unwrap(), "Once");
}

#[test]
fn missing_dir_is_load_error() {
    let err = Tokenizer::from_hf_dir(std::path::Path::new("/nonexistent/seedinfer")).unwrap_err();
    assert_eq!(err.code(), "TOKENIZER_LOAD_FAILED");
}

fn stream(tok: &Tokenizer, ids: &[u32], skip_special: bool) -> (String, Vec<String>) {
    let mut sd = StreamDecoder::new(skip_special);
    let mut chunks = Vec::new();
    for &id in ids {
        chunks.push(sd.push(tok, id).unwrap());
    }
    chunks.push(sd.finish(tok).unwrap());
    (chunks.concat(), chunks)
}

#[test]
fn stream_decoder_matches_decode() {
    let tok = load();
    let text = "Once upon a time 😀 in 日本, a café cost €5 — Привет!\n  Done.";
    let ids = tok.encode(text, true, true).unwrap();
    for skip in [true, false] {
        let (streamed, chunks) = stream(&tok, &ids, skip);
        assert_eq!(streamed, tok.decode(&ids, skip).unwrap());
        assert!(chunks.iter().all(|c| !c.contains('\u{FFFD}')), "{chunks:?}");
    }
    let (streamed, _) = stream(&tok, &ids, true);
    assert_eq!(streamed, text);
}

#[test]
fn stream_decoder_every_sample() {
    let tok = load();
    for text in common::SAMPLES {
        let ids = tok.encode(text, true, false).unwrap();
        let (streamed, chunks) = stream(&tok, &ids, true);
        assert_eq!(&streamed, text);
        assert!(chunks.iter().all(|c| !c.contains('\u{FFFD}')));
    }
}

#[test]
fn stream_decoder_flushes_incomplete_bytes() {
    let tok = load();
    // <0xE2> <0x82> without the final byte of '€': nothing until finish(), which is lossy.
    let e2 = tok.token_id("<0xE2>").unwrap();
    let x82 = tok.token_id("<0x82>").unwrap();
    let mut sd = StreamDecoder::new(true);
    assert_eq!(sd.push(&tok, 403).unwrap(), "Once");
    assert_eq!(sd.push(&tok, e2).unwrap(), "");
    assert_eq!(sd.push(&tok, x82).unwrap(), "");
    let rest = sd.finish(&tok).unwrap();
    assert!(rest.contains('\u{FFFD}'), "{rest:?}");
}
