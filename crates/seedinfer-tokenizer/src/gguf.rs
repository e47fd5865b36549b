//! Building a [`tokenizers::Tokenizer`] from the vocabulary metadata embedded in a GGUF file.
//!
//! Two GGUF tokenizer styles are supported, mirroring llama.cpp's `llama-vocab.cpp`:
//! - `tokenizer.ggml.model = "gpt2"`: byte-level BPE; the pre-tokenizer regexes are chosen by
//!   `tokenizer.ggml.pre` exactly as llama.cpp does.
//! - `tokenizer.ggml.model = "llama"`: SentencePiece BPE with scores and `<0xNN>` byte fallback;
//!   merges are derived from the vocabulary and scores the way Hugging Face's SentencePiece
//!   converter does.

use std::collections::HashSet;

use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::byte_level::ByteLevel;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::decoders::strip::Strip;
use tokenizers::models::bpe::{Merges, Vocab, BPE};
use tokenizers::normalizers::{Prepend, Replace, Sequence as NormalizerSequence};
use tokenizers::pre_tokenizers::sequence::Sequence as PreTokenizerSequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{
    AddedToken, DecoderWrapper, NormalizerWrapper, PreTokenizerWrapper, SplitDelimiterBehavior,
};

use crate::error::{load_err, Result, TokenizerError};

/// GGUF token types (`tokenizer.ggml.token_type`), as in llama.cpp.
pub mod token_type {
    pub const NORMAL: i32 = 1;
    pub const UNKNOWN: i32 = 2;
    pub const CONTROL: i32 = 3;
    pub const USER_DEFINED: i32 = 4;
    pub const UNUSED: i32 = 5;
    pub const BYTE: i32 = 6;
}

/// The tokenizer-related metadata of a GGUF file, decoupled from the file reader so it can be
/// constructed directly (e.g. in tests).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GgufVocab {
    /// `tokenizer.ggml.model` (`"gpt2"`, `"llama"`, ...).
    pub model: String,
    /// `tokenizer.ggml.pre` (pre-tokenizer name, BPE only).
    pub pre: Option<String>,
    /// `tokenizer.ggml.tokens`, in id order.
    pub tokens: Vec<String>,
    /// `tokenizer.ggml.scores`.
    pub scores: Option<Vec<f32>>,
    /// `tokenizer.ggml.token_type`.
    pub token_types: Option<Vec<i32>>,
    /// `tokenizer.ggml.merges` (`"left right"` strings).
    pub merges: Option<Vec<String>>,
    /// `tokenizer.ggml.bos_token_id`.
    pub bos: Option<u32>,
    /// `tokenizer.ggml.eos_token_id`.
    pub eos: Option<u32>,
    /// `tokenizer.ggml.unknown_token_id`.
    pub unk: Option<u32>,
    /// `tokenizer.ggml.eot_token_id`.
    pub eot: Option<u32>,
    /// `tokenizer.ggml.eom_token_id`.
    pub eom: Option<u32>,
    /// `tokenizer.ggml.add_bos_token`.
    pub add_bos: Option<bool>,
    /// `tokenizer.ggml.add_eos_token`.
    pub add_eos: Option<bool>,
    /// `tokenizer.ggml.add_space_prefix`.
    pub add_space_prefix: Option<bool>,
    /// `tokenizer.chat_template`.
    pub chat_template: Option<String>,
}

