//! Constrained generation: a response format (a JSON schema, any JSON object, a regular expression or a Lark
//! grammar) compiled by llguidance into a parser that says, before every step, which tokens may come next. The
//! sampler draws only from those; the parser follows the tokens drawn and ends the generation when its grammar is
//! complete.
//!
//! The mask for the next step is computed on a helper thread while the forward pass that produces the next
//! logits runs ([`TokenConstraint::advance`] hands the token over, [`TokenConstraint::allowed`] collects the mask).

use crate::error::{EngineError, Result};
use llguidance::api::TopLevelGrammar;
use llguidance::toktrie::{SimpleVob, TokEnv, TokRxInfo, TokTrie, TokenId, TokenizerEnv};
use llguidance::{Matcher, ParserFactory};
use seedinfer_tokenizer::Tokenizer;
use serde_json::Value;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, OnceLock};

/// What the output must be.
#[derive(Clone, Debug, PartialEq)]
pub enum ResponseFormat {
    /// A JSON value valid under `schema`. `strict`: refuse a schema using keywords the grammar cannot enforce
    /// (otherwise they are ignored, as OpenAI's non-strict mode does). Objects that list `properties` get only
    /// those unless they say `additionalProperties` (llama.cpp's reading; not in schemas that use `allOf`).
    JsonSchema { schema: Value, strict: bool },
    /// Any JSON object.
    JsonObject,
    /// A JSON value valid under `schema` (read as `JsonSchema`'s, not strict) between two fixed texts: a tool call
    /// in a chat format's tags (`<tool_call>\n` … `\n</tool_call>`).
    TaggedJson {
        before: String,
        schema: Value,
        after: String,
    },
    /// Text matching a regular expression (the whole output, Rust `regex` syntax).
    Regex(String),
    /// Text in the language of a Lark grammar (llguidance's dialect: `start: …`, `%json { … }`, regex terminals).
    Lark(String),
}

/// How JSON is laid out unless the schema says otherwise under `x-guidance`: one space after `,` and `:`, no
/// other whitespace (free whitespace lets a small model spend its tokens on newlines).
fn json_layout(strict: bool) -> Value {
    serde_json::json!({
        "whitespace_flexible": false,
        "item_separator": ", ",
        "key_separator": ": ",
        "lenient": !strict,
    })
}

/// Whether `schema` uses `allOf` anywhere (its branches are partial objects; closing any of them could make the
/// intersection empty).
fn uses_all_of(schema: &Value) -> bool {
    match schema {
        Value::Object(map) => map
            .iter()
            .any(|(key, value)| key == "allOf" || uses_all_of(value)),
        Value::Array(items) => items.iter().any(uses_all_of),
        _ => false,
    }
}

/// llama.cpp's reading of an object schema that lists `properties` without saying `additionalProperties`: only
/// those properties (JSON Schema would allow any other, and a small model asked for an open object keeps adding
/// keys until `max_tokens`). The output stays valid under the schema as written. Walks only schema positions, not
/// `const`/`enum`/`default` data.
fn close_declared_objects(schema: &mut Value) {
    let Value::Object(map) = schema else {
        return;
    };
    let declares = map.contains_key("properties");
    let says = [
        "additionalProperties",
        "unevaluatedProperties",
        "patternProperties",
    ]
    .iter()
    .any(|k| map.contains_key(*k));
    if declares && !says {
        map.insert("additionalProperties".into(), Value::Bool(false));
    }
    for (key, child) in map.iter_mut() {
        match key.as_str() {
            "properties" | "$defs" | "definitions" | "patternProperties" => {
                if let Value::Object(named) = child {
                    named.values_mut().for_each(close_declared_objects);
                }
            }
            "items" | "prefixItems" | "anyOf" | "oneOf" => match child {
                Value::Array(list) => list.iter_mut().for_each(close_declared_objects),
                other => close_declared_objects(other),
            },
            "additionalProperties" | "additionalItems" | "contains" => {
                close_declared_objects(child)
            }
            _ => {}
        }
    }
}

