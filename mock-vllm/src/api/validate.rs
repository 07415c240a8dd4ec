//! The engine's logprob limit (`SamplingParams._validate_logprobs`, run when the request reaches
//! the engine). The request-model checks live in [`super::requests`], the length rules in
//! [`super::generate`].

use super::ApiError;
use crate::tokenizer::VOCAB_SIZE;
use serde_json::Value;

/// vLLM's default `--max-logprobs`.
pub const MAX_LOGPROBS: i64 = 20;

/// No more than `--max-logprobs` alternatives per position, where -1 asks for the whole
/// vocabulary. Returns how many alternatives to produce.
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
        return Err(ApiError::validation(
            format!(
                "Requested prompt logprobs of {wanted}, which is greater than max allowed: \
                 {MAX_LOGPROBS}"
            ),
            Some("prompt_logprobs"),
            Some(&Value::from(wanted)),
        ));
    }
    // Request checks leave 0..=MAX_LOGPROBS here.
    Ok(u32::try_from(wanted).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompt_logprobs_limit_is_the_engines() {
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