impl GgufVocab {
    /// Reads the tokenizer metadata keys from an opened GGUF file.
    pub fn from_gguf(gguf: &seedinfer_formats::GgufFile) -> Result<Self> {
        let model = gguf
            .get_str("tokenizer.ggml.model")
            .ok_or_else(|| {
                TokenizerError::LoadFailed("GGUF has no tokenizer.ggml.model".to_string())
            })?
            .to_string();
        let tokens: Vec<String> = gguf
            .get_str_array("tokenizer.ggml.tokens")
            .ok_or_else(|| {
                TokenizerError::LoadFailed("GGUF has no tokenizer.ggml.tokens".to_string())
            })?
            .into_iter()
            .map(str::to_string)
            .collect();
        let id = |key: &str| {
            gguf.get_u64(key)
                .and_then(|v| u32::try_from(v).ok())
                .filter(|&v| (v as usize) < tokens.len())
        };
        Ok(GgufVocab {
            pre: gguf.get_str("tokenizer.ggml.pre").map(str::to_string),
            scores: gguf.get_f32_array("tokenizer.ggml.scores"),
            token_types: gguf.get_i32_array("tokenizer.ggml.token_type"),
            merges: gguf
                .get_str_array("tokenizer.ggml.merges")
                .map(|m| m.into_iter().map(str::to_string).collect()),
            bos: id("tokenizer.ggml.bos_token_id"),
            eos: id("tokenizer.ggml.eos_token_id"),
            unk: id("tokenizer.ggml.unknown_token_id"),
            eot: id("tokenizer.ggml.eot_token_id"),
            eom: id("tokenizer.ggml.eom_token_id"),
            add_bos: gguf.get_bool("tokenizer.ggml.add_bos_token"),
            add_eos: gguf.get_bool("tokenizer.ggml.add_eos_token"),
            add_space_prefix: gguf.get_bool("tokenizer.ggml.add_space_prefix"),
            chat_template: gguf.get_str("tokenizer.chat_template").map(str::to_string),
            model,
            tokens,
        })
    }

    /// Token type of `id` (normal when the file has no type array).
    pub fn token_type(&self, id: usize) -> i32 {
        self.token_types
            .as_ref()
            .and_then(|t| t.get(id).copied())
            .unwrap_or(token_type::NORMAL)
    }
}

/// Pre-tokenizer regex families of llama.cpp (`llm_tokenizer_bpe` in llama-vocab.cpp).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PreFamily {
    Default,
    Llama3,
    Falcon,
    StarCoder,
    Gpt2,
    Qwen2,
}

const GPT2_RE: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)";
const LLAMA3_RE: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN2_RE: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

impl PreFamily {
    /// Maps `tokenizer.ggml.pre` to a family (names as accepted by llama.cpp).
    fn from_name(pre: Option<&str>) -> Option<Self> {
        let family = match pre.unwrap_or("default") {
            "" | "default" => PreFamily::Default,
            "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "falcon-h1" | "pixtral"
            | "midm-2.0" | "lfm2" => PreFamily::Llama3,
            "falcon" => PreFamily::Falcon,
            "starcoder" | "refact" | "command-r" | "smollm" | "codeshell" | "exaone"
            | "minerva-7b" => PreFamily::StarCoder,
            "gpt-2" | "phi-2" | "jina-es" | "jina-de" | "gigachat" | "jina-v2-es"
            | "jina-v2-de" | "a.x-4.0" | "mellum" | "mpt" | "olmo" | "jais" | "exaone4" => {
                PreFamily::Gpt2
            }
            "qwen2" | "deepseek-r1-qwen" | "stablelm2" | "megrez" => PreFamily::Qwen2,
            _ => return None,
        };
        Some(family)
    }

    fn regexes(self) -> &'static [&'static str] {
        match self {
            PreFamily::Default => &[
                r"[\p{P}\$\+<=>\^~\|]+",
                GPT2_RE,
                r"\p{N}+",
                r"[0-9][0-9][0-9]",
            ],
            PreFamily::Llama3 => &[LLAMA3_RE],
            PreFamily::Falcon => &[r"[\p{P}\$\+<=>\^~\|`]+", GPT2_RE, r"[0-9][0-9][0-9]"],
            PreFamily::StarCoder => &[r"\p{N}", GPT2_RE],
            PreFamily::Gpt2 => &[GPT2_RE],
            PreFamily::Qwen2 => &[QWEN2_RE],
        }
    }

    /// llama.cpp sets `ignore_merges` for these: a word that is a whole vocab entry is not merged.
    fn ignore_merges(self) -> bool {
        self == PreFamily::Llama3
    }

    /// llama.cpp's default for `add_bos` when the GGUF has no `tokenizer.ggml.add_bos_token`.
    fn default_add_bos(self) -> bool {
        self == PreFamily::Llama3
    }
}

/// Result of converting a GGUF vocabulary: the library tokenizer plus the special-token info.
pub(crate) struct BuiltGguf {
    pub tokenizer: tokenizers::Tokenizer,
    pub add_bos: bool,
    pub add_eos: bool,
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    /// Ids of tokens that are control/unknown (special) tokens.
    pub special_ids: HashSet<u32>,
}

