//! Incremental (streaming) detokenization.

use crate::error::Result;
use crate::Tokenizer;

/// Incremental detokenizer for streaming generation.
///
/// Uses the prefix/read offset technique of Hugging Face text-generation-inference: it decodes
/// `tokens[prefix..read]` and `tokens[prefix..]` and emits the difference once the latter does
/// not end in U+FFFD. Decoding a small window (instead of a single token) keeps decoder context
/// such as SentencePiece leading-space stripping correct, and waiting for complete UTF-8 means a
/// multi-byte character split over several byte-fallback / byte-level tokens is only emitted
/// once complete.
#[derive(Debug, Clone, Default)]
pub struct StreamDecoder {
    skip_special: bool,
    /// Window of tokens still needed: everything before `prefix` has been dropped.
    tokens: Vec<u32>,
    /// Offset (into `tokens`) up to which text has been emitted.
    read: usize,
}

const REPLACEMENT: char = '\u{FFFD}';

impl StreamDecoder {
    /// Creates a decoder; `skip_special` drops special tokens (BOS, EOS, control tokens).
    pub fn new(skip_special: bool) -> Self {
        StreamDecoder {
            skip_special,
            tokens: Vec::new(),
            read: 0,
        }
    }

    /// Feeds one token and returns the newly completed text (possibly empty).
    pub fn push(&mut self, tok: &Tokenizer, id: u32) -> Result<String> {
        // Validate before mutating state so a bad id leaves the decoder usable.
        tok.check_id(id)?;
        self.tokens.push(id);
        let prefix_text = tok.decode(&self.tokens[..self.read], self.skip_special)?;
        let new_text = tok.decode(&self.tokens, self.skip_special)?;
        if new_text.len() > prefix_text.len() && !new_text.ends_with(REPLACEMENT) {
            if let Some(delta) = new_text.get(prefix_text.len()..) {
                let delta = delta.to_string();
                // The emitted window becomes the new prefix: keep only tokens from `read` on.
                self.tokens.drain(..self.read);
                self.read = self.tokens.len();
                return Ok(delta);
            }
        }
        Ok(String::new())
    }

    /// Flushes any pending text at the end of a stream (incomplete UTF-8 becomes U+FFFD).
    pub fn finish(&mut self, tok: &Tokenizer) -> Result<String> {
        let prefix_text = tok.decode(&self.tokens[..self.read], self.skip_special)?;
        let new_text = tok.decode(&self.tokens, self.skip_special)?;
        self.tokens.clear();
        self.read = 0;
        if new_text.len() > prefix_text.len() {
            if let Some(delta) = new_text.get(prefix_text.len()..) {
                return Ok(delta.to_string());
            }
        }
        Ok(String::new())
    }

    /// Resets the decoder for a new stream.
    pub fn reset(&mut self) {
        self.tokens.clear();
        self.read = 0;
    }
}
