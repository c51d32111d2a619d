//! The `Coordinator` gRPC service: an adapter. It waits for `hello`, checks
//! each worker message and turns it into a [`WorkerMsg`], and hands it to the
//! coordinator actor through the bounded command channel; the response
//! stream is the session's bounded channel, fed by the actor.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::classify::Kind;
use common::pb::{self, coordinator_server::Coordinator, session_request::Body};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};
use tracing::{debug, instrument, warn};

use crate::coordinator::{Batch, Hello, Invalid, Outcome, Progress, Record, SessionId, WorkerMsg};
use crate::error::Error;
use crate::messages::{Accepted, Command};

/// The Coordinator service.
#[derive(Clone)]
pub struct CoordinatorService {
    commands: mpsc::Sender<Command>,
    /// How long a new stream may take to say hello.
    hello_timeout: Duration,
    max_batch_records: u32,
    shutdown: CancellationToken,
}

impl CoordinatorService {
    pub fn new(
        commands: mpsc::Sender<Command>,
        hello_timeout: Duration,
        max_batch_records: u32,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            commands,
            hello_timeout,
            max_batch_records,
            shutdown,
        }
    }

    /// Reads the first message, which must be `hello`, and registers the
    /// session with the actor.
    #[instrument(name = "handshake", skip_all, fields(peer = %peer))]
    async fn handshake(
        &self,
        stream: &mut Streaming<pb::SessionRequest>,
        peer: String,
        cancel: CancellationToken,
        in_flight: Arc<AtomicUsize>,
    ) -> Result<Accepted, Status> {
        let first = tokio::select! {
            _ = self.shutdown.cancelled() => return Err(Error::ShuttingDown.into()),
            first = tokio::time::timeout(self.hello_timeout, stream.message()) => first,
        };
        let first = match first {
            Err(_) => return Err(Error::HelloTimeout(self.hello_timeout).into()),
            Ok(Err(status)) => return Err(status),
            Ok(Ok(None)) => return Err(Error::NoHello.into()),
            Ok(Ok(Some(first))) => first,
        };
        let Some(Body::Hello(hello)) = first.body else {
            return Err(Error::HelloExpected.into());
        };
        let (reply, accepted) = oneshot::channel();
        let command = Command::Hello {
            hello: Hello {
                worker_id: first.worker_id,
                peer,
                version: hello.version,
                host: hello.host,
            },
            cancel,
            in_flight,
            reply,
        };
        self.commands
            .send(command)
            .await
            .map_err(|_| Error::ShuttingDown)?;
        Ok(accepted.await.map_err(|_| Error::ShuttingDown)??)
    }
}

#[tonic::async_trait]
impl Coordinator for CoordinatorService {
    type SessionStream = ReceiverStream<Result<pb::SessionResponse, Status>>;

    async fn session(
        &self,
        request: Request<Streaming<pb::SessionRequest>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        let peer = request
            .remote_addr()
            .map_or_else(|| "unknown".to_owned(), |a| a.to_string());
        let mut stream = request.into_inner();
        let cancel = self.shutdown.child_token();
        let in_flight = Arc::new(AtomicUsize::new(0));
        let Accepted {
            session,
            worker,
            responses,
        } = self
            .handshake(&mut stream, peer, cancel.clone(), in_flight.clone())
            .await?;
        let reader = read_session(
            Reader {
                session,
                worker,
                commands: self.commands.clone(),
                max_batch_records: self.max_batch_records,
                cancel,
                in_flight,
            },
            stream,
        );
        tokio::spawn(reader);
        Ok(Response::new(ReceiverStream::new(responses)))
    }
}

/// What a session's reader needs.
struct Reader {
    session: SessionId,
    worker: Arc<str>,
    commands: mpsc::Sender<Command>,
    max_batch_records: u32,
    /// Cancelled when the actor ends the session or the master stops.
    cancel: CancellationToken,
    in_flight: Arc<AtomicUsize>,
}

/// Reads a live session until it ends, the actor ends it, or the master
/// stops. Waiting on the bounded command channel is the backpressure.
#[instrument(name = "session", skip_all, fields(worker = %r.worker, session = r.session))]
async fn read_session(r: Reader, mut stream: Streaming<pb::SessionRequest>) {
    let session = r.session;
    loop {
        let next = tokio::select! {
            _ = r.cancel.cancelled() => return,
            next = stream.message() => next,
        };
        let command = match next {
            Ok(Some(req)) => match check(&r.worker, req, r.max_batch_records) {
                Ok(msg) => {
                    r.in_flight.fetch_add(1, Ordering::AcqRel);
                    Command::Message { session, msg }
                }
                Err(error) => {
                    warn!(%error, "protocol violation");
                    Command::Failed { session, error }
                }
            },
            Ok(None) => Command::Closed {
                session,
                reason: "stream closed by the worker".into(),
            },
            // Over --max-message-bytes: said to the worker, not just dropped.
            Err(status) if status.code() == tonic::Code::OutOfRange => {
                let error = Error::TooLarge(status.message().to_owned());
                warn!(%error, "message refused");
                Command::Failed { session, error }
            }
            Err(status) => Command::Closed {
                session,
                reason: format!("stream broke: {}", status.message()),
            },
        };
        let last = !matches!(command, Command::Message { .. });
        tokio::select! {
            _ = r.cancel.cancelled() => return,
            sent = r.commands.send(command) => if sent.is_err() { return },
        }
        if last {
            debug!("session reader done");
            return;
        }
    }
}

