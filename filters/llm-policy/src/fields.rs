//! The field policy: what each endpoint's body may carry.
//!
//! vLLM accepts far more than OpenAI's fields, and some of its extras hand a
//! client control the gateway must keep: `kv_transfer_params` points a
//! replica at another's KV cache, `prompt_embeds` feeds tensors no estimate
//! can count, a `chat_template` runs on the pool and decides what the model
//! sees, media URLs make replicas fetch remote content. So every top-level
//! member is judged by name, per endpoint:
//!
//! - [`Rule::Pass`]: OpenAI's fields and vLLM's sampling extras;
//! - [`Rule::Counted`]: passes, and its text is charged as prompt tokens
//!   (`documents` and templates are rendered into the prompt; grammars and
//!   schemas are compiled per request on the pool);
//! - [`Rule::Gateway`]: set by the gateway, whatever the client sent
//!   (`cache_salt`, `priority`, `request_id`);
//! - [`Rule::Template`]: only for tiers with `allow_chat_templates`;
//! - [`Rule::Refused`]: 400 naming the field.
//!
//! A member no table names is refused as OpenAI does
//! (`Unrecognized request argument`): a new vLLM field is reviewed before
//! it reaches a pool, not after. An operator passes one on by listing it in
//! the registry's `gateway.extra_fields` (charged as prompt tokens, since
//! the gateway cannot know what it costs); refused and gateway-owned
//! members cannot be listed back in.

use serde_json::Value;
use serde_json::value::RawValue;

use crate::body::{Piece, Prompt};
use crate::endpoint::Endpoint;
use crate::error::PolicyError;
use crate::json::RawObject;

/// How one top-level member is treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    Pass,
    Counted,
    Gateway,
    Template,
    Refused(&'static str),
}

/// Members every generating endpoint shares (OpenAI and vLLM sampling).
const SAMPLING: &[&str] = &[
    "model",
    "stream",
    "stream_options",
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "n",
    "best_of",
    "seed",
    "stop",
    "stop_token_ids",
    "frequency_penalty",
    "presence_penalty",
    "repetition_penalty",
    "length_penalty",
    "logit_bias",
    "logprobs",
    "top_logprobs",
    "prompt_logprobs",
    "allowed_token_ids",
    "bad_words",
    "ignore_eos",
    "min_tokens",
    "max_tokens",
    "include_stop_str_in_output",
    "skip_special_tokens",
    "spaces_between_special_tokens",
    "truncate_prompt_tokens",
    "use_beam_search",
    "add_special_tokens",
    "return_tokens_as_token_ids",
    "return_token_ids",
    "user",
    "metadata",
    "service_tier",
    "safety_identifier",
    "prompt_cache_key",
];

const CHAT: &[&str] = &[
    "messages",
    "max_completion_tokens",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "functions",
    "function_call",
    "modalities",
    "audio",
    "prediction",
    "reasoning_effort",
    "include_reasoning",
    "store",
    "verbosity",
    "web_search_options",
    "echo",
    "add_generation_prompt",
    "continue_final_message",
];

const COMPLETIONS: &[&str] = &["prompt", "echo", "suffix"];

const EMBEDDINGS: &[&str] = &[
    "model",
    "input",
    "encoding_format",
    "dimensions",
    "user",
    "truncate_prompt_tokens",
    "add_special_tokens",
    "normalize",
];

const RESPONSES: &[&str] = &[
    "model",
    "input",
    "instructions",
    "max_output_tokens",
    "max_tool_calls",
    "metadata",
    "parallel_tool_calls",
    "reasoning",
    "store",
    "stream",
    "temperature",
    "text",
    "tool_choice",
    "tools",
    "top_p",
    "top_k",
    "min_p",
    "repetition_penalty",
    "top_logprobs",
    "truncation",
    "user",
    "background",
    "include",
    "service_tier",
    "safety_identifier",
    "prompt_cache_key",
    "previous_response_id",
];

