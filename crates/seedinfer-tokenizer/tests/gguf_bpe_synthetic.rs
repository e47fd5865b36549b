//! A small synthetic byte-level BPE ("gpt2") GGUF vocabulary; always runs (no model file).

use seedinfer_tokenizer::{token_type, GgufVocab, StreamDecoder, Tokenizer};

/// GPT-2's byte → printable character table.
fn byte_chars() -> Vec<char> {
    let mut printable: Vec<u32> = (b'!'..=b'~').map(u32::from).collect();
    printable.extend(0xA1..=0xAC);
    printable.extend(0xAE..=0xFF);
    let mut table = vec!['\0'; 256];
    let mut n = 0;
    for b in 0..256u32 {
        let c = if printable.contains(&b) {
            b
        } else {
            n += 1;
            255 + n
        };
        table[b as usize] = char::from_u32(c).unwrap();
    }
    table
}

fn vocab(pre: &str) -> GgufVocab {
    let bc = byte_chars();
    let mut tokens = vec![
        "<|endoftext|>".to_string(),
        "<|im_start|>".to_string(),
        "<|im_end|>".to_string(),
    ];
    let mut types = vec![token_type::CONTROL; 3];
    for c in &bc {
        tokens.push(c.to_string());
        types.push(token_type::NORMAL);
    }
    let sp = bc[b' ' as usize];
    let merges: Vec<String> = vec![
        format!("{sp} h"),
        "e l".to_string(),
        "el l".to_string(),
        format!("{sp}h ell"),
        format!("{sp}hell o"),
    ];
    for m in &merges {
        tokens.push(m.replace(' ', ""));
        types.push(token_type::NORMAL);
    }
    tokens.push("<tool>".to_string());
    types.push(token_type::USER_DEFINED);
    GgufVocab {
        model: "gpt2".into(),
        pre: Some(pre.into()),
        tokens,
        token_types: Some(types),
        merges: Some(merges),
        bos: Some(1),
        eos: Some(2),
        add_bos: Some(false),
        ..Default::default()
    }
}

#[test]
fn byte_level_bpe_from_gguf_vocab() {
    let tok = Tokenizer::from_gguf_vocab(&vocab("smollm")).unwrap();
    let n = tok.vocab_size() as u32;
    let id = |t: &str| tok.token_id(t).unwrap();
    let hello = id("\u{120}hello");
    assert_eq!(
        tok.encode("a hello", true, true).unwrap(),
        vec![id("a"), hello]
    );
    // Digits are split one by one by the smollm pre-tokenizer.
    assert_eq!(
        tok.encode("12", false, true).unwrap(),
        vec![id("1"), id("2")]
    );
    // Control tokens are only parsed with parse_special; user-defined tokens always.
    assert_eq!(
        tok.encode("<|im_start|> hello", false, true).unwrap(),
        vec![1, hello]
    );
    let plain = tok.encode("<|im_start|> hello", false, false).unwrap();
    assert!(!plain.contains(&1));
    assert_eq!(tok.decode(&plain, false).unwrap(), "<|im_start|> hello");
    assert_eq!(tok.encode("<tool>", false, false).unwrap(), vec![n - 1]);
    assert_eq!(tok.decode(&[1, hello, 2], true).unwrap(), " hello");
    assert_eq!(
        tok.decode(&[1, hello, 2], false).unwrap(),
        "<|im_start|> hello<|im_end|>"
    );
    assert_eq!(tok.eos_token_ids(), vec![2, 0]);
    assert_eq!(
        tok.decode(&[n], false).unwrap_err().code(),
        "INVALID_TOKEN_ID"
    );

    // Multi-byte characters become several byte tokens; streaming never splits them.
    let text = "€ and 😀 hello";
    let ids = tok.encode(text, false, true).unwrap();
    assert!(ids.len() > 8);
    let mut sd = StreamDecoder::new(false);
    let mut chunks = Vec::new();
    for &i in &ids {
        chunks.push(sd.push(&tok, i).unwrap());
    }
    chunks.push(sd.finish(&tok).unwrap());
    assert!(chunks.iter().all(|c| !c.contains('\u{FFFD}')), "{chunks:?}");
    assert!(chunks.iter().filter(|c| c.is_empty()).count() >= 4);
    assert_eq!(chunks.concat(), text);
}

#[test]
fn every_supported_pre_builds() {
    for pre in [
        "smollm",
        "gpt-2",
        "default",
        "llama3",
        "llama-bpe",
        "qwen2",
        "falcon",
    ] {
        let tok = Tokenizer::from_gguf_vocab(&vocab(pre)).unwrap();
        let ids = tok.encode("hello 2024 world!", false, true).unwrap();
        assert_eq!(
            tok.decode(&ids, false).unwrap(),
            "hello 2024 world!",
            "{pre}"
        );
    }
    let err = Tokenizer::from_gguf_vocab(&vocab("no-such-pre")).unwrap_err();
    assert_eq!(err.code(), "UNSUPPORTED_TOKENIZER");
    assert!(err.to_string().contains("no-such-pre"));
}

#[test]
fn llama3_pre_adds_bos_by_default() {
    let mut v = vocab("llama3");
    v.add_bos = None;
    let tok = Tokenizer::from_gguf_vocab(&v).unwrap();
    assert!(tok.adds_bos());
    assert_eq!(tok.encode("a", true, true).unwrap()[0], 1);
    assert_eq!(
        tok.encode("a", false, true).unwrap().first(),
        tok.token_id("a").as_ref()
    );
}
