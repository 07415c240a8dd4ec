//! Server-sent events for chat and text completions with `"stream": true`: one `data:` event
//! per token as the engine emits it, an optional usage chunk, then `data: [DONE]`. With
//! `continuous_usage_stats` every chunk also carries the running usage. Dropping the body
//! (client gone) drops the sequence handle, which takes the sequence out of the engine.

use super::generate::{Endpoint, Generation};
use super::protocol::{
    ChatChunk, ChatChunkChoice, CompletionChoice, CompletionChunk, Delta, FirstChunkFields,
    ResponseHeader, StreamUsage, Usage,
};
use super::whole::FINISH_REASON;
use crate::engine::SequenceEvent;
use crate::filler;
use axum::body::Body;
use axum::http::{HeaderValue, header};
use axum::response::Response;
use bytes::Bytes;
use serde::Serialize;
use std::convert::Infallible;

pub fn response(
    generation: Generation,
    header: ResponseHeader,
    endpoint: Endpoint,
    usage: StreamUsage,
) -> Response {
    let state = StreamState {
        generation,
        header,
        endpoint,
        usage,
        phase: Phase::Tokens,
        cached_tokens: 0,
        generated: 0,
    };
    event_stream(futures_util::stream::unfold(
        state,
        |mut state| async move {
            let frame = state.next_frame().await?;
            Some((frame, state))
        },
    ))
}

/// A `text/event-stream` response whose body is `frames`, each sent as soon as it is ready.
pub fn event_stream(frames: impl futures_util::Stream<Item = Bytes> + Send + 'static) -> Response {
    use futures_util::StreamExt;
    let mut response = Response::new(Body::from_stream(frames.map(Ok::<_, Infallible>)));
    let headers = response.headers_mut();
    // Starlette adds the charset to every `text/*` media type; vLLM sets no other header.
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream; charset=utf-8"),
    );
    response
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Tokens,
    Usage,
    Done,
    Ended,
}

struct StreamState {
    generation: Generation,
    header: ResponseHeader,
    endpoint: Endpoint,
    usage: StreamUsage,
    phase: Phase,
    cached_tokens: usize,
    generated: usize,
}

impl StreamState {
    async fn next_frame(&mut self) -> Option<Bytes> {
        match self.phase {
            Phase::Tokens => self.next_token_frame().await,
            Phase::Usage => {
                self.phase = Phase::Done;
                Some(self.usage_frame())
            }
            Phase::Done => {
                self.phase = Phase::Ended;
                Some(Bytes::from_static(b"data: [DONE]\n\n"))
            }
            Phase::Ended => None,
        }
    }

    async fn next_token_frame(&mut self) -> Option<Bytes> {
        loop {
            match self.generation.handle.next_event().await {
                Some(SequenceEvent::Scheduled { cached_tokens }) => {
                    self.cached_tokens = cached_tokens;
                    self.generation.cache_report.report(cached_tokens);
                }
                Some(SequenceEvent::Token { index, last }) => {
                    self.generated += 1;
                    if last {
                        self.phase = match self.usage {
                            StreamUsage::Off => Phase::Done,
                            StreamUsage::Final | StreamUsage::Continuous => Phase::Usage,
                        };
                    }
                    return Some(self.token_frame(index, last));
                }
                // The engine stopped: end the body without [DONE], like a dropped connection.
                None => {
                    self.phase = Phase::Ended;
                    return None;
                }
            }
        }
    }

    /// Usage for a chunk sent after `completion_tokens` tokens: only with
    /// `continuous_usage_stats`, and without the cache details, as vLLM does (chat's also names
    /// `completion_tokens_details`).
    fn running_usage(&self, completion_tokens: usize) -> Option<Usage> {
        let prompt = self.generation.prompt.len();
        (self.usage == StreamUsage::Continuous).then(|| match self.endpoint {
            Endpoint::Chat => Usage::running_chat(prompt, completion_tokens),
            Endpoint::Completion => Usage::bare(prompt, completion_tokens),
        })
    }

    fn token_frame(&self, index: u32, last: bool) -> Bytes {
        let header = &self.header;
        let text = filler::token_text(index);
        let finish_reason = last.then_some(FINISH_REASON);
        // The fingerprint rides on the last message: this chunk, unless a usage chunk follows.
        let system_fingerprint =
            (last && self.usage == StreamUsage::Off).then_some(&*self.generation.fingerprint);
        let usage = self.running_usage(self.generated);
        let mut frame = String::new();
        match self.endpoint {
            Endpoint::Chat => {
                // vLLM opens a chat stream with a role-only delta once the first output exists.
                if index == 0 {
                    push_event(
                        &mut frame,
                        &ChatChunk {
                            header,
                            choices: vec![ChatChunkChoice {
                                index: 0,
                                delta: Delta {
                                    role: Some("assistant"),
                                    content: "",
                                },
                                logprobs: None,
                                finish_reason: None,
                                stop_reason: None,
                                token_ids: None,
                            }],
                            usage: self.running_usage(0),
                            system_fingerprint: None,
                            first: Some(FirstChunkFields {
                                prompt_token_ids: None,
                                prompt_text: None,
                            }),
                        },
                    );
                }
                push_event(
                    &mut frame,
                    &ChatChunk {
                        header,
                        choices: vec![ChatChunkChoice {
                            index: 0,
                            delta: Delta {
                                role: None,
                                content: text,
                            },
                            logprobs: None,
                            finish_reason,
                            // Set (to null) on the last chunk only.
                            stop_reason: last.then_some(None),
                            token_ids: Some(None),
                        }],
                        usage,
                        system_fingerprint,
                        first: None,
                    },
                );
            }
            Endpoint::Completion => push_event(
                &mut frame,
                &CompletionChunk {
                    header,
                    choices: vec![CompletionChoice {
                        index: 0,
                        text,
                        logprobs: None,
                        finish_reason,
                        stop_reason: None,
                        prompt_token_ids: None,
                        token_ids: None,
                    }],
                    usage,
                    system_fingerprint,
                },
            ),
        }
        Bytes::from(frame)
    }

    fn usage_frame(&self) -> Bytes {
        let header = &self.header;
        let usage = Some(Usage::final_chunk(
            self.generation.prompt.len(),
            self.generated,
            self.generation
                .prompt_details(self.cached_tokens, self.endpoint, true),
        ));
        let system_fingerprint = Some(&*self.generation.fingerprint);
        let mut frame = String::new();
        match self.endpoint {
            Endpoint::Chat => push_event(
                &mut frame,
                &ChatChunk {
                    header,
                    choices: Vec::new(),
                    usage,
                    system_fingerprint,
                    first: None,
                },
            ),
            Endpoint::Completion => push_event(
                &mut frame,
                &CompletionChunk {
                    header,
                    choices: Vec::new(),
                    usage,
                    system_fingerprint,
                },
            ),
        }
        Bytes::from(frame)
    }
}

fn push_event(frame: &mut String, chunk: &impl Serialize) {
    // Serializing these plain structs cannot fail (string keys, no maps of non-strings).
    let json = serde_json::to_string(chunk).unwrap_or_default();
    frame.push_str("data: ");
    frame.push_str(&json);
    frame.push_str("\n\n");
}