/// A schema as the grammar reads it: declared objects closed (unless it uses `allOf`) and the JSON layout set
/// unless the schema's `x-guidance` sets it.
fn prepared_schema(schema: &Value, strict: bool) -> Result<Value> {
    if !schema.is_object() {
        return Err(EngineError::InvalidOption(
            "responseFormat.schema must be a JSON object".into(),
        ));
    }
    let mut schema = schema.clone();
    if !uses_all_of(&schema) {
        close_declared_objects(&mut schema);
    }
    if let Value::Object(fields) = &mut schema {
        fields
            .entry("x-guidance")
            .or_insert_with(|| json_layout(strict));
    }
    Ok(schema)
}

impl ResponseFormat {
    fn grammar(&self) -> Result<TopLevelGrammar> {
        Ok(match self {
            ResponseFormat::JsonSchema { schema, strict } => {
                TopLevelGrammar::from_json_schema(prepared_schema(schema, *strict)?)
            }
            ResponseFormat::TaggedJson {
                before,
                schema,
                after,
            } => {
                let schema = prepared_schema(schema, false)?;
                let literal = |text: &str| {
                    if text.is_empty() {
                        String::new()
                    } else {
                        // A JSON string is a Lark string literal (llguidance reads them with serde_json).
                        Value::String(text.to_string()).to_string()
                    }
                };
                TopLevelGrammar::from_lark(format!(
                    "start: {} %json {schema} {}",
                    literal(before),
                    literal(after)
                ))
            }
            ResponseFormat::JsonObject => {
                let mut schema = serde_json::json!({ "type": "object" });
                schema["x-guidance"] = json_layout(false);
                TopLevelGrammar::from_json_schema(schema)
            }
            ResponseFormat::Regex(pattern) => TopLevelGrammar::from_regex(pattern),
            ResponseFormat::Lark(grammar) => TopLevelGrammar::from_lark(grammar.clone()),
        })
    }

    fn kind(&self) -> &'static str {
        match self {
            ResponseFormat::JsonSchema { .. } => "JSON schema",
            ResponseFormat::JsonObject => "JSON object",
            ResponseFormat::TaggedJson { .. } => "tool-call schema",
            ResponseFormat::Regex(_) => "regex",
            ResponseFormat::Lark(_) => "grammar",
        }
    }
}

/// The model's vocabulary as llguidance sees it: each token's bytes in a trie.
struct Vocabulary {
    trie: TokTrie,
}

impl TokenizerEnv for Vocabulary {
    fn tok_trie(&self) -> &TokTrie {
        &self.trie
    }

    fn tokenize_bytes(&self, s: &[u8]) -> Vec<TokenId> {
        self.trie.greedy_tokenize(s)
    }

    /// Tokens are never forced from text here (every step samples under the mask), so a greedy split is enough.
    fn tokenize_is_canonical(&self) -> bool {
        false
    }
}

/// Builds the trie: the bytes of each id below `vocab_size` (ids past the tokenizer's, as in padded embedding
/// tables, are named placeholders no grammar allows), with the tokenizer's end-of-generation ids.
fn vocabulary(tokenizer: &Tokenizer, vocab_size: usize) -> std::result::Result<TokEnv, String> {
    let json = tokenizer.to_json().map_err(|e| e.to_string())?;
    let mut words =
        llguidance::token_bytes_from_tokenizer_json(&json).map_err(|e| e.to_string())?;
    if words.len() > vocab_size {
        return Err(format!(
            "the tokenizer has {} tokens, the model {vocab_size}",
            words.len()
        ));
    }
    while words.len() < vocab_size {
        let mut name = format!(".<[{}]>", words.len()).into_bytes();
        name[0] = TokTrie::SPECIAL_TOKEN_MARKER;
        words.push(name);
    }
    let eos = tokenizer.eos_token_ids();
    let first = eos.first().copied().unwrap_or(0);
    let mut trie = TokTrie::from(&TokRxInfo::new(vocab_size as u32, first), &words);
    if !eos.is_empty() {
        trie = trie.with_eos_tokens(&eos);
    }
    Ok(Arc::new(Vocabulary { trie }))
}

/// Compiles response formats for one model; its vocabulary is handed to llguidance once, at the first use.
#[derive(Default)]
pub struct GrammarCompiler {
    factory: OnceLock<std::result::Result<ParserFactory, String>>,
}