pub(crate) fn build(vocab: &GgufVocab) -> Result<BuiltGguf> {
    if vocab.tokens.is_empty() {
        return Err(TokenizerError::LoadFailed(
            "GGUF tokenizer.ggml.tokens is empty".to_string(),
        ));
    }
    if let Some(types) = &vocab.token_types {
        if types.len() != vocab.tokens.len() {
            return Err(TokenizerError::LoadFailed(format!(
                "tokenizer.ggml.token_type has {} entries but tokenizer.ggml.tokens has {}",
                types.len(),
                vocab.tokens.len()
            )));
        }
    }
    match vocab.model.as_str() {
        "gpt2" => build_gpt2(vocab),
        "llama" => build_spm(vocab),
        other => Err(TokenizerError::Unsupported(format!(
            "GGUF tokenizer.ggml.model = {other:?} (supported: \"gpt2\", \"llama\")"
        ))),
    }
}

/// Vocabulary map (text → id); the first occurrence wins for duplicated texts.
fn vocab_map(tokens: &[String]) -> Result<Vocab> {
    let mut map = Vocab::default();
    for (id, tok) in tokens.iter().enumerate() {
        let id = u32::try_from(id).map_err(|e| load_err("vocabulary too large", e))?;
        map.entry(tok.clone()).or_insert(id);
    }
    Ok(map)
}

/// Control and unknown tokens become special added tokens (only matched in text when
/// parsing specials); user-defined tokens become non-special added tokens (always matched,
/// as in llama.cpp's `tokenizer_st_partition`).
fn added_tokens(vocab: &GgufVocab) -> (Vec<AddedToken>, HashSet<u32>) {
    let mut added = Vec::new();
    let mut special_ids = HashSet::new();
    for (id, text) in vocab.tokens.iter().enumerate() {
        if text.is_empty() {
            continue;
        }
        let ty = vocab.token_type(id);
        let special = match ty {
            token_type::CONTROL | token_type::UNKNOWN => true,
            token_type::USER_DEFINED => false,
            _ => continue,
        };
        if special {
            special_ids.insert(id as u32);
        }
        added.push(AddedToken::from(text.clone(), special).normalized(false));
    }
    (added, special_ids)
}

/// llama.cpp applies each regex of the family in turn to the pieces produced by the previous
/// one, keeping both matches and the text between them: a sequence of `Split(regex, Isolated)`.
/// The final `ByteLevel` has `use_regex = false`, so it only maps bytes to its printable
/// alphabet without splitting again.
fn byte_level_pre_tokenizer(family: PreFamily) -> Result<PreTokenizerSequence> {
    let mut pre: Vec<PreTokenizerWrapper> = Vec::new();
    for re in family.regexes() {
        let split = Split::new(
            SplitPattern::Regex((*re).to_string()),
            SplitDelimiterBehavior::Isolated,
            false,
        )
        .map_err(|e| load_err("compiling pre-tokenizer regex", e))?;
        pre.push(split.into());
    }
    pre.push(ByteLevel::new(false, false, false).into());
    Ok(PreTokenizerSequence::new(pre))
}

fn build_gpt2(vocab: &GgufVocab) -> Result<BuiltGguf> {
    let family = PreFamily::from_name(vocab.pre.as_deref()).ok_or_else(|| {
        TokenizerError::Unsupported(format!(
            "GGUF tokenizer.ggml.model = \"gpt2\" with unknown tokenizer.ggml.pre = {:?}",
            vocab.pre.as_deref().unwrap_or("")
        ))
    })?;
    let merges_raw = vocab.merges.as_ref().ok_or_else(|| {
        TokenizerError::LoadFailed("gpt2 GGUF vocabulary has no tokenizer.ggml.merges".to_string())
    })?;
    let mut merges: Merges = Vec::with_capacity(merges_raw.len());
    for m in merges_raw {
        let (a, b) = m.split_once(' ').ok_or_else(|| {
            TokenizerError::LoadFailed(format!("malformed merge {m:?} (expected \"left right\")"))
        })?;
        merges.push((a.to_string(), b.to_string()));
    }
    let bpe = BPE::builder()
        .vocab_and_merges(vocab_map(&vocab.tokens)?, merges)
        .ignore_merges(family.ignore_merges())
        .build()
        .map_err(|e| load_err("building byte-level BPE", e))?;

    let mut tk = tokenizers::Tokenizer::new(bpe);
    tk.with_pre_tokenizer(Some(byte_level_pre_tokenizer(family)?));
    tk.with_decoder(Some(ByteLevel::new(false, false, false)));
    let (added, special_ids) = added_tokens(vocab);
    tk.add_tokens(&added);

    Ok(BuiltGguf {
        tokenizer: tk,
        add_bos: vocab.add_bos.unwrap_or(family.default_add_bos()),
        add_eos: vocab.add_eos.unwrap_or(false),
        bos: vocab.bos,
        eos: vocab.eos,
        special_ids,
    })
}

