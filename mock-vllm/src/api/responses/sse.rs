//! The Responses API stream: named SSE events (`event: <type>` then `data: <json>`), numbered
//! by `sequence_number` from 0, and no `[DONE]` line, as vLLM writes them.
//!
//! `response.created` and `response.in_progress` go out at once; the first token opens the
//! output message and its text part; every token is a `response.output_text.delta`; the last
//! one closes the part and the message and ends with `response.completed`, whose object carries
//! the usage. Dropping the body (client gone) drops the sequence handle, which takes the
//! sequence out of the engine.

use super::ResponseMeta;
use super::protocol::{
    ContentPartEvent, OutputItemEvent, OutputText, ResponseEvent, StreamEvent, TextDeltaEvent,
    TextDoneEvent,
};
use crate::api::generate::{Finished, Generation};
use crate::api::sse::event_stream;
use crate::engine::SequenceEvent;
use crate::filler;
use axum::response::Response;
use bytes::Bytes;

pub fn response(generation: Generation, meta: ResponseMeta) -> Response {
    let stream = ResponseStream {
        generation,
        meta,
        phase: Phase::Opening,
        sequence: 0,
        cached_tokens: 0,
        generated: 0,
    };
    event_stream(futures_util::stream::unfold(
        stream,
        |mut stream| async move {
            let frame = stream.next_frame().await?;
            Some((frame, stream))
        },
    ))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Opening,
    Tokens,
    Ended,
}

struct ResponseStream {
    generation: Generation,
    meta: ResponseMeta,
    phase: Phase,
    /// The next event's `sequence_number`.
    sequence: u64,
    cached_tokens: usize,
    generated: u32,
}

/// The mock's response has one output item with one content part.
const OUTPUT_INDEX: u32 = 0;
const CONTENT_INDEX: u32 = 0;

impl ResponseStream {
    async fn next_frame(&mut self) -> Option<Bytes> {
        match self.phase {
            Phase::Opening => {
                self.phase = Phase::Tokens;
                Some(self.opening_frame())
            }
            Phase::Tokens => self.next_token_frame().await,
            Phase::Ended => None,
        }
    }

    fn opening_frame(&mut self) -> Bytes {
        let mut frame = String::new();
        for kind in ["response.created", "response.in_progress"] {
            let sequence_number = self.next_sequence();
            push(
                &mut frame,
                &ResponseEvent {
                    response: self.meta.in_progress(),
                    sequence_number,
                    kind,
                },
            );
        }
        Bytes::from(frame)
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
                        self.phase = Phase::Ended;
                    }
                    return Some(self.token_frame(index, last));
                }
                // The engine stopped: end the body without `response.completed`, like a
                // dropped connection.
                None => {
                    self.phase = Phase::Ended;
                    return None;
                }
            }
        }
    }

    fn token_frame(&mut self, index: u32, last: bool) -> Bytes {
        let mut frame = String::new();
        if index == 0 {
            self.push_opening_of_message(&mut frame);
        }
        let sequence_number = self.next_sequence();
        push(
            &mut frame,
            &TextDeltaEvent {
                content_index: CONTENT_INDEX,
                delta: filler::token_text(index),
                item_id: &self.meta.message_id,
                logprobs: [],
                output_index: OUTPUT_INDEX,
                sequence_number,
                kind: "response.output_text.delta",
            },
        );
        if last {
            self.push_closing(&mut frame);
        }
        Bytes::from(frame)
    }

    fn push_opening_of_message(&mut self, frame: &mut String) {
        let sequence_number = self.next_sequence();
        push(
            frame,
            &OutputItemEvent {
                item: self.meta.message("in_progress", Vec::new()),
                output_index: OUTPUT_INDEX,
                sequence_number,
                kind: "response.output_item.added",
            },
        );
        let sequence_number = self.next_sequence();
        push(
            frame,
            &ContentPartEvent {
                content_index: CONTENT_INDEX,
                item_id: &self.meta.message_id,
                output_index: OUTPUT_INDEX,
                part: OutputText::new("", Some([])),
                sequence_number,
                kind: "response.content_part.added",
            },
        );
    }

    fn push_closing(&mut self, frame: &mut String) {
        let text = filler::completion_text(self.generated);
        let first = self.sequence;
        self.sequence += 4;
        let meta = &self.meta;
        push(
            frame,
            &TextDoneEvent {
                content_index: CONTENT_INDEX,
                item_id: &meta.message_id,
                logprobs: [],
                output_index: OUTPUT_INDEX,
                sequence_number: first,
                text: &text,
                kind: "response.output_text.done",
            },
        );
        push(
            frame,
            &ContentPartEvent {
                content_index: CONTENT_INDEX,
                item_id: &meta.message_id,
                output_index: OUTPUT_INDEX,
                part: OutputText::new(&text, None),
                sequence_number: first + 1,
                kind: "response.content_part.done",
            },
        );
        push(
            frame,
            &OutputItemEvent {
                item: meta.message("completed", vec![OutputText::new(&text, None)]),
                output_index: OUTPUT_INDEX,
                sequence_number: first + 2,
                kind: "response.output_item.done",
            },
        );
        let finished = Finished {
            generated: self.generated,
            cached_tokens: self.cached_tokens,
        };
        push(
            frame,
            &ResponseEvent {
                response: meta.finished(&text, finished),
                sequence_number: first + 3,
                kind: "response.completed",
            },
        );
    }

    fn next_sequence(&mut self) -> u64 {
        let sequence = self.sequence;
        self.sequence += 1;
        sequence
    }
}

fn push(frame: &mut String, event: &impl StreamEvent) {
    // Serializing these plain structs cannot fail (string keys, no maps of non-strings).
    let json = serde_json::to_string(event).unwrap_or_default();
    frame.push_str("event: ");
    frame.push_str(event.kind());
    frame.push_str("\ndata: ");
    frame.push_str(&json);
    frame.push_str("\n\n");
}
