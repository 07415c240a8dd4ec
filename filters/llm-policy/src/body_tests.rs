use super::*;

fn chat(body: &str) -> Result<ParsedRequest<'_>, PolicyError> {
    parse(Endpoint::ChatCompletions, body)
}

fn err_param(e: PolicyError) -> (String, String) {
    use filter_common::IntoGatewayError;
    let g = e.into_gateway_error();
    (g.code.to_owned(), g.param.unwrap_or_default())
}

fn text(s: &str) -> Piece {
    Piece::Text(s.to_owned())
}

#[test]
fn chat_request() {
    let r = chat(
        r#"{"model":"m","messages":[{"role":"system","content":"be brief"},
            {"role":"user","name":"ann","content":[{"type":"text","text":"hi"},{"type":"image_url","image_url":{"url":"x"}}]}],
            "max_tokens":10,"max_completion_tokens":20,"n":2,"stream":true}"#,
    )
    .unwrap();
    assert_eq!(r.model, "m");
    assert_eq!(
        r.max_tokens,
        Some(RequestedMax {
            value: 20,
            param: "max_completion_tokens"
        })
    );
    assert_eq!(r.sequences_per_prompt, 2);
    assert!(r.stream);
    assert!(!r.batch_hint);
    assert!(r.prompt.chat);
    let seq = &r.prompt.sequences[0];
    assert_eq!(seq[0].role.as_deref(), Some("system"));
    assert_eq!(seq[0].pieces, vec![text("be brief")]);
    assert_eq!(seq[1].pieces[0], text("ann"));
    assert_eq!(seq[1].pieces[1], text("hi"));
    assert!(matches!(seq[1].pieces[2], Piece::Media(_)));
}