impl GrammarCompiler {
    fn factory(&self, tokenizer: &Tokenizer, vocab_size: usize) -> Result<&ParserFactory> {
        let built = self.factory.get_or_init(|| {
            // llguidance asserts on vocabularies it cannot represent: a panic here is an error, not a crash.
            std::panic::catch_unwind(|| {
                let env = vocabulary(tokenizer, vocab_size)?;
                let mut factory = ParserFactory::new_simple(&env).map_err(|e| e.to_string())?;
                factory.quiet();
                Ok(factory)
            })
            .unwrap_or_else(|_| Err("building the token trie panicked".into()))
        });
        built.as_ref().map_err(|e| {
            EngineError::InvalidOption(format!(
                "constrained generation is not available for this model's tokenizer: {e}"
            ))
        })
    }

    /// Compiles `format` (a bad schema, pattern or grammar is `InvalidOption` naming the problem) and starts its
    /// parser on a helper thread.
    pub fn start(
        &self,
        format: &ResponseFormat,
        tokenizer: &Tokenizer,
        vocab_size: usize,
    ) -> Result<TokenConstraint> {
        let factory = self.factory(tokenizer, vocab_size)?;
        let invalid =
            |e: String| EngineError::InvalidOption(format!("invalid {}: {e}", format.kind()));
        let parser = factory
            .create_parser(format.grammar()?)
            .map_err(|e| invalid(e.to_string()))?;
        let matcher = Matcher::new(Ok(parser));
        if let Some(e) = matcher.get_error() {
            return Err(invalid(e));
        }
        TokenConstraint::spawn(matcher)
    }
}

/// From the helper thread.
enum Report {
    /// A token was consumed: whether the grammar is now complete and nothing but the end may follow (`stopped`),
    /// and whether it accepts the output as it is.
    Consumed {
        stopped: bool,
        accepting: bool,
    },
    /// The tokens allowed next.
    Mask(SimpleVob),
    Failed(String),
}

/// A started constraint: the parser on its thread, one step ahead of the sampler.
pub struct TokenConstraint {
    tokens: Sender<TokenId>,
    reports: Receiver<Report>,
    mask: Option<SimpleVob>,
    /// A `Consumed` report not yet read.
    unread_consumed: bool,
    stopped: bool,
    accepting: bool,
}

fn failure(e: impl std::fmt::Display) -> EngineError {
    EngineError::Internal(format!("the output constraint failed: {e}"))
}

impl TokenConstraint {
    fn spawn(mut matcher: Matcher) -> Result<Self> {
        let (tokens, token_rx) = channel::<TokenId>();
        let (report_tx, reports) = channel();
        let send_mask = |matcher: &mut Matcher, tx: &Sender<Report>| {
            let report = match matcher.compute_mask() {
                Ok(mask) => Report::Mask(mask),
                Err(e) => Report::Failed(e.to_string()),
            };
            tx.send(report).is_ok()
        };
        std::thread::Builder::new()
            .name("seedinfer-grammar".into())
            .spawn(move || {
                if !send_mask(&mut matcher, &report_tx) {
                    return;
                }
                for token in token_rx {
                    if let Err(e) = matcher.consume_token(token) {
                        let _ = report_tx.send(Report::Failed(e.to_string()));
                        return;
                    }
                    let stopped = matcher.is_stopped();
                    let accepting = matcher.is_accepting().unwrap_or(false);
                    if report_tx
                        .send(Report::Consumed { stopped, accepting })
                        .is_err()
                    {
                        return;
                    }
                    if stopped || !send_mask(&mut matcher, &report_tx) {
                        return;
                    }
                }
            })
            .map_err(|e| failure(format!("cannot start its thread: {e}")))?;
        Ok(Self {
            tokens,
            reports,
            mask: None,
            unread_consumed: false,
            stopped: false,
            accepting: false,
        })
    }

    fn receive(&mut self) -> Result<Report> {
        match self.reports.recv() {
            Ok(Report::Failed(e)) => Err(failure(e)),
            Ok(report) => Ok(report),
            Err(_) => Err(failure("its thread ended")),
        }
    }