/// Checks one message of a live session and converts it.
pub fn check(
    worker: &str,
    req: pb::SessionRequest,
    max_batch_records: u32,
) -> Result<WorkerMsg, Error> {
    // An empty id is accepted: the session already says who it is.
    if !req.worker_id.is_empty() && req.worker_id != worker {
        return Err(Error::WrongWorker {
            got: req.worker_id,
            session: worker.to_owned(),
        });
    }
    let invalid = |m: String| Err(Error::InvalidArgument(m));
    match req.body {
        None => invalid("message without a body".into()),
        Some(Body::Hello(_)) => Err(Error::DuplicateHello),
        Some(Body::Heartbeat(h)) => Ok(WorkerMsg::Heartbeat(progress(h.progress)?)),
        Some(Body::Leave(l)) => Ok(WorkerMsg::Leave(progress(l.progress)?)),
        Some(Body::RevokeAck(a)) => {
            partition(a.partition)?;
            Ok(WorkerMsg::RevokeAck(Progress {
                partition: a.partition,
                generation: a.generation,
                next_offset: a.next_offset,
            }))
        }
        Some(Body::Results(b)) => {
            partition(b.partition)?;
            if b.results.len() > max_batch_records as usize {
                return invalid(format!(
                    "batch of {} results for partition {}; at most {max_batch_records} (max_batch_records in welcome)",
                    b.results.len(),
                    b.partition
                ));
            }
            let mut records = Vec::with_capacity(b.results.len());
            let mut previous = -1;
            for r in b.results {
                if r.offset <= previous {
                    return invalid(format!(
                        "results of partition {} out of offset order ({} after {previous})",
                        b.partition, r.offset
                    ));
                }
                previous = r.offset;
                records.push(Record {
                    offset: r.offset,
                    timestamp_ms: r.timestamp_ms,
                    outcome: outcome(b.partition, r)?,
                });
            }
            Ok(WorkerMsg::Results(Batch {
                partition: b.partition,
                generation: b.generation,
                records,
            }))
        }
    }
}

fn partition(p: i32) -> Result<(), Error> {
    if p < 0 {
        return Err(Error::InvalidArgument(format!("negative partition {p}")));
    }
    Ok(())
}

fn progress(list: Vec<pb::PartitionProgress>) -> Result<Vec<Progress>, Error> {
    list.into_iter()
        .map(|p| {
            partition(p.partition)?;
            Ok(Progress {
                partition: p.partition,
                generation: p.generation,
                next_offset: p.next_offset,
            })
        })
        .collect()
}

fn outcome(partition: i32, r: pb::RecordResult) -> Result<Outcome, Error> {
    let (offset, outcome) = (r.offset, r.outcome);
    let kind = match pb::Outcome::try_from(outcome) {
        Ok(pb::Outcome::NoPurchase) => return Ok(Outcome::NoPurchase),
        Ok(pb::Outcome::Invalid) => {
            // The dead letter says why; a reason without a code would not.
            if r.invalid_code.is_empty() {
                return Err(Error::InvalidArgument(format!(
                    "partition {partition} offset {offset}: an INVALID result without invalid_code"
                )));
            }
            return Ok(Outcome::Invalid(Box::new(Invalid {
                code: r.invalid_code,
                detail: r.invalid_detail,
                key: r.key,
                value: r.value,
                headers: r.headers.into_iter().map(|h| (h.key, h.value)).collect(),
            })));
        }
        Ok(pb::Outcome::Short) => Kind::Short,
        Ok(pb::Outcome::Long) => Kind::Long,
        Ok(pb::Outcome::Unspecified) | Err(_) => {
            return Err(Error::InvalidArgument(format!(
                "partition {partition} offset {offset}: outcome {outcome} is not one of \
                 NO_PURCHASE, SHORT, LONG, INVALID"
            )))
        }
    };
    match r.purchase {
        Some(p) => Ok(Outcome::Purchase(kind, p)),
        None => Err(Error::InvalidArgument(format!(
            "partition {partition} offset {offset}: a {kind} purchase without its purchase summary"
        ))),
    }
}