/// Derives BPE merges from a SentencePiece vocabulary with scores, like the Hugging Face
/// `SentencePieceExtractor`: every split of a piece into two vocabulary pieces is a merge;
/// merges are ordered by the merged piece's score (highest first), then by the merged
/// piece's id, then by the ids of the two halves.
pub(crate) fn spm_merges(vocab: &GgufVocab, map: &Vocab) -> Result<Merges> {
    let scores = vocab.scores.as_ref().ok_or_else(|| {
        TokenizerError::LoadFailed("llama GGUF vocabulary has no tokenizer.ggml.scores".to_string())
    })?;
    if scores.len() != vocab.tokens.len() {
        return Err(TokenizerError::LoadFailed(format!(
            "tokenizer.ggml.scores has {} entries but tokenizer.ggml.tokens has {}",
            scores.len(),
            vocab.tokens.len()
        )));
    }
    // (score, merged id, left id, right id, left, right)
    let mut found: Vec<(f32, u32, u32, u32, &str, &str)> = Vec::new();
    for (id, piece) in vocab.tokens.iter().enumerate() {
        let ty = vocab.token_type(id);
        if ty != token_type::NORMAL && ty != token_type::USER_DEFINED {
            continue;
        }
        for (split, _) in piece.char_indices().skip(1) {
            let (l, r) = piece.split_at(split);
            if let (Some(&li), Some(&ri)) = (map.get(l), map.get(r)) {
                found.push((scores[id], id as u32, li, ri, l, r));
            }
        }
    }
    found.sort_by(|a, b| {
        b.0.total_cmp(&a.0)
            .then(a.1.cmp(&b.1))
            .then(a.2.cmp(&b.2))
            .then(a.3.cmp(&b.3))
    });
    Ok(found
        .into_iter()
        .map(|(_, _, _, _, l, r)| (l.to_string(), r.to_string()))
        .collect())
}

