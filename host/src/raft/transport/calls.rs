//! Heartbeats and forwarded requests over one long-lived `Peer.Calls` stream to each peer.
//!
//! A unary gRPC call costs a new HTTP/2 stream and a task hop on both sides; on a linearizable
//! read through a follower two of them are on the critical path (the forwarded ReadIndex, and
//! the leader's heartbeat round that confirms it still leads). Over `Calls`, each request is a
//! message on a stream that stays open: it carries an id, its answer repeats the id, and
//! answers come back in any order, so a forwarded write that waits for a commit holds up no
//! heartbeat behind it.
//!
//! Outcomes keep the unary call's meaning, which the callers rely on to decide whether a
//! request may be sent again:
//! - [`CallError::NotSent`]: the request never left this member (no stream could be opened,
//!   or it had already ended);
//! - [`CallError::Lost`]: it went out but no answer came (the stream broke, or the deadline
//!   passed): it may or may not have run;
//! - [`CallError::Refused`]: the peer answered with the status the unary call would have
//!   (for a request sent as a unary call: any failure other than a connection never made).
//!
//! Requests larger than [`MAX_CALL_BYTES`] take the unary call instead, so one large write
//! never holds up the small messages queued behind it on the stream.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cairn_proto::cairn_raft::peer_client::PeerClient;
use cairn_proto::cairn_raft::{Call, CallKind, Envelope};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::{Code, Status, Streaming};

/// Largest request sent over the stream; larger ones take a unary call of their own.
const MAX_CALL_BYTES: usize = 64 << 10;
/// Requests queued for the stream before callers wait.
const QUEUED_CALLS: usize = 256;
/// How long opening the stream may take (the connection's own timeout bounds connecting).
const OPEN_TIMEOUT: Duration = Duration::from_secs(1);

/// Why a call has no answer.
#[derive(Debug)]
pub enum CallError {
    /// The request never left this member.
    NotSent(String),
    /// The request went out but its answer did not come back: it may or may not have run.
    Lost(String),
    /// The peer refused or failed it, with the status the unary call would have returned.
    Refused(Status),
}

/// Callers waiting for answers, by call id; `None` once the stream has ended.
type Waiting = Mutex<Option<HashMap<u64, oneshot::Sender<Call>>>>;

/// One open `Calls` stream.
struct Link {
    requests: mpsc::Sender<Call>,
    waiting: Arc<Waiting>,
    next_id: AtomicU64,
}

impl Link {
    fn is_open(&self) -> bool {
        lock(&self.waiting).is_some()
    }
}

fn lock(
    waiting: &Waiting,
) -> std::sync::MutexGuard<'_, Option<HashMap<u64, oneshot::Sender<Call>>>> {
    waiting.lock().expect("call waiters lock poisoned")
}

/// The stream to one peer, once opened; the async lock is held while it opens.
type Slot = Arc<tokio::sync::Mutex<Option<Arc<Link>>>>;

/// The open streams, one per peer URL. Opening is serialized per URL, so concurrent first
/// calls share one stream.
#[derive(Default)]
pub struct Links {
    by_url: Mutex<BTreeMap<String, Slot>>,
}

impl Links {
    async fn link(&self, url: &str, client: PeerClient<Channel>) -> Result<Arc<Link>, String> {
        let slot = self
            .by_url
            .lock()
            .expect("call links lock poisoned")
            .entry(url.to_string())
            .or_default()
            .clone();
        let mut slot = slot.lock().await;
        if let Some(link) = slot.as_ref().filter(|l| l.is_open()) {
            return Ok(link.clone());
        }
        let link = open(client).await?;
        *slot = Some(link.clone());
        Ok(link)
    }

