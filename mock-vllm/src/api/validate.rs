//! Request checks vLLM makes before it generates, in its words and at its layer: the ones its
//! pydantic models make answer as body validation errors, the one its engine makes as a
//! `VLLMValidationError`.

use super::ApiError;
use super::error::Rejected;
use super::protocol::StreamOptions;
use crate::tokenizer::VOCAB_SIZE;

/// vLLM's default `--max-logprobs`.
pub const MAX_LOGPROBS: i64 = 20;

/// `stream_options` only make sense on a stream; vLLM refuses them otherwise, though an empty
/// object passes (its check is Python truthiness).
pub fn stream_options(stream: bool, options: Option<&StreamOptions>) -> Result<(), ApiError> {
    match options {
        Some(options) if !stream && !options.is_empty() => {
            Err(ApiError::BodyValidation(Rejected {
                message: "Stream options can only be defined when `stream=True`.".into(),
                param: "stream_options",
                value: None,
            }))
        }
        _ => Ok(()),
    }
}

/// The request-model check of `prompt_logprobs`: streams carry none, and -1 (the whole
/// vocabulary) is the only negative allowed.
pub fn prompt_logprobs(stream: bool, requested: Option<i64>) -> Result<(), ApiError> {
    match requested {
        Some(n) if stream && (n > 0 || n == -1) => Err(ApiError::BodyValidation(Rejected {
            message: "`prompt_logprobs` are not available when `stream=True`.".into(),
            param: "prompt_logprobs",
            value: None,
        })),
        Some(n) if n < -1 => Err(ApiError::BodyValidation(Rejected {
            message: "`prompt_logprobs` must be a positive value or -1.".into(),
            param: "prompt_logprobs",
            value: Some(n.to_string()),
        })),
        _ => Ok(()),
    }
}

/// The engine's check: no more than `--max-logprobs` alternatives per position, where -1 asks
/// for the whole vocabulary. Returns how many alternatives to produce.
pub fn prompt_logprobs_limit(requested: Option<i64>) -> Result<Option<u32>, ApiError> {
    let Some(requested) = requested else {
        return Ok(None);
    };
    let wanted = if requested == -1 {
        VOCAB_SIZE as i64
    } else {
        requested
    };
    if wanted > MAX_LOGPROBS {
        return Err(ApiError::EngineValidation(Rejected {
            message: format!(
                "Requested prompt logprobs of {wanted}, which is greater than max allowed: \
                 {MAX_LOGPROBS}"
            ),
            param: "prompt_logprobs",
            value: Some(wanted.to_string()),
        }));
    }
    // Earlier checks leave 0..=MAX_LOGPROBS here.
    Ok(u32::try_from(wanted).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(json: &str) -> StreamOptions {
        serde_json::from_str(json).expect("stream options")
    }

    #[test]
    fn stream_options_need_a_stream_unless_empty() {
        assert!(stream_options(false, None).is_ok());
        assert!(stream_options(false, Some(&options("{}"))).is_ok());
        assert!(stream_options(true, Some(&options(r#"{"include_usage":true}"#))).is_ok());
        for json in [
            r#"{"include_usage":false}"#,
            r#"{"continuous_usage_stats":null}"#,
            r#"{"unknown":1}"#,
        ] {
            let error = stream_options(false, Some(&options(json))).expect_err(json);
            assert_eq!(
                error.to_string(),
                "1 validation error:\n  {'type': 'value_error', 'loc': ('body',), 'msg': \
                 'Value error, Stream options can only be defined when `stream=True`. \
                 (parameter=stream_options)'}"
            );
        }
    }

    #[test]
    fn usage_follows_vllms_defaults() {
        use crate::api::protocol::StreamUsage;
        let usage = |json: &str| StreamUsage::of(Some(&options(json)));
        assert_eq!(StreamUsage::of(None), StreamUsage::Off);
        assert_eq!(
            usage("{}"),
            StreamUsage::Final,
            "include_usage defaults to true"
        );
        assert_eq!(usage(r#"{"include_usage":null}"#), StreamUsage::Off);
        assert_eq!(
            usage(r#"{"continuous_usage_stats":true}"#),
            StreamUsage::Continuous
        );
        assert_eq!(
            usage(r#"{"include_usage":false,"continuous_usage_stats":true}"#),
            StreamUsage::Off
        );
    }

    #[test]
    fn prompt_logprobs_bounds() {
        assert!(prompt_logprobs(true, Some(0)).is_ok());
        assert!(prompt_logprobs(true, Some(1)).is_err());
        assert!(prompt_logprobs(true, Some(-1)).is_err());
        assert!(prompt_logprobs(false, Some(-1)).is_ok());
        assert!(prompt_logprobs(false, Some(-2)).is_err());
        assert_eq!(prompt_logprobs_limit(None).ok(), Some(None));
        assert_eq!(prompt_logprobs_limit(Some(20)).ok(), Some(Some(20)));
        assert_eq!(
            prompt_logprobs_limit(Some(21))
                .expect_err("over the limit")
                .to_string(),
            "Requested prompt logprobs of 21, which is greater than max allowed: 20 \
             (parameter=prompt_logprobs, value=21)"
        );
        assert!(
            prompt_logprobs_limit(Some(-1)).is_err(),
            "the vocabulary is over 20"
        );
    }
}