#[test]
fn tools_and_tool_calls_count_as_prompt() {
    let r = chat(
        r#"{"model":"m","tools":[{"type":"function","function":{"name":"f"}}],
            "messages":[{"role":"assistant","content":null,"tool_calls":[{"id":"1"}]}]}"#,
    )
    .unwrap();
    let seq = &r.prompt.sequences[0];
    assert_eq!(seq[0].role.as_deref(), Some("tools"));
    assert_eq!(seq[1].pieces, vec![text(r#"[{"id":"1"}]"#)]);
}

#[test]
fn completions_prompt_shapes() {
    let p = |prompt: &str| {
        parse(
            Endpoint::Completions,
            &format!(r#"{{"model":"m","prompt":{prompt}}}"#),
        )
        .map(|r| r.prompt.sequences)
    };
    assert_eq!(p(r#""hi""#).unwrap().len(), 1);
    assert_eq!(p(r#"["a","b","c"]"#).unwrap().len(), 3);
    let ids = p("[1,2,3]").unwrap();
    assert_eq!(ids.len(), 1);
    assert_eq!(ids[0][0].pieces, vec![Piece::TokenIds(vec![1, 2, 3])]);
    assert_eq!(p("[[1,2],[3]]").unwrap().len(), 2);
    assert_eq!(
        err_param(p("[]").unwrap_err()),
        ("invalid_value".into(), "prompt".into())
    );
    assert_eq!(
        err_param(p("[1,\"a\"]").unwrap_err()),
        ("invalid_type".into(), "prompt".into())
    );
    assert_eq!(
        err_param(p("[[1],[-1]]").unwrap_err()),
        ("invalid_type".into(), "prompt[1]".into())
    );
    assert_eq!(
        err_param(p("7").unwrap_err()),
        ("invalid_type".into(), "prompt".into())
    );
}

#[test]
fn best_of_counts_as_sequences() {
    let r = parse(
        Endpoint::Completions,
        r#"{"model":"m","prompt":"x","n":2,"best_of":5}"#,
    )
    .unwrap();
    assert_eq!(r.sequences_per_prompt, 5);
}

#[test]
fn embeddings_never_stream_and_have_no_output() {
    let r = parse(
        Endpoint::Embeddings,
        r#"{"model":"e","input":["a","b"],"stream":true,"max_tokens":5}"#,
    )
    .unwrap();
    assert!(!r.stream);
    assert_eq!(r.max_tokens, None);
    assert_eq!(r.prompt.sequences.len(), 2);
    assert!(!r.prompt.chat);
}

#[test]
fn responses_api() {
    let r = parse(
        Endpoint::Responses,
        r#"{"model":"m","instructions":"be kind","input":[{"role":"user","content":[{"type":"input_text","text":"hello"}]},
            {"type":"function_call_output","call_id":"c","output":"42"}],"max_output_tokens":50}"#,
    )
    .unwrap();
    assert_eq!(
        r.max_tokens,
        Some(RequestedMax {
            value: 50,
            param: "max_output_tokens"
        })
    );
    let seq = &r.prompt.sequences[0];
    assert_eq!(seq.len(), 3);
    assert_eq!(seq[1].pieces, vec![text("hello")]);
    assert_eq!(seq[2].role, None);
    let stored = parse(
        Endpoint::Responses,
        r#"{"model":"m","input":"x","previous_response_id":"resp_1"}"#,
    );
    assert_eq!(
        err_param(stored.unwrap_err()),
        (
            "unsupported_parameter".into(),
            "previous_response_id".into()
        )
    );
}

#[test]
fn batch_hints() {
    let hint = |extra: &str| {
        chat(&format!(
            r#"{{"model":"m","messages":[{{"role":"user","content":"x"}}]{extra}}}"#
        ))
        .unwrap()
        .batch_hint
    };
    assert!(hint(r#","metadata":{"workload":"batch"}"#));
    assert!(hint(r#","service_tier":"flex""#));
    assert!(!hint(r#","metadata":{"workload":"interactive"}"#));
    assert!(!hint(r#","metadata":"batch""#));
    assert!(!hint(""));
}

/// Every malformed body, with the exact code and param the client sees.
#[test]
fn bad_inputs() {
    let cases: &[(&str, &str, &str)] = &[
        (r#"{"messages":[]}"#, "missing_required_parameter", "model"),
        (r#"{"model":7,"messages":[]}"#, "invalid_type", "model"),
        (r#"{"model":"","messages":[]}"#, "invalid_value", "model"),
        (
            r#"{"model":null,"messages":[]}"#,
            "missing_required_parameter",
            "model",
        ),
        (
            r#"{"model":"a","model":"b","messages":[]}"#,
            "duplicate_key",
            "model",
        ),
        (r#"{"model":"m"}"#, "missing_required_parameter", "messages"),
        (r#"{"model":"m","messages":{}}"#, "invalid_type", "messages"),
        (
            r#"{"model":"m","messages":[]}"#,
            "invalid_value",
            "messages",
        ),
        (
            r#"{"model":"m","messages":["hi"]}"#,
            "invalid_type",
            "messages[0]",
        ),
        (
            r#"{"model":"m","messages":[{"content":"x"}]}"#,
            "missing_required_parameter",
            "messages[0].role",
        ),
        (
            r#"{"model":"m","messages":[{"role":"user","content":"x","content":"y"}]}"#,
            "duplicate_key",
            "messages[0].content",
        ),
        (
            r#"{"model":"m","messages":[{"role":"user","content":5}]}"#,
            "invalid_type",
            "messages[0].content",
        ),
        (
            r#"{"model":"m","messages":[{"role":"user","content":[{"type":"text"}]}]}"#,
            "missing_required_parameter",
            "messages[0].content[0].text",
        ),
        (
            r#"{"model":"m","messages":[{"role":"user","content":[{"text":"x"}]}]}"#,
            "missing_required_parameter",
            "messages[0].content[0].type",
        ),
        (
            r#"{"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":-1}"#,
            "invalid_value",
            "max_tokens",
        ),
        (
            r#"{"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":0}"#,
            "invalid_value",
            "max_tokens",
        ),
        (
            r#"{"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":1.5}"#,
            "invalid_type",
            "max_tokens",
        ),
        (
            r#"{"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":"10"}"#,
            "invalid_type",
            "max_tokens",
        ),
        (
            r#"{"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":1000001}"#,
            "invalid_value",
            "max_tokens",
        ),
        (
            r#"{"model":"m","messages":[{"role":"user","content":"x"}],"max_completion_tokens":-5}"#,
            "invalid_value",
            "max_completion_tokens",
        ),
        (
            r#"{"model":"m","messages":[{"role":"user","content":"x"}],"n":0}"#,
            "invalid_value",
            "n",
        ),
        (
            r#"{"model":"m","messages":[{"role":"user","content":"x"}],"n":129}"#,
            "invalid_value",
            "n",
        ),
        (
            r#"{"model":"m","messages":[{"role":"user","content":"x"}],"stream":"yes"}"#,
            "invalid_type",
            "stream",
        ),
        ("[]", "invalid_json", ""),
        ("{\"model\":", "invalid_json", ""),
    ];
    for (body, code, param) in cases {
        let err = chat(body).expect_err(body);
        assert_eq!(
            err_param(err),
            ((*code).to_owned(), (*param).to_owned()),
            "{body}"
        );
    }
}
