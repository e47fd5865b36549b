//! Constrained generation on stories260K (a real Llama checkpoint with a SentencePiece vocabulary of 512 pieces and
//! byte fallback): every output parses and satisfies its schema, regex or grammar, greedy and sampled; a bad
//! schema or pattern is `INVALID_OPTION` before any token; a cut output says it is incomplete; sessions with
//! their own constraints batched together produce what they produce alone; with speculative decoding (prompt lookup,
//! a self-draft) a constrained output is the one plain decoding gives, token for token.

use seedinfer_engine::constraint::ResponseFormat;
use seedinfer_engine::{
    DraftSource, GenerateParams, GenerationOutput, Model, SamplingParams, Session,
    SpeculativeParams, StopReason,
};
use serde_json::{json, Value};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Barrier};

mod common;

fn params(format: ResponseFormat, seed: Option<u64>, max_tokens: usize) -> GenerateParams {
    GenerateParams {
        max_tokens,
        sampling: match seed {
            None => SamplingParams {
                temperature: 0.0,
                ..Default::default()
            },
            Some(seed) => SamplingParams {
                temperature: 1.0,
                seed,
                ..Default::default()
            },
        },
        response_format: Some(format),
        ..Default::default()
    }
}

fn run(model: &Arc<Model>, prompt: &[u32], params: &GenerateParams) -> GenerationOutput {
    let mut session = Session::new(Arc::clone(model), 512).expect("session");
    session
        .generate(prompt, params, &AtomicBool::new(false), &mut |_| {})
        .expect("generates")
}

fn person_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "name": { "type": "string", "maxLength": 12 },
            "age": { "type": "integer", "minimum": 1, "maximum": 99 },
            "tags": {
                "type": "array",
                "items": { "enum": ["red", "green", "blue"] },
                "minItems": 1,
                "maxItems": 3
            }
        },
        "required": ["name", "age", "tags"],
        "additionalProperties": false
    })
}

fn check_person(text: &str) {
    let v: Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
    let o = v.as_object().expect("an object");
    assert_eq!(o.len(), 3, "{text}");
    assert!(
        o["name"].as_str().is_some_and(|s| s.chars().count() <= 12),
        "{text}"
    );
    assert!(
        o["age"].as_i64().is_some_and(|a| (1..=99).contains(&a)),
        "{text}"
    );
    let tags = o["tags"].as_array().expect("tags");
    assert!((1..=3).contains(&tags.len()), "{text}");
    assert!(tags
        .iter()
        .all(|t| ["red", "green", "blue"].contains(&t.as_str().unwrap_or(""))));
}

#[test]
fn json_schema_outputs_parse_and_validate() {
    let model = common::stories_model();
    for seed in [None, Some(1), Some(2), Some(3)] {
        let format = ResponseFormat::JsonSchema {
            schema: person_schema(),
            strict: true,
        };
        let out = run(&model, &[1, 403, 407, 261, 378], &params(format, seed, 200));
        assert!(!out.incomplete, "{seed:?}: {:?}", out.text);
        assert_eq!(out.stop_reason, StopReason::Eos);
        check_person(&out.text);
    }
    // Any JSON object.
    let out = run(
        &model,
        &[1],
        &params(ResponseFormat::JsonObject, Some(9), 300),
    );
    if !out.incomplete {
        let v: Value =
            serde_json::from_str(&out.text).unwrap_or_else(|e| panic!("{:?}: {e}", out.text));
        assert!(v.is_object());
    }
}

#[test]
fn speculative_drafts_keep_constrained_outputs_exact() {
    let model = common::stories_model();
    // A prompt that holds JSON of the schema's shape, so prompt-lookup drafts find matches.
    let mut prompt = vec![1];
    prompt.extend(
        model
            .tokenizer
            .encode(
                r#"{"name": "Lily", "age": 5, "tags": ["red", "blue"]} {"name": "Tom", "age": 7, "tags": ["red"]} "#,
                false,
                false,
            )
            .expect("encodes"),
    );
    let mut accepted = 0;
    for seed in [None, Some(1), Some(2), Some(3)] {
        let format = ResponseFormat::JsonSchema {
            schema: person_schema(),
            strict: true,
        };
        let plain_params = params(format, seed, 200);
        let plain = run(&model, &prompt, &plain_params);
        let mut sources = vec![DraftSource::PromptLookup];
        if seed.is_none() {
            sources.push(DraftSource::FirstLayers(3));
        }
        for source in sources {
            let spec = GenerateParams {
                speculative: Some(SpeculativeParams {
                    source: source.clone(),
                    ..Default::default()
                }),
                ..plain_params.clone()
            };
            let out = run(&model, &prompt, &spec);
            assert_eq!(out.token_ids, plain.token_ids, "{seed:?} {source:?}");
            assert_eq!(out.stop_reason, plain.stop_reason);
            check_person(&out.text);
            accepted += out.speculative.expect("a report").accepted;
        }
    }
    assert!(accepted > 10, "drafts were accepted: {accepted}");
}