    /// Sends one request of `kind` and waits for its answer, at most `deadline` if given.
    pub async fn call(
        &self,
        url: &str,
        client: PeerClient<Channel>,
        kind: CallKind,
        envelope: Envelope,
        deadline: Option<Duration>,
    ) -> Result<Envelope, CallError> {
        if envelope.payload.len() > MAX_CALL_BYTES {
            return unary(client, kind, envelope, deadline).await;
        }
        let link = self.link(url, client).await.map_err(CallError::NotSent)?;
        let id = link.next_id.fetch_add(1, Ordering::Relaxed);
        let (answer_tx, answer_rx) = oneshot::channel();
        match lock(&link.waiting).as_mut() {
            Some(waiting) => waiting.insert(id, answer_tx),
            None => return Err(CallError::NotSent(ENDED.into())),
        };
        // However this call ends (answered, timed out, or its caller gone), its slot goes.
        let _forget = Forget { link: &link, id };
        let request = Call {
            id,
            kind: kind.into(),
            envelope: Some(envelope),
            code: 0,
            message: String::new(),
        };
        if link.requests.send(request).await.is_err() {
            return Err(CallError::NotSent(ENDED.into()));
        }
        let answer = match deadline {
            Some(limit) => tokio::time::timeout(limit, answer_rx)
                .await
                .map_err(|_| CallError::Lost(format!("no reply within {limit:?}")))?,
            None => answer_rx.await,
        }
        .map_err(|_| CallError::Lost(ENDED.into()))?;
        if answer.code != Code::Ok as i32 {
            return Err(CallError::Refused(super::peer_error::answered(
                answer.code,
                answer.message,
            )));
        }
        answer
            .envelope
            .ok_or_else(|| CallError::Lost("an answer without a reply".into()))
    }
}

const ENDED: &str = "the call stream to the peer ended";

/// A request too large for the stream, as the unary call of its kind.
async fn unary(
    mut client: PeerClient<Channel>,
    kind: CallKind,
    envelope: Envelope,
    deadline: Option<Duration>,
) -> Result<Envelope, CallError> {
    let call = async {
        match kind {
            CallKind::AppendEntries => client.append_entries(envelope).await,
            CallKind::Forward => client.forward(envelope).await,
            CallKind::Unspecified => {
                Err(super::peer_error::PeerError::Malformed("a call of unknown kind").into())
            }
        }
    };
    let reply = match deadline {
        Some(limit) => tokio::time::timeout(limit, call)
            .await
            .map_err(|_| CallError::Lost(format!("no reply within {limit:?}")))?,
        None => call.await,
    };
    match reply {
        Ok(reply) => Ok(reply.into_inner()),
        Err(status) if never_connected(&status) => {
            Err(CallError::NotSent(status.message().to_string()))
        }
        Err(status) => Err(CallError::Refused(status)),
    }
}

/// True if `status` says the connection to the peer was never made, so the request was not
/// sent (tonic reports connect failures from the channel's readiness check).
fn never_connected(status: &Status) -> bool {
    let message = status.message();
    message.starts_with("Service was not ready")
        || message.contains("tcp connect error")
        || message.contains("error trying to connect")
}

/// Removes a call's waiter when the call is over.
struct Forget<'a> {
    link: &'a Link,
    id: u64,
}

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        if let Some(waiting) = lock(&self.link.waiting).as_mut() {
            waiting.remove(&self.id);
        }
    }
}

/// Opens a `Calls` stream and starts the task that hands its answers to their callers.
async fn open(mut client: PeerClient<Channel>) -> Result<Arc<Link>, String> {
    let (requests, outbound) = mpsc::channel(QUEUED_CALLS);
    let answers =
        match tokio::time::timeout(OPEN_TIMEOUT, client.calls(ReceiverStream::new(outbound))).await
        {
            Ok(Ok(response)) => response.into_inner(),
            Ok(Err(status)) => return Err(status.message().to_string()),
            Err(_) => {
                return Err(format!(
                    "the call stream did not open within {OPEN_TIMEOUT:?}"
                ));
            }
        };
    let waiting: Arc<Waiting> = Arc::new(Mutex::new(Some(HashMap::new())));
    tokio::spawn(route(answers, waiting.clone()));
    Ok(Arc::new(Link {
        requests,
        waiting,
        next_id: AtomicU64::new(1),
    }))
}

/// Hands each answer to its caller until the stream ends; then every caller still waiting
/// learns its answer is lost (their senders are dropped).
async fn route(mut answers: Streaming<Call>, waiting: Arc<Waiting>) {
    let why = loop {
        match answers.message().await {
            Ok(Some(answer)) => {
                let caller = lock(&waiting).as_mut().and_then(|w| w.remove(&answer.id));
                if let Some(caller) = caller {
                    let _ = caller.send(answer);
                }
            }
            Ok(None) => break "closed by the peer".to_string(),
            Err(status) => break status.message().to_string(),
        }
    };
    lock(&waiting).take();
    tracing::debug!(%why, "peer call stream ended");
}
