//! Tokenizers for seedinfer models.
//!
//! A [`Tokenizer`] is built either from a Hugging Face model directory (`tokenizer.json` plus
//! `tokenizer_config.json`) or from the vocabulary embedded in a GGUF file (see [`GgufVocab`]).
//! All tokenization is done by the `tokenizers` crate; this crate only assembles its pipeline
//! from GGUF metadata and handles special tokens, BOS/EOS policy and streaming detokenization.

mod error;
mod gguf;
mod hf;
mod stream;

use std::collections::HashSet;
use std::path::Path;

pub use error::{Result, TokenizerError};
pub use gguf::{token_type, GgufVocab};
pub use stream::StreamDecoder;

/// Texts of tokens that llama.cpp treats as end-of-generation when they are special tokens.
const EOG_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<|return|>",
    "<|call|>",
    "<|eom_id|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|end_of_text|>",
    "<EOT>",
    "_<EOT>",
    "<｜end▁of▁sentence｜>",
    "<end_of_utterance>",
];

/// A loaded tokenizer. Cheap to share across threads (`Send + Sync`).
#[derive(Debug, Clone)]
pub struct Tokenizer {
    /// Matches special tokens in input text.
    inner: tokenizers::Tokenizer,
    /// Same pipeline, but special tokens in input text are tokenized as plain text. Made on first use: a second
    /// copy of the vocabulary and merges (about 95 MB for Gemma's 262,144 tokens) that most programs never need.
    inner_plain: std::sync::OnceLock<tokenizers::Tokenizer>,
    vocab_size: usize,
    bos_id: Option<u32>,
    bos_token: Option<String>,
    eos_id: Option<u32>,
    eos_token: Option<String>,
    eog_ids: Vec<u32>,
    add_bos: bool,
    add_eos: bool,
    chat_template: Option<String>,
}

/// Everything besides the library tokenizer that [`Tokenizer::assemble`] needs.
pub(crate) struct Specials {
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    /// Extra end-of-generation ids known from metadata (eot, eom, generation_config).
    pub extra_eog: Vec<u32>,
    /// Ids considered special (control) tokens, for EOG detection.
    pub special_ids: HashSet<u32>,
    pub add_bos: bool,
    pub add_eos: bool,
    pub chat_template: Option<String>,
    /// Known vocabulary size (GGUF token count); the library's highest id + 1 otherwise.
    pub vocab_size: Option<usize>,
}

/// A Hugging Face directory's tokenizer files copied into a seedinfer container.
struct EmbeddedFiles<'a>(&'a seedinfer_formats::GgufFile);

impl hf::TokenizerFiles for EmbeddedFiles<'_> {
    fn read(&self, name: &str) -> Result<Option<String>> {
        let key = format!("{}{name}", seedinfer_formats::container::HF_FILE_PREFIX);
        Ok(self.0.get_str(&key).map(str::to_string))
    }

    fn label(&self, name: &str) -> String {
        format!("{} ({name})", self.0.path().display())
    }
}

impl Tokenizer {
    /// Loads `tokenizer.json` (+ optional `tokenizer_config.json`, `generation_config.json`,
    /// `chat_template.jinja`) from a Hugging Face model directory.
    pub fn from_hf_dir(dir: &Path) -> Result<Self> {
        let (tk, specials) = hf::load(dir)?;
        Self::assemble(tk, specials)
    }

    /// Builds the tokenizer embedded in a GGUF file: its `tokenizer.*` vocabulary, or, in a seedinfer container
    /// made from a Hugging Face directory, the copies of that directory's tokenizer files.
    pub fn from_gguf(gguf: &seedinfer_formats::GgufFile) -> Result<Self> {
        use seedinfer_formats::container::HF_FILE_PREFIX;
        if gguf
            .get_str(&format!("{HF_FILE_PREFIX}tokenizer.json"))
            .is_some()
        {
            let (tk, specials) = hf::load(EmbeddedFiles(gguf))?;
            return Self::assemble(tk, specials);
        }
        Self::from_gguf_vocab(&GgufVocab::from_gguf(gguf)?)
    }

    /// Builds a tokenizer from GGUF vocabulary metadata.
    pub fn from_gguf_vocab(vocab: &GgufVocab) -> Result<Self> {
        let built = gguf::build(vocab)?;
        let specials = Specials {
            bos: built.bos,
            eos: built.eos,
            extra_eog: vocab.eot.into_iter().chain(vocab.eom).collect(),
            special_ids: built.special_ids,
            add_bos: built.add_bos,
            add_eos: built.add_eos,
            chat_template: vocab.chat_template.clone(),
            vocab_size: Some(vocab.tokens.len()),
        };
        Self::assemble(built.tokenizer, specials)
    }

