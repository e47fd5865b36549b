//! Loading a Hugging Face tokenizer directory.

use std::collections::HashSet;
use std::path::Path;

use serde_json::Value;

use crate::error::{load_err, Result, TokenizerError};
use crate::Specials;

/// `bos_token` / `eos_token` in tokenizer_config.json: a string or `{ "content": ... }`.
fn token_str(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("content")?.as_str().map(str::to_string),
        _ => None,
    }
}

/// `chat_template`: a string, or a list of `{name, template}` (the `"default"` one is taken).
fn chat_template(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Array(items) => items
            .iter()
            .find(|t| t.get("name").and_then(Value::as_str) == Some("default"))
            .and_then(|t| t.get("template"))
            .and_then(Value::as_str)
            .map(str::to_string),
        _ => None,
    }
}

/// Where the tokenizer files come from: a model directory, or their copies inside a seedinfer container.
pub(crate) trait TokenizerFiles {
    /// The file's text, `None` when absent.
    fn read(&self, name: &str) -> Result<Option<String>>;
    /// How to name the file in errors.
    fn label(&self, name: &str) -> String;
}

impl TokenizerFiles for &Path {
    fn read(&self, name: &str) -> Result<Option<String>> {
        let path = self.join(name);
        if !path.is_file() {
            return Ok(None);
        }
        std::fs::read_to_string(&path)
            .map(Some)
            .map_err(|e| load_err(&path.display().to_string(), e))
    }

    fn label(&self, name: &str) -> String {
        self.join(name).display().to_string()
    }
}

fn read_json(files: &impl TokenizerFiles, name: &str) -> Result<Option<Value>> {
    let Some(text) = files.read(name)? else {
        return Ok(None);
    };
    let v = serde_json::from_str(&text).map_err(|e| load_err(&files.label(name), e))?;
    Ok(Some(v))
}

fn ids_of(v: Option<&Value>) -> Vec<u32> {
    match v {
        Some(Value::Number(n)) => n
            .as_u64()
            .and_then(|x| u32::try_from(x).ok())
            .into_iter()
            .collect(),
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|x| x.as_u64().and_then(|x| u32::try_from(x).ok()))
            .collect(),
        _ => Vec::new(),
    }
}

/// Refuses pipeline components `tokenizers` accepts when deserialised but panics on later (found by fuzzing):
/// - a `TemplateProcessing` post-processor naming a special token it does not define (checked only when built in
///   code; encoding panics), or a special token whose ids and token strings differ in number;
/// - a `Strip` decoder with `stop > 0`, which indexes before the start of a token shorter than that (the tokenizers
///   people use strip at the start only).
fn check_pipeline(tk: &tokenizers::Tokenizer) -> std::result::Result<(), String> {
    if let Some(post) = tk.get_post_processor() {
        let value = serde_json::to_value(post).map_err(|e| e.to_string())?;
        each_component(&value, "processors", &check_template)?;
    }
    if let Some(decoder) = tk.get_decoder() {
        let value = serde_json::to_value(decoder).map_err(|e| e.to_string())?;
        each_component(&value, "decoders", &check_strip)?;
    }
    Ok(())
}

/// Runs `check` on `component`, or on each member of a `Sequence` (listed under `members`), recursively.
fn each_component(
    component: &Value,
    members: &str,
    check: &dyn Fn(&Value) -> std::result::Result<(), String>,
) -> std::result::Result<(), String> {
    match component.get("type").and_then(Value::as_str) {
        Some("Sequence") => component
            .get(members)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .try_for_each(|member| each_component(member, members, check)),
        _ => check(component),
    }
}

fn check_strip(decoder: &Value) -> std::result::Result<(), String> {
    let is_strip = decoder.get("type").and_then(Value::as_str) == Some("Strip");
    if is_strip && decoder.get("stop").and_then(Value::as_u64).unwrap_or(0) > 0 {
        return Err(
            "its Strip decoder strips at the end of tokens (stop > 0), which is not supported"
                .into(),
        );
    }
    Ok(())
}