    fn read_consumed(&mut self) -> Result<()> {
        if self.unread_consumed {
            self.unread_consumed = false;
            match self.receive()? {
                Report::Consumed { stopped, accepting } => {
                    self.stopped = stopped;
                    self.accepting = accepting;
                }
                _ => return Err(failure("reports out of order")),
            }
        }
        Ok(())
    }

    /// The tokens allowed at this step (waits for the helper thread if it is still computing them).
    pub fn allowed(&mut self) -> Result<&SimpleVob> {
        self.read_consumed()?;
        if self.stopped {
            return Err(failure("asked for a mask after the grammar ended"));
        }
        if self.mask.is_none() {
            match self.receive()? {
                Report::Mask(mask) => self.mask = Some(mask),
                _ => return Err(failure("reports out of order")),
            }
        }
        self.mask
            .as_ref()
            .ok_or_else(|| failure("no mask was computed"))
    }

    /// Hands the sampled token to the parser, which starts on the next mask at once.
    pub fn advance(&mut self, token: TokenId) -> Result<()> {
        self.read_consumed()?;
        self.mask = None;
        self.tokens
            .send(token)
            .map_err(|_| failure("its thread ended"))?;
        self.unread_consumed = true;
        Ok(())
    }

    /// Whether the grammar is complete and only the end of the output may follow (after the last token).
    pub fn finished(&mut self) -> Result<bool> {
        self.read_consumed()?;
        Ok(self.stopped)
    }

    /// Whether the output so far is a complete sentence of the grammar.
    pub fn accepting(&mut self) -> Result<bool> {
        self.read_consumed()?;
        Ok(self.accepting)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declared_objects_are_closed_where_the_schema_is_silent() {
        let mut schema = serde_json::json!({
            "type": "object",
            "properties": {
                "a": { "type": "object", "properties": { "x": { "type": "integer" } } },
                "b": { "type": "object", "properties": {}, "additionalProperties": true },
                "c": { "type": "array", "items": { "properties": { "y": {} } } },
                "d": { "anyOf": [{ "properties": { "z": {} } }, { "type": "string" }] },
                "e": { "const": { "properties": { "data": 1 } } }
            },
            "$defs": { "f": { "properties": { "w": {} }, "patternProperties": { "^p": {} } } }
        });
        close_declared_objects(&mut schema);
        let closed = |v: &Value| v.get("additionalProperties") == Some(&Value::Bool(false));
        let p = &schema["properties"];
        assert!(closed(&schema));
        assert!(closed(&p["a"]));
        assert_eq!(p["b"]["additionalProperties"], Value::Bool(true));
        assert!(closed(&p["c"]["items"]));
        assert!(closed(&p["d"]["anyOf"][0]));
        assert!(
            p["e"]["const"].get("additionalProperties").is_none(),
            "data is not a schema"
        );
        assert!(schema["$defs"]["f"].get("additionalProperties").is_none());
        assert!(uses_all_of(&serde_json::json!({ "x": [{ "allOf": [] }] })));
    }

    /// The trie's bytes of the tokens of a text spell the text (stories260K: SentencePiece pieces with byte
    /// fallback, a space put in front by the normalizer); end-of-generation ids are special.
    #[test]
    fn the_vocabulary_spells_the_text() {
        let dir = std::path::PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../../shared/models/stories260K"
        ));
        let tokenizer = Tokenizer::from_hf_dir(&dir).expect("stories260K tokenizer");
        let env = vocabulary(&tokenizer, 520).expect("vocabulary");
        let trie = env.tok_trie();
        assert_eq!(trie.vocab_size(), 520);
        for text in [
            "Once upon a time, Lily",
            "café 😀 日本 {\"a\": [1, 2]}",
            "x\n\ty",
        ] {
            let ids = tokenizer.encode(text, false, false).expect("encodes");
            let spelled = trie.decode(&ids);
            assert_eq!(String::from_utf8_lossy(&spelled), format!(" {text}"));
        }
        assert!(trie.is_special_token(2));
        assert_eq!(trie.eos_tokens(), &[2]);
        // Padding ids past the tokenizer's are placeholders.
        assert!(trie.is_special_token(515));
    }
}