    pub(crate) fn assemble(inner: tokenizers::Tokenizer, sp: Specials) -> Result<Self> {
        let vocab_size = inner
            .get_vocab(true)
            .values()
            .copied()
            .max()
            .map_or(0, |m| m as usize + 1)
            .max(sp.vocab_size.unwrap_or(0));
        let in_vocab = |id: &u32| (*id as usize) < vocab_size;
        let bos_id = sp.bos.filter(in_vocab);
        let eos_id = sp.eos.filter(in_vocab);

        let mut eog_ids: Vec<u32> = Vec::new();
        let mut push = |id: u32| {
            if !eog_ids.contains(&id) {
                eog_ids.push(id);
            }
        };
        if let Some(e) = eos_id {
            push(e);
        }
        for &id in sp.extra_eog.iter().filter(|id| in_vocab(id)) {
            push(id);
        }
        let mut by_text: Vec<u32> = EOG_TEXTS
            .iter()
            .filter_map(|t| inner.token_to_id(t))
            .filter(|id| sp.special_ids.contains(id))
            .collect();
        by_text.sort_unstable();
        for id in by_text {
            push(id);
        }

        Ok(Tokenizer {
            bos_token: bos_id.and_then(|i| inner.id_to_token(i)),
            eos_token: eos_id.and_then(|i| inner.id_to_token(i)),
            inner,
            inner_plain: std::sync::OnceLock::new(),
            vocab_size,
            bos_id,
            eos_id,
            eog_ids,
            add_bos: sp.add_bos && bos_id.is_some(),
            add_eos: sp.add_eos && eos_id.is_some(),
            chat_template: sp.chat_template,
        })
    }

    /// Encodes `text`.
    ///
    /// `add_bos`: add the model's special tokens — BOS if the model wants one
    /// (`add_bos_token`), and EOS if the model asks for it (`add_eos_token`, rare).
    /// `parse_special`: when false, text such as `"<|im_start|>"` is tokenized as plain text.
    pub fn encode(&self, text: &str, add_bos: bool, parse_special: bool) -> Result<Vec<u32>> {
        let tk = if parse_special {
            &self.inner
        } else {
            self.inner_plain.get_or_init(|| {
                let mut plain = self.inner.clone();
                plain.set_encode_special_tokens(true);
                plain
            })
        };
        let enc = tk
            .encode_fast(text, false)
            .map_err(|e| TokenizerError::TokenizeFailed(e.to_string()))?;
        let body = enc.get_ids();
        let mut ids = Vec::with_capacity(body.len() + 2);
        if add_bos && self.add_bos {
            ids.extend(self.bos_id);
        }
        ids.extend_from_slice(body);
        if add_bos && self.add_eos {
            ids.extend(self.eos_id);
        }
        Ok(ids)
    }

    pub(crate) fn check_id(&self, id: u32) -> Result<()> {
        if (id as usize) < self.vocab_size {
            Ok(())
        } else {
            Err(TokenizerError::InvalidTokenId {
                id,
                vocab_size: self.vocab_size,
            })
        }
    }

    /// Decodes ids to text; `skip_special` drops special tokens.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String> {
        for &id in ids {
            self.check_id(id)?;
        }
        self.inner
            .decode(ids, skip_special)
            .map_err(|e| TokenizerError::TokenizeFailed(e.to_string()))
    }

    /// Number of token ids (highest id + 1).
    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    /// BOS token id, if the model has one.
    pub fn bos_token_id(&self) -> Option<u32> {
        self.bos_id
    }

    /// End-of-generation ids: EOS first, then EOT/EOM and special tokens such as
    /// `<|im_end|>`, `<|eot_id|>`, `<|end_of_text|>` present in the vocabulary.
    pub fn eos_token_ids(&self) -> Vec<u32> {
        self.eog_ids.clone()
    }

    /// BOS token text.
    pub fn bos_token(&self) -> Option<&str> {
        self.bos_token.as_deref()
    }

    /// EOS token text.
    pub fn eos_token(&self) -> Option<&str> {
        self.eos_token.as_deref()
    }

    /// Whether [`Tokenizer::encode`] with `add_bos = true` prepends BOS.
    pub fn adds_bos(&self) -> bool {
        self.add_bos
    }

    /// Whether [`Tokenizer::encode`] with `add_bos = true` appends EOS.
    pub fn adds_eos(&self) -> bool {
        self.add_eos
    }

    /// Jinja chat template, if the model ships one.
    pub fn chat_template(&self) -> Option<&str> {
        self.chat_template.as_deref()
    }

    /// Raw vocabulary text of a token (e.g. `"▁the"`, `"Ġthe"`, `"<0x0A>"`, `"<s>"`).
    pub fn token_text(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// Id of a token given its raw vocabulary text.
    pub fn token_id(&self, text: &str) -> Option<u32> {
        self.inner.token_to_id(text)
    }

    /// The tokenizer as a Hugging Face `tokenizer.json` document (for a GGUF vocabulary: the pipeline built from
    /// it), for libraries that read that format.
    pub fn to_json(&self) -> Result<serde_json::Value> {
        serde_json::to_value(&self.inner).map_err(|e| TokenizerError::TokenizeFailed(e.to_string()))
    }

    /// Whether `id` is an end-of-generation token.
    pub fn is_eog(&self, id: u32) -> bool {
        self.eog_ids.contains(&id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn send_sync() {
        assert_send_sync::<Tokenizer>();
        assert_send_sync::<StreamDecoder>();
    }

    #[test]
    fn error_codes() {
        assert_eq!(
            TokenizerError::LoadFailed("x".into()).code(),
            "TOKENIZER_LOAD_FAILED"
        );
        assert_eq!(
            TokenizerError::Unsupported("x".into()).code(),
            "UNSUPPORTED_TOKENIZER"
        );
        assert_eq!(
            TokenizerError::InvalidTokenId {
                id: 1,
                vocab_size: 1
            }
            .code(),
            "INVALID_TOKEN_ID"
        );
        assert_eq!(
            TokenizerError::TokenizeFailed("x".into()).code(),
            "TOKENIZE_FAILED"
        );
    }
}
