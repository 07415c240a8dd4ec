//! `AdmitStream`: one Envoy worker's Admit calls as messages on one
//! long-lived stream. An admission decided at once is answered at once;
//! one that waits (in a pool's fair queue, on a remote store) goes on as a
//! task of its own and is answered as soon as it is decided,
//! in any order, carrying its id back. A cancel aborts that admission's
//! task; the stream's reset aborts them all. Aborting drops the decision
//! future exactly where tonic drops a cancelled Admit call's, so a queued
//! admission leaves its queue and refunds the same way. Usage reports ride
//! the stream too, settled as `CompleteBatch` settles them but unanswered
//! and never aborted.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use admission_proto::v1::admit_stream_request::Kind;
use admission_proto::v1::{AdmitStreamRequest, AdmitStreamResponse};
use tokio::sync::mpsc;
use tokio::task::{AbortHandle, JoinSet};
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Status, Streaming};

use super::admission::{AdmissionService, settle_all};
use super::deadline_in;

/// Admissions one stream may have waiting at once. An Envoy worker holds
/// one per request it is admitting, far fewer than this; past it an
/// admission is refused (RESOURCE_EXHAUSTED) rather than held in memory.
pub const MAX_WAITING: usize = 65_536;

/// Answers decided but not yet taken by the stream's writer: past this the
/// stream stops reading new admissions until the caller reads.
const ANSWERS_BUFFERED: usize = 1024;

pub type AnswerStream = Pin<Box<dyn Stream<Item = Result<AdmitStreamResponse, Status>> + Send>>;

/// Serves one stream: the answers, as a stream the caller reads.
pub fn serve(service: AdmissionService, inbound: Streaming<AdmitStreamRequest>) -> AnswerStream {
    let (answers, rx) = mpsc::channel(ANSWERS_BUFFERED);
    tokio::spawn(drive(service, inbound, answers));
    Box::pin(ReceiverStream::new(rx))
}

/// An admission's answer on the stream.
type Answer = (u64, AdmitStreamResponse);

async fn drive(
    service: AdmissionService,
    mut inbound: Streaming<AdmitStreamRequest>,
    answers: mpsc::Sender<Result<AdmitStreamResponse, Status>>,
) {
    let _open = OpenStream::count(&service);
    let mut deciding: JoinSet<Answer> = JoinSet::new();
    let mut waiting: HashMap<u64, AbortHandle> = HashMap::new();
    // The caller's half-close: it asks nothing more but still reads the
    // answers of what it asked.
    let mut asked_all = false;
    loop {
        if asked_all && deciding.is_empty() {
            break;
        }
        let answer = tokio::select! {
            message = inbound.message(), if !asked_all => match message {
                Ok(Some(message)) => on_message(&service, message, &mut deciding, &mut waiting),
                Ok(None) => {
                    asked_all = true;
                    None
                }
                // Reset or broken: nobody is left to answer.
                Err(status) => {
                    tracing::debug!(%status, "admit stream ended");
                    break;
                }
            },
            Some(joined) = deciding.join_next() => match joined {
                Ok((id, answer)) => {
                    waiting.remove(&id);
                    Some(answer)
                }
                // Aborted by its cancel: nothing to answer.
                Err(_) => None,
            },
            () = answers.closed() => break,
        };
        if let Some(answer) = answer
            && answers.send(Ok(answer)).await.is_err()
        {
            break;
        }
    }
    // Dropping `deciding` aborts every admission still waiting, as the
    // caller's cancel of each would.
}

/// `ratelimit_admission_streams` while the stream is served.
struct OpenStream(prometheus_client::metrics::gauge::Gauge);

impl OpenStream {
    fn count(service: &AdmissionService) -> Self {
        let gauge = service.limiter().metrics().admission_streams.clone();
        gauge.inc();
        Self(gauge)
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Starts or cancels one admission; an answer to send at once when the
/// message is refused.
fn on_message(
    service: &AdmissionService,
    message: AdmitStreamRequest,
    deciding: &mut JoinSet<Answer>,
    waiting: &mut HashMap<u64, AbortHandle>,
) -> Option<AdmitStreamResponse> {
    let id = message.id;
    match message.kind {
        Some(Kind::Admit(request)) => {
            if waiting.contains_key(&id) {
                return Some(refusal(
                    id,
                    Status::invalid_argument("admission id is already waiting on this stream"),
                ));
            }
            if waiting.len() >= MAX_WAITING {
                return Some(refusal(
                    id,
                    Status::resource_exhausted(format!(
                        "more than {MAX_WAITING} admissions waiting on one stream"
                    )),
                ));
            }
            let deadline = (message.timeout_ms > 0)
                .then(|| deadline_in(Duration::from_millis(u64::from(message.timeout_ms))));
            service.limiter().metrics().admit_stream_messages.inc();
            let service = service.clone();
            let mut decision = Box::pin(async move {
                let answer = match service.decide(request, deadline).await {
                    Ok(response) => AdmitStreamResponse {
                        id,
                        response: Some(response),
                        ..AdmitStreamResponse::default()
                    },
                    Err(status) => refusal(id, status),
                };
                (id, answer)
            });
            // Most admissions are decided without waiting (no queue, the
            // store in memory): answered here, they skip a task, its
            // wake-up on another thread and the join back, which cost the
            // service more than the decision itself. One that has to wait
            // goes on as its own task, where it is polled again at once
            // and from then on woken as any task is (a future may be
            // polled by another waker than the one it saw last).
            let mut now = Context::from_waker(Waker::noop());
            if let Poll::Ready((_, answer)) = decision.as_mut().poll(&mut now) {
                return Some(answer);
            }
            let task = deciding.spawn(decision);
            waiting.insert(id, task);
            None
        }
        Some(Kind::Cancel(_)) => {
            // Already answered: the caller settles what it was given.
            if let Some(task) = waiting.remove(&id) {
                task.abort();
            }
            None
        }
        Some(Kind::Reports(batch)) => {
            // Detached: the stream's end must not abort a settlement, and
            // nothing is answered (the caller does not wait for reports).
            let limiter = service.limiter().clone();
            tokio::spawn(async move {
                if let Err(status) = settle_all(&limiter, batch.reports).await {
                    tracing::warn!(%status, "reports on an admission stream not settled");
                }
            });
            None
        }
        None => Some(refusal(
            id,
            Status::invalid_argument("an admission message carries admit, cancel or reports"),
        )),
    }
}

/// The status an Admit call would have ended with, as a message.
fn refusal(id: u64, status: Status) -> AdmitStreamResponse {
    AdmitStreamResponse {
        id,
        status_code: status.code() as u32,
        status_message: status.message().to_owned(),
        response: None,
    }
}