/// Rendered into the prompt or compiled per request: charged as tokens.
const COUNTED: &[&str] = &[
    "documents",
    "response_format",
    "guided_json",
    "guided_regex",
    "guided_choice",
    "guided_grammar",
    "guided_decoding_backend",
    "guided_whitespace_pattern",
    "structural_tag",
    "structured_outputs",
];

/// Set by the gateway only.
const GATEWAY: &[&str] = &["cache_salt", "priority", "request_id"];

/// Templates: the tier decides.
const TEMPLATES: &[&str] = &["chat_template", "chat_template_kwargs"];

/// Never from a client, with the reason given back.
const REFUSED: &[(&str, &str)] = &[
    (
        "kv_transfer_params",
        "it addresses the pool's KV-cache transfer, which only the gateway may do",
    ),
    (
        "prompt_embeds",
        "embeddings as input cannot be counted or isolated per tenant",
    ),
    (
        "mm_processor_kwargs",
        "media processing options are set by the operator",
    ),
    (
        "media_io_kwargs",
        "media loading options are set by the operator",
    ),
    (
        "logits_processors",
        "custom logits processors run code on the pool",
    ),
    (
        "vllm_xargs",
        "extra engine arguments are set by the operator",
    ),
];

/// The rule for `key` on `endpoint`; `None` when no table names it.
pub fn rule(endpoint: Endpoint, key: &str) -> Option<Rule> {
    if let Some((_, reason)) = REFUSED.iter().find(|(k, _)| *k == key) {
        return Some(Rule::Refused(reason));
    }
    if GATEWAY.contains(&key) {
        return Some(Rule::Gateway);
    }
    let listed = match endpoint {
        Endpoint::ChatCompletions => SAMPLING.contains(&key) || CHAT.contains(&key),
        Endpoint::Completions => SAMPLING.contains(&key) || COMPLETIONS.contains(&key),
        Endpoint::Embeddings => EMBEDDINGS.contains(&key),
        Endpoint::Responses => RESPONSES.contains(&key),
    };
    if listed {
        return Some(Rule::Pass);
    }
    let generates = endpoint != Endpoint::Embeddings;
    if generates && COUNTED.contains(&key) {
        return Some(Rule::Counted);
    }
    if endpoint == Endpoint::ChatCompletions && TEMPLATES.contains(&key) {
        return Some(Rule::Template);
    }
    None
}

/// What the registry allows beyond the defaults.
#[derive(Debug, Clone, Copy, Default)]
pub struct Allowances<'r> {
    /// The tier may send its own chat template.
    pub chat_templates: bool,
    /// Members unknown to the tables that this deployment passes on.
    pub extra_fields: &'r [String],
}

/// Checks every member of `object`; returns the raw text of the members
/// whose cost is charged as prompt tokens.
pub fn check<'a>(
    endpoint: Endpoint,
    object: &RawObject<'a>,
    allow: Allowances<'_>,
) -> Result<Vec<&'a RawValue>, PolicyError> {
    let mut counted = Vec::new();
    for (key, raw) in object.members() {
        match rule(endpoint, key) {
            None if allow.extra_fields.iter().any(|f| f == key) => counted.push(*raw),
            None => {
                return Err(PolicyError::UnknownParameter { param: key.clone() });
            }
            Some(Rule::Refused(reason)) => {
                return Err(PolicyError::ForbiddenParameter {
                    param: key.clone(),
                    reason,
                });
            }
            Some(Rule::Template) if !allow.chat_templates => {
                return Err(PolicyError::ForbiddenParameter {
                    param: key.clone(),
                    reason: "this tier may not send its own chat template",
                });
            }
            Some(Rule::Template) | Some(Rule::Counted) => counted.push(*raw),
            Some(Rule::Pass) | Some(Rule::Gateway) => {}
        }
    }
    Ok(counted)
}

/// Keys whose string value is a URL the pool would fetch.
const URL_KEYS: &[&str] = &["url", "image_url", "audio_url", "video_url", "file_url"];