fn check_template(processor: &Value) -> std::result::Result<(), String> {
    match processor.get("type").and_then(Value::as_str) {
        Some("TemplateProcessing") => {
            let defined = processor.get("special_tokens").and_then(Value::as_object);
            for (name, token) in defined.into_iter().flatten() {
                let count = |key: &str| token.get(key).and_then(Value::as_array).map(Vec::len);
                if count("ids") != count("tokens") {
                    return Err(format!(
                        "its post_processor's special token {name:?} has {:?} ids for {:?} tokens",
                        count("ids"),
                        count("tokens")
                    ));
                }
            }
            let pieces = ["single", "pair"]
                .into_iter()
                .filter_map(|t| processor.get(t).and_then(Value::as_array))
                .flatten();
            for piece in pieces {
                let named = piece
                    .get("SpecialToken")
                    .and_then(|t| t.get("id"))
                    .and_then(Value::as_str);
                if let Some(id) = named.filter(|id| !defined.is_some_and(|d| d.contains_key(*id))) {
                    return Err(format!(
                        "its post_processor template names the special token {id:?}, which it does not define"
                    ));
                }
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

pub(crate) fn load(files: impl TokenizerFiles) -> Result<(tokenizers::Tokenizer, Specials)> {
    let Some(text) = files.read("tokenizer.json")? else {
        return Err(TokenizerError::LoadFailed(format!(
            "{} not found",
            files.label("tokenizer.json")
        )));
    };
    // Parsed to a JSON value first: `tokenizers` panics (`expect("Helper")`) on a syntax error inside a
    // `decoder` when it reads straight from text, and never when it reads a value (found by fuzzing).
    let label = files.label("tokenizer.json");
    let value: Value = serde_json::from_str(&text).map_err(|e| load_err(&label, e))?;
    let tk: tokenizers::Tokenizer =
        serde_json::from_value(value).map_err(|e| load_err(&label, e))?;
    check_pipeline(&tk).map_err(|e| load_err(&label, e))?;
    let config = read_json(&files, "tokenizer_config.json")?.unwrap_or(Value::Null);
    let gen_config = read_json(&files, "generation_config.json")?.unwrap_or(Value::Null);

    let special_ids: HashSet<u32> = tk
        .get_added_tokens_decoder()
        .iter()
        .filter(|(_, t)| t.special)
        .map(|(id, _)| *id)
        .collect();

    let bos = token_str(config.get("bos_token"))
        .and_then(|t| tk.token_to_id(&t))
        .or_else(|| ids_of(gen_config.get("bos_token_id")).first().copied());
    let eos = token_str(config.get("eos_token"))
        .and_then(|t| tk.token_to_id(&t))
        .or_else(|| ids_of(gen_config.get("eos_token_id")).first().copied());

    // add_bos_token: explicit in the config; otherwise whether tokenizer.json's post-processor
    // adds BOS, or the Llama default (true).
    let add_bos = match config.get("add_bos_token").and_then(Value::as_bool) {
        Some(b) => b,
        None => {
            let post_adds_bos = bos.is_some_and(|b| {
                tk.encode_fast("a", true)
                    .is_ok_and(|e| e.get_ids().first() == Some(&b))
            });
            let llama_class = config
                .get("tokenizer_class")
                .and_then(Value::as_str)
                .is_some_and(|c| c.contains("Llama"));
            post_adds_bos || llama_class
        }
    };
    let add_eos = config
        .get("add_eos_token")
        .and_then(Value::as_bool)
        .unwrap_or(false);

    let mut template = chat_template(config.get("chat_template"));
    if template.is_none() {
        template = files.read("chat_template.jinja")?;
    }

    let specials = Specials {
        bos,
        eos,
        extra_eog: ids_of(gen_config.get("eos_token_id")),
        special_ids,
        add_bos,
        add_eos,
        chat_template: template,
        vocab_size: None,
    };
    Ok((tk, specials))
}