#[test]
fn regex_and_grammar_outputs_match() {
    let model = common::stories_model();
    let date = regex_lite_date();
    for seed in [None, Some(4), Some(5)] {
        let out = run(
            &model,
            &[1],
            &params(ResponseFormat::Regex(r"\d{4}-\d{2}-\d{2}".into()), seed, 30),
        );
        assert!(!out.incomplete);
        assert!(date(&out.text), "{:?}", out.text);
    }
    let lark = r#"
start: greeting " " name "!"
greeting: "Hello" | "Hi"
name: /[A-Z][a-z]{1,8}/
"#;
    for seed in [None, Some(6)] {
        let out = run(
            &model,
            &[1],
            &params(ResponseFormat::Lark(lark.into()), seed, 30),
        );
        assert!(!out.incomplete, "{:?}", out.text);
        let rest = out
            .text
            .strip_prefix("Hello ")
            .or_else(|| out.text.strip_prefix("Hi "))
            .unwrap_or_else(|| panic!("{:?}", out.text));
        let name = rest.strip_suffix('!').expect("ends with !");
        assert!(name.len() >= 2 && name.len() <= 9, "{:?}", out.text);
        assert!(name.chars().next().is_some_and(|c| c.is_ascii_uppercase()));
        assert!(name.chars().skip(1).all(|c| c.is_ascii_lowercase()));
    }
}

/// `dddd-dd-dd`, nothing else.
fn regex_lite_date() -> impl Fn(&str) -> bool {
    |s: &str| {
        let b = s.as_bytes();
        b.len() == 10
            && b.iter().enumerate().all(|(i, c)| match i {
                4 | 7 => *c == b'-',
                _ => c.is_ascii_digit(),
            })
    }
}

#[test]
fn bad_formats_are_invalid_options_and_cut_outputs_are_incomplete() {
    let model = common::stories_model();
    let mut session = Session::new(Arc::clone(&model), 512).expect("session");
    for format in [
        ResponseFormat::JsonSchema {
            schema: json!({ "type": "no-such-type" }),
            strict: true,
        },
        ResponseFormat::JsonSchema {
            schema: json!([1, 2]),
            strict: false,
        },
        ResponseFormat::Regex("(unclosed".into()),
        ResponseFormat::Lark("start: undefined_rule".into()),
    ] {
        let e = session
            .generate(
                &[1],
                &params(format.clone(), None, 10),
                &AtomicBool::new(false),
                &mut |_| {},
            )
            .expect_err(&format!("{format:?} is refused"));
        assert_eq!(e.code(), "INVALID_OPTION", "{e}");
        assert_eq!(session.token_count(), 0, "nothing ran for {format:?}");
    }
    let e = session
        .generate(
            &[1],
            &GenerateParams {
                ignore_eos: true,
                ..params(ResponseFormat::JsonObject, None, 10)
            },
            &AtomicBool::new(false),
            &mut |_| {},
        )
        .expect_err("ignoreEos with a format is refused");
    assert_eq!(e.code(), "INVALID_OPTION");

    let format = ResponseFormat::JsonSchema {
        schema: person_schema(),
        strict: true,
    };
    let out = run(&model, &[1], &params(format, None, 4));
    assert_eq!(out.stop_reason, StopReason::MaxTokens);
    assert!(out.incomplete);
    assert!(out.text.starts_with('{'), "{:?}", out.text);
}

#[test]
fn constrained_sessions_batched_together_match_their_runs_alone() {
    let model = common::stories_model();
    let requests: Vec<(Vec<u32>, GenerateParams)> = (0..4u64)
        .map(|i| {
            let format = match i % 2 {
                0 => ResponseFormat::JsonSchema {
                    schema: person_schema(),
                    strict: true,
                },
                _ => ResponseFormat::Regex(r"[a-z ]{10,40}\.".into()),
            };
            let prompt = [1, 403, 407, 261, 378][..2 + i as usize].to_vec();
            (prompt, params(format, (i > 0).then_some(i), 120))
        })
        .collect();
    let alone: Vec<GenerationOutput> = requests
        .iter()
        .map(|(prompt, p)| run(&model, prompt, p))
        .collect();
    let barrier = Arc::new(Barrier::new(requests.len()));
    let together: Vec<GenerationOutput> = std::thread::scope(|scope| {
        let handles: Vec<_> = requests
            .iter()
            .map(|(prompt, p)| {
                let (model, barrier) = (Arc::clone(&model), Arc::clone(&barrier));
                scope.spawn(move || {
                    barrier.wait();
                    run(&model, prompt, p)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("joins"))
            .collect()
    });
    for (a, t) in alone.iter().zip(&together) {
        assert_eq!(a.token_ids, t.token_ids);
        assert_eq!(a.text, t.text);
        assert!(!a.incomplete, "{:?}", a.text);
    }
    check_person(&alone[0].text);
}

#[test]
fn tagged_json_is_the_schema_between_its_tags() {
    let model = common::stories_model();
    let schema = json!({
        "anyOf": [
            { "type": "object", "properties": { "name": { "const": "get_weather" }, "arguments": { "type": "object", "properties": { "city": { "type": "string", "maxLength": 12 } }, "required": ["city"] } }, "required": ["name", "arguments"] },
            { "type": "object", "properties": { "name": { "const": "get_time" }, "arguments": { "type": "object", "properties": {} } }, "required": ["name", "arguments"] }
        ]
    });
    for seed in [None, Some(11), Some(12)] {
        let format = ResponseFormat::TaggedJson {
            before: "<tool_call>\n".into(),
            schema: schema.clone(),
            after: "\n</tool_call>".into(),
        };
        let out = run(&model, &[1], &params(format, seed, 120));
        assert!(!out.incomplete, "{:?}", out.text);
        let inner = out
            .text
            .strip_prefix("<tool_call>\n")
            .and_then(|t| t.strip_suffix("\n</tool_call>"))
            .unwrap_or_else(|| panic!("{:?}", out.text));
        let call: Value = serde_json::from_str(inner).expect("JSON between the tags");
        match call["name"].as_str() {
            Some("get_weather") => assert!(call["arguments"]["city"].is_string(), "{inner}"),
            Some("get_time") => assert_eq!(call["arguments"], json!({}), "{inner}"),
            other => panic!("{other:?} in {inner}"),
        }
    }
}