/// Refuses media parts whose URLs name a host not in `hosts` (`data:` URLs
/// carry their content and are always allowed).
pub fn check_media_urls(prompt: &Prompt, hosts: &[String]) -> Result<(), PolicyError> {
    for (s, sequence) in prompt.sequences.iter().enumerate() {
        for (m, segment) in sequence.iter().enumerate() {
            for piece in &segment.pieces {
                let Piece::Media(raw) = piece else {
                    continue;
                };
                let Ok(value) = serde_json::from_str::<Value>(raw) else {
                    continue;
                };
                if let Some(url) = first_foreign_url(&value, hosts) {
                    let param = if prompt.chat {
                        format!("messages[{m}]")
                    } else {
                        format!("input[{s}]")
                    };
                    return Err(PolicyError::MediaUrlNotAllowed {
                        param,
                        host: host_of(&url).unwrap_or(&url).to_owned(),
                    });
                }
            }
        }
    }
    Ok(())
}

/// The first URL in `value` (at any depth under a URL key) that is neither
/// a `data:` URL nor on an allowed host.
fn first_foreign_url(value: &Value, hosts: &[String]) -> Option<String> {
    match value {
        Value::Object(map) => map.iter().find_map(|(k, v)| match v {
            Value::String(url) if URL_KEYS.contains(&k.as_str()) => {
                (!url_allowed(url, hosts)).then(|| url.clone())
            }
            other => first_foreign_url(other, hosts),
        }),
        Value::Array(items) => items.iter().find_map(|v| first_foreign_url(v, hosts)),
        _ => None,
    }
}

fn url_allowed(url: &str, hosts: &[String]) -> bool {
    let trimmed = url.trim_start();
    if trimmed
        .get(..5)
        .is_some_and(|s| s.eq_ignore_ascii_case("data:"))
    {
        return true;
    }
    host_of(trimmed).is_some_and(|host| hosts.iter().any(|h| h.eq_ignore_ascii_case(host)))
}