fn build_spm(vocab: &GgufVocab) -> Result<BuiltGguf> {
    let map = vocab_map(&vocab.tokens)?;
    let merges = spm_merges(vocab, &map)?;
    let n = vocab.tokens.len();
    let in_vocab = |id: u32| (id as usize) < n;
    // llama.cpp defaults for SPM vocabularies without the keys.
    let unk = vocab.unk.or(Some(0)).filter(|&i| in_vocab(i));
    let bos = vocab.bos.or(Some(1)).filter(|&i| in_vocab(i));
    let eos = vocab.eos.or(Some(2)).filter(|&i| in_vocab(i));

    let mut builder = BPE::builder()
        .vocab_and_merges(map, merges)
        .byte_fallback(true)
        .fuse_unk(true);
    if let Some(unk_text) = unk.and_then(|i| vocab.tokens.get(i as usize)) {
        builder = builder.unk_token(unk_text.clone());
    }
    let bpe = builder
        .build()
        .map_err(|e| load_err("building SentencePiece BPE", e))?;

    let add_space_prefix = vocab.add_space_prefix.unwrap_or(true);
    let mut norms: Vec<NormalizerWrapper> = Vec::new();
    if add_space_prefix {
        norms.push(Prepend::new("\u{2581}".to_string()).into());
    }
    norms.push(
        Replace::new(" ", "\u{2581}")
            .map_err(|e| load_err("building normalizer", e))?
            .into(),
    );
    let mut decs: Vec<DecoderWrapper> = vec![
        Replace::new("\u{2581}", " ")
            .map_err(|e| load_err("building decoder", e))?
            .into(),
        ByteFallback::new().into(),
        Fuse::new().into(),
    ];
    if add_space_prefix {
        decs.push(Strip::new(' ', 1, 0).into());
    }

    let mut tk = tokenizers::Tokenizer::new(bpe);
    tk.with_normalizer(Some(NormalizerSequence::new(norms)));
    tk.with_decoder(Some(DecoderSequence::new(decs)));
    let (added, special_ids) = added_tokens(vocab);
    tk.add_tokens(&added);

    Ok(BuiltGguf {
        tokenizer: tk,
        add_bos: vocab.add_bos.unwrap_or(true),
        add_eos: vocab.add_eos.unwrap_or(false),
        bos,
        eos,
        special_ids,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pre_names() {
        assert_eq!(
            PreFamily::from_name(Some("smollm")),
            Some(PreFamily::StarCoder)
        );
        assert_eq!(PreFamily::from_name(None), Some(PreFamily::Default));
        assert_eq!(
            PreFamily::from_name(Some("llama-bpe")),
            Some(PreFamily::Llama3)
        );
        assert_eq!(PreFamily::from_name(Some("nonexistent")), None);
    }

    /// Pre-tokenizes `text` and maps the byte-level pieces back to UTF-8 for readability.
    fn pieces(family: PreFamily, text: &str) -> Vec<String> {
        use tokenizers::{
            Decoder, OffsetReferential, OffsetType, PreTokenizedString, PreTokenizer,
        };
        let pre = byte_level_pre_tokenizer(family).unwrap();
        let mut s = PreTokenizedString::from(text);
        pre.pre_tokenize(&mut s).unwrap();
        let dec = ByteLevel::new(false, false, false);
        s.get_splits(OffsetReferential::Original, OffsetType::Byte)
            .into_iter()
            .map(|(p, _, _)| dec.decode(vec![p.to_string()]).unwrap())
            .collect()
    }

    #[test]
    fn starcoder_family_splits_digits_and_whitespace() {
        assert_eq!(
            pieces(PreFamily::StarCoder, "a  b\n\n  c 2024!"),
            vec!["a", " ", " b", "\n\n ", " c", " ", "2", "0", "2", "4", "!"]
        );
        assert_eq!(
            pieces(PreFamily::StarCoder, "don't  stop"),
            vec!["don", "'t", " ", " stop"]
        );
    }

    #[test]
    fn llama3_family_groups_three_digits() {
        assert_eq!(
            pieces(PreFamily::Llama3, "Hello 1234567 WORLD's\n\n  x"),
            vec!["Hello", " ", "123", "456", "7", " WORLD", "'s", "\n\n", " ", " x"]
        );
    }

    #[test]
    fn gpt2_family() {
        assert_eq!(
            pieces(PreFamily::Gpt2, "Hi 123 there!!"),
            vec!["Hi", " 123", " there", "!!"]
        );
    }

    fn tiny_spm() -> GgufVocab {
        let tokens: Vec<String> = [
            "<unk>",
            "<s>",
            "</s>",
            "\u{2581}",
            "a",
            "b",
            "ab",
            "\u{2581}ab",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        GgufVocab {
            model: "llama".into(),
            scores: Some(vec![0.0, 0.0, 0.0, -10.0, -11.0, -12.0, -1.0, -2.0]),
            token_types: Some(vec![2, 3, 3, 1, 1, 1, 1, 1]),
            tokens,
            ..Default::default()
        }
    }

    #[test]
    fn spm_merge_derivation() {
        let v = tiny_spm();
        let map = vocab_map(&v.tokens).unwrap();
        let merges = spm_merges(&v, &map).unwrap();
        assert_eq!(
            merges,
            vec![
                ("a".to_string(), "b".to_string()),
                ("\u{2581}".to_string(), "ab".to_string()),
            ]
        );
    }

    #[test]
    fn unsupported_model_and_pre() {
        let mut v = tiny_spm();
        v.model = "bert".into();
        let err = build(&v).err().unwrap();
        assert_eq!(err.code(), "UNSUPPORTED_TOKENIZER");
        v.model = "gpt2".into();
        v.pre = Some("mystery-pre".into());
        v.merges = Some(vec![]);
        let err = build(&v).err().unwrap();
        assert_eq!(err.code(), "UNSUPPORTED_TOKENIZER");
        assert!(err.to_string().contains("mystery-pre"));
    }
}