/// The host of an `http(s)://` URL; `None` for any other scheme (`file:`,
/// `ftp:`, ...), which is never allowed.
fn host_of(url: &str) -> Option<&str> {
    let lower_scheme = url.get(..8).map(str::to_ascii_lowercase)?;
    let rest = if lower_scheme.starts_with("https://") {
        url.get(8..)?
    } else if lower_scheme.starts_with("http://") {
        url.get(7..)?
    } else {
        return None;
    };
    let authority = rest.split(['/', '?', '#', '\\']).next()?;
    // user:pass@host:port -> host
    let host_port = authority.rsplit('@').next()?;
    let host = if host_port.starts_with('[') {
        host_port
            .split(']')
            .next()
            .map(|h| h.trim_start_matches('['))?
    } else {
        host_port.split(':').next()?
    };
    (!host.is_empty()).then_some(host)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::body::Segment;

    fn object(text: &str) -> RawObject<'_> {
        RawObject::parse_body(text).unwrap()
    }

    #[test]
    fn dangerous_fields_are_refused_by_name() {
        for key in [
            "kv_transfer_params",
            "prompt_embeds",
            "logits_processors",
            "vllm_xargs",
        ] {
            let body = format!(r#"{{"model":"m","messages":[],"{key}":{{}}}}"#);
            let err = check(
                Endpoint::ChatCompletions,
                &object(&body),
                Allowances::default(),
            )
            .unwrap_err();
            assert!(
                matches!(&err, PolicyError::ForbiddenParameter { param, .. } if param == key),
                "{key}: {err:?}"
            );
        }
    }

    #[test]
    fn templates_need_the_tier() {
        let body = r#"{"model":"m","messages":[],"chat_template":"{{ messages }}"}"#;
        assert!(matches!(
            check(
                Endpoint::ChatCompletions,
                &object(body),
                Allowances::default()
            ),
            Err(PolicyError::ForbiddenParameter { .. })
        ));
        let counted = check(
            Endpoint::ChatCompletions,
            &object(body),
            Allowances {
                chat_templates: true,
                ..Allowances::default()
            },
        )
        .unwrap();
        assert_eq!(counted.len(), 1);
    }

    #[test]
    fn the_registry_can_pass_an_unknown_field_but_not_a_refused_one() {
        let extra = vec!["new_vllm_knob".to_owned(), "kv_transfer_params".to_owned()];
        let allow = Allowances {
            extra_fields: &extra,
            ..Allowances::default()
        };
        let body = r#"{"model":"m","messages":[],"new_vllm_knob":{"x":1}}"#;
        let counted = check(Endpoint::ChatCompletions, &object(body), allow).unwrap();
        assert_eq!(counted.len(), 1, "charged as prompt text");
        let body = r#"{"model":"m","messages":[],"kv_transfer_params":{}}"#;
        assert!(matches!(
            check(Endpoint::ChatCompletions, &object(body), allow),
            Err(PolicyError::ForbiddenParameter { .. })
        ));
    }

    #[test]
    fn unknown_fields_are_refused_and_known_ones_pass() {
        let err = check(
            Endpoint::ChatCompletions,
            &object(r#"{"model":"m","messages":[],"frobnicate":1}"#),
            Allowances::default(),
        )
        .unwrap_err();
        assert_eq!(
            err,
            PolicyError::UnknownParameter {
                param: "frobnicate".into()
            }
        );
        // An embeddings request may not smuggle chat messages past the estimate.
        assert!(
            check(
                Endpoint::Embeddings,
                &object(r#"{"model":"m","input":"x","messages":[]}"#),
                Allowances::default()
            )
            .is_err()
        );
        let ok = r#"{"model":"m","messages":[],"temperature":0.2,"top_k":5,"cache_salt":"x","priority":3,"request_id":"r","guided_json":{"type":"object"},"documents":[{"text":"d"}]}"#;
        let counted = check(
            Endpoint::ChatCompletions,
            &object(ok),
            Allowances::default(),
        )
        .unwrap();
        assert_eq!(counted.len(), 2);
    }

    fn media(json: &str) -> Prompt {
        Prompt {
            chat: true,
            sequences: vec![vec![Segment {
                role: Some("user".into()),
                pieces: vec![Piece::Media(json.into())],
            }]],
        }
    }

    #[test]
    fn media_urls_need_an_allowed_host() {
        let hosts = vec!["cdn.example.com".to_owned()];
        let ok = [
            r#"{"type":"image_url","image_url":{"url":"data:image/png;base64,AAAA"}}"#,
            r#"{"type":"image_url","image_url":{"url":"https://cdn.example.com/a.png"}}"#,
            r#"{"type":"image_url","image_url":{"url":"HTTPS://CDN.example.com:443/a.png"}}"#,
            r#"{"type":"input_image","image_url":"data:image/png;base64,AA"}"#,
        ];
        for part in ok {
            assert_eq!(check_media_urls(&media(part), &hosts), Ok(()), "{part}");
        }
        let refused = [
            r#"{"type":"image_url","image_url":{"url":"http://169.254.169.254/latest/meta-data"}}"#,
            r#"{"type":"image_url","image_url":{"url":"https://cdn.example.com.evil.io/a.png"}}"#,
            r#"{"type":"image_url","image_url":{"url":"https://cdn.example.com@evil.io/a.png"}}"#,
            r#"{"type":"image_url","image_url":{"url":"file:///etc/passwd"}}"#,
            r#"{"type":"video_url","video_url":{"url":"https://evil.io/v.mp4"}}"#,
            r#"{"type":"input_image","image_url":"https://evil.io/a.png"}"#,
        ];
        for part in refused {
            assert!(
                matches!(
                    check_media_urls(&media(part), &hosts),
                    Err(PolicyError::MediaUrlNotAllowed { .. })
                ),
                "{part}"
            );
        }
    }
}
