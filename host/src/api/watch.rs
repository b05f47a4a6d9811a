//! etcd's Watch service: one bidirectional stream carries many watches.
//!
//! Each stream runs one task. It learns of commits from the member's watch hub (`crate::watch`)
//! and pulls, for each watcher, the events after the last revision it was sent: from the hub's
//! in-memory ring when the watcher is caught up, from history when it is behind. Delivery is
//! therefore ordered, gap-free and whole per revision by construction, a watcher that falls
//! behind simply reads more history, and a slow client only ever delays its own stream.
//!
//! Memory is bounded in bytes, not in responses: a response carries at most about
//! [`RESPONSE_BYTES`] of events (whole revisions; more only when one revision is larger), and a
//! stream holds at most [`STREAM_BUFFER_BYTES`] of responses its client has not taken. A
//! client that stops reading therefore stops its stream's task at that bound; its watchers
//! stay where they are, and when it reads again they catch up from history (etcd's unsynced
//! watchers). A stalled reader costs a cursor and a bounded buffer, never the events written
//! meanwhile.

use std::collections::BTreeMap;
use std::sync::Arc;

use cairn_proto::etcdserverpb as pb;
use cairn_proto::etcdserverpb::watch_create_request::FilterType;
use cairn_proto::etcdserverpb::watch_request::RequestUnion;
use cairn_proto::etcdserverpb::watch_server::Watch;
use cairn_proto::mvccpb;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use super::{Context, convert};
use crate::metrics::{GaugeGuard, METRICS};
use crate::mvcc::history::passes;
use crate::mvcc::{Event, EventKind, KeyRange, Mvcc, Revision, Revisions};
use crate::watch::{PrevKvInterest, WatcherInterest};

/// Most revisions in one response while catching up (etcd's watchBatchMaxRevs).
const MAX_REVS_PER_RESPONSE: i64 = 1000;
/// Bytes of keys and values read into one response (it ends at a whole revision).
const RESPONSE_BYTES: usize = 256 << 10;
/// Bytes of responses a stream holds before it waits for its client to take them.
const STREAM_BUFFER_BYTES: usize = 512 << 10;
/// History reads (catching-up watchers) that run at once on a member, whatever the number of
/// streams: each holds a snapshot and a response's worth of events while it runs, so many
/// readers catching up at once cost memory and blocking threads in proportion to this, not
/// to their number.
static HISTORY_READS: Semaphore = Semaphore::const_new(4);
/// Responses a stream holds (a second bound, for many small responses).
const SEND_BUFFER: usize = 128;
/// How long a progress request waits for the hub to reach the store's revision.
const PROGRESS_CATCH_UP: std::time::Duration = std::time::Duration::from_secs(5);
/// etcd's message for a watch over an empty key range.
const EMPTY_RANGE: &str = "mvcc: watcher range is empty";
/// etcd's message for a reused client-chosen watch id.
const DUPLICATE_ID: &str = "mvcc: duplicate watch ID provided on the WatchStream";

pub struct WatchService {
    ctx: Context,
}

impl WatchService {
    pub fn new(ctx: Context) -> Self {
        WatchService { ctx }
    }
}

#[tonic::async_trait]
impl Watch for WatchService {
    type WatchStream = WatchResponses;

    async fn watch(
        &self,
        request: Request<Streaming<pb::WatchRequest>>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let require_leader = super::requires_leader(&request);
        open(&self.ctx, require_leader, request.into_inner()).map(Response::new)
    }
}

/// A response on its way to the client, holding its share of the stream's byte budget until
/// the transport takes it.
struct Outgoing {
    response: Result<pb::WatchResponse, Status>,
    _budget: Option<OwnedSemaphorePermit>,
}

/// The responses of one watch stream, as the transport takes them.
pub struct WatchResponses(ReceiverStream<Outgoing>);

impl Stream for WatchResponses {
    type Item = Result<pb::WatchResponse, Status>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        // The budget returns to the stream as the response leaves it.
        std::pin::Pin::new(&mut self.0)
            .poll_next(cx)
            .map(|o| o.map(|o| o.response))
    }
}

/// Opens a watch stream fed by `inbound` (gRPC's request stream, or the HTTP gateway's).
/// `require_leader` is clientv3's `WithRequireLeader`.
pub fn open<S>(ctx: &Context, require_leader: bool, inbound: S) -> Result<WatchResponses, Status>
where
    S: Stream<Item = Result<pb::WatchRequest, Status>> + Unpin + Send + 'static,
{
    if require_leader && ctx.raft.status().leader.is_none() {
        return Err(super::status::propose_error(
            &crate::raft::ProposeError::NoLeader,
        ));
    }
    let (tx, rx) = mpsc::channel(SEND_BUFFER);
    let stream = WatchStream {
        require_leader,
        revs: ctx.hub.subscribe(),
        store: ctx.raft.subscribe(),
        ctx: ctx.clone(),
        tx,
        budget: Arc::new(Semaphore::new(STREAM_BUFFER_BYTES)),
        watchers: BTreeMap::new(),
        next_id: 0,
    };
    tokio::spawn(stream.run(inbound));
    Ok(WatchResponses(ReceiverStream::new(rx)))
}

/// One watch: a key range and the first revision not yet sent.
struct Watcher {
    range: KeyRange,
    next_rev: Revision,
    no_put: bool,
    no_delete: bool,
    prev_kv: bool,
    /// Send an empty response every progress interval in which no event was sent.
    progress_notify: bool,
    /// Whether an event went out since the last progress tick.
    sent_since_tick: bool,
    /// Split responses larger than the request size limit (etcd's `fragment`).
    fragment: bool,
    /// Keeps the hub reading while this watcher lives.
    _interest: WatcherInterest,
    /// Keeps the hub reading previous values while this watcher wants them.
    _prev_interest: Option<PrevKvInterest>,
    /// False until a watcher that started in the past has read history up to the store's
    /// revision (as etcd's unsynced watchers do, in one batch); then it follows the hub.
    synced: bool,
    /// Counts this watcher in `etcd_debugging_mvcc_watcher_total`.
    _counted: GaugeGuard,
    /// Counts it in `etcd_debugging_mvcc_slow_watcher_total` while it is not synced.
    slow: Option<GaugeGuard>,
}

impl Watcher {
    fn set_synced(&mut self) {
        self.synced = true;
        self.slow = None;
    }
}

/// The client went away; the stream ends.
struct Closed;

struct WatchStream {
    ctx: Context,
    /// The client asked (gRPC metadata `hasleader=true`) that the stream end when this member
    /// loses its leader, as etcd's clientv3 `WithRequireLeader` does.
    require_leader: bool,
    /// Revisions whose events the hub holds: what delivery follows.
    revs: watch::Receiver<Revisions>,
    /// The store's revisions: where a new watcher starts.
    store: watch::Receiver<Revisions>,
    tx: mpsc::Sender<Outgoing>,
    /// Bytes of responses the client may leave untaken (see [`STREAM_BUFFER_BYTES`]).
    budget: Arc<Semaphore>,
    watchers: BTreeMap<i64, Watcher>,
    next_id: i64,
}

impl WatchStream {
    async fn run<S>(mut self, mut inbound: S)
    where
        S: Stream<Item = Result<pb::WatchRequest, Status>> + Unpin,
    {
        let mut stopping = self.ctx.stopping.clone();
        let period = self.ctx.limits.watch_progress_notify_interval;
        let mut progress = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        let mut leader_check = tokio::time::interval(LEADER_CHECK);
        let mut leaderless_since: Option<tokio::time::Instant> = None;
        // A client that closes its sending side still reads what its watchers deliver (as in
        // etcd); only the end of the response stream ends the watch.
        let mut inbound_open = true;
        loop {
            tokio::select! {
                _ = leader_check.tick(), if self.require_leader => {
                    if self.ctx.raft.status().leader.is_some() {
                        leaderless_since = None;
                    } else if leaderless_since
                        .get_or_insert_with(tokio::time::Instant::now)
                        .elapsed()
                        >= self.ctx.limits.election_timeout * 3
                    {
                        // etcd ends such streams with "no leader" so clients move elsewhere.
                        let no_leader = crate::raft::ProposeError::NoLeader;
                        self.fail(super::status::propose_error(&no_leader)).await;
                        return;
                    }
                    continue;
                }
                _ = progress.tick() => {
                    if self.deliver().await.is_err() || self.notify_progress().await.is_err() {
                        return;
                    }
                    continue;
                }
                msg = inbound.next(), if inbound_open => match msg {
                    Some(Ok(req)) => {
                        if self.handle(req).await.is_err() {
                            return;
                        }
                    }
                    None => inbound_open = false,
                    // The transport failed.
                    Some(Err(_)) => return,
                },
                // The client went away: nobody reads the responses any more.
                _ = self.tx.closed() => return,
                changed = self.revs.changed() => {
                    if changed.is_err() {
                        return; // the state machine is gone: the member is stopping
                    }
                }
                res = stopping.changed() => {
                    if res.is_err() || *stopping.borrow() {
                        return;
                    }
                }
            }
            if self.deliver().await.is_err() {
                return;
            }
        }
    }

    /// Queues `resp` for the client once the stream's byte budget has room for it (a
    /// response larger than the whole budget waits for all of it). Waiting here is how a
    /// client that does not read holds its stream back.
    async fn send(&self, resp: pb::WatchResponse) -> Result<(), Closed> {
        use prost::Message;
        let bytes = resp.encoded_len().clamp(1, STREAM_BUFFER_BYTES) as u32;
        let budget = tokio::select! {
            permit = self.budget.clone().acquire_many_owned(bytes) => permit.map_err(|_| Closed)?,
            // The client went away while its buffer was full.
            _ = self.tx.closed() => return Err(Closed),
        };
        let out = Outgoing {
            response: Ok(resp),
            _budget: Some(budget),
        };
        self.tx.send(out).await.map_err(|_| Closed)
    }

    /// Ends the stream with `status`.
    async fn fail(&self, status: Status) {
        let out = Outgoing {
            response: Err(status),
            _budget: None,
        };
        let _ = self.tx.send(out).await;
    }

    fn response(&self, watch_id: i64, revision: Revision) -> pb::WatchResponse {
        pb::WatchResponse {
            header: self.ctx.header(revision),
            watch_id,
            ..Default::default()
        }
    }

    async fn handle(&mut self, req: pb::WatchRequest) -> Result<(), Closed> {
        let current = self.store.borrow().current;
        match req.request_union {
            Some(RequestUnion::CreateRequest(c)) => self.create(c, current).await,
            Some(RequestUnion::CancelRequest(c)) => {
                // etcd answers only for a watch that existed.
                if self.watchers.remove(&c.watch_id).is_some() {
                    self.send(pb::WatchResponse {
                        canceled: true,
                        ..self.response(c.watch_id, current)
                    })
                    .await?;
                }
                Ok(())
            }
            Some(RequestUnion::ProgressRequest(_)) => {
                // The hub hears of a commit a moment after the store applies it. As in etcd,
                // the mark covers every write applied before the request: wait for the hub to
                // hold them (bounded; should it lag further, the hub's revision is still a
                // true mark, just an older one).
                let _ = tokio::time::timeout(
                    PROGRESS_CATCH_UP,
                    self.revs.wait_for(|hub| hub.current >= current),
                )
                .await;
                // Everything up to the mark is sent first, so the mark is a true bookmark.
                self.deliver().await?;
                let current = self.revs.borrow().current;
                self.send(self.response(-1, current)).await
            }
            None => Ok(()),
        }
    }

    async fn create(&mut self, c: pb::WatchCreateRequest, current: Revision) -> Result<(), Closed> {
        let range = KeyRange::new(&c.key, &c.range_end);
        let error = if KeyRange::pair_is_empty(&c.key, &c.range_end) {
            Some(EMPTY_RANGE)
        } else if c.watch_id != 0 && self.watchers.contains_key(&c.watch_id) {
            Some(DUPLICATE_ID)
        } else {
            None
        };
        let id = if c.watch_id != 0 {
            c.watch_id
        } else {
            while self.watchers.contains_key(&self.next_id) {
                self.next_id += 1;
            }
            self.next_id
        };
        let mut resp = pb::WatchResponse {
            created: true,
            ..self.response(id, current)
        };
        if let Some(reason) = error {
            resp.canceled = true;
            resp.cancel_reason = reason.to_string();
            return self.send(resp).await;
        }
        let filters: Vec<_> = c
            .filters
            .iter()
            .filter_map(|f| FilterType::try_from(*f).ok())
            .collect();
        let synced = c.start_revision == 0 || c.start_revision > current;
        self.watchers.insert(
            id,
            Watcher {
                range,
                next_rev: if c.start_revision == 0 {
                    current + 1
                } else {
                    c.start_revision
                },
                no_put: filters.contains(&FilterType::Noput),
                no_delete: filters.contains(&FilterType::Nodelete),
                prev_kv: c.prev_kv,
                progress_notify: c.progress_notify,
                sent_since_tick: false,
                fragment: c.fragment,
                _interest: self.ctx.hub.watching(),
                _prev_interest: c.prev_kv.then(|| self.ctx.hub.want_prev_kv()),
                synced,
                _counted: GaugeGuard::new(&METRICS.watchers),
                slow: (!synced).then(|| GaugeGuard::new(&METRICS.slow_watchers)),
            },
        );
        self.send(resp).await?;
        self.deliver().await
    }

    /// etcd's periodic progress notification: each `progress_notify` watcher that is caught up
    /// and was sent nothing since the last tick gets an empty response at the current
    /// revision, so its client knows it has seen everything up to there.
    async fn notify_progress(&mut self) -> Result<(), Closed> {
        let current = self.revs.borrow().current;
        let due: Vec<i64> = self
            .watchers
            .iter_mut()
            .filter_map(|(id, w)| {
                let due = w.progress_notify && !w.sent_since_tick && w.next_rev > current;
                w.sent_since_tick = false;
                due.then_some(*id)
            })
            .collect();
        for id in due {
            self.send(self.response(id, current)).await?;
        }
        Ok(())
    }

    /// Sends every watcher the events it has not had, up to the latest commit. All due
    /// watchers of the stream are read from one snapshot in one blocking call per round; a
    /// watcher more than [`MAX_REVS_PER_RESPONSE`] behind takes several rounds.
    async fn deliver(&mut self) -> Result<(), Closed> {
        loop {
            let revs = *self.revs.borrow_and_update();
            // A watcher whose next revision was compacted away is canceled, as etcd does (the
            // response's header carries no revision).
            let compacted: Vec<i64> = self
                .watchers
                .iter()
                .filter(|(_, w)| w.next_rev < revs.compact)
                .map(|(id, _)| *id)
                .collect();
            for id in compacted {
                self.watchers.remove(&id);
                let resp = pb::WatchResponse {
                    canceled: true,
                    compact_revision: revs.compact,
                    ..self.response(id, 0)
                };
                self.send(resp).await?;
            }
            // Caught-up watchers take their events from the hub's ring; the others read history.
            let mut batches: Vec<Batch> = Vec::new();
            let mut plan: Vec<Read> = Vec::new();
            let store_current = self.store.borrow().current;
            for (id, w) in &mut self.watchers {
                if !w.synced {
                    if w.next_rev > store_current {
                        w.set_synced();
                    } else {
                        plan.push(Read {
                            id: *id,
                            from: w.next_rev,
                            to: store_current.min(w.next_rev + MAX_REVS_PER_RESPONSE - 1),
                            range: w.range.clone(),
                            prev_kv: w.prev_kv,
                            no_put: w.no_put,
                            no_delete: w.no_delete,
                        });
                        continue;
                    }
                }
                if w.next_rev > revs.current {
                    continue;
                }
                let to = revs.current.min(w.next_rev + MAX_REVS_PER_RESPONSE - 1);
                let held = self
                    .ctx
                    .hub
                    .events(w.next_rev, to, &w.range, w.prev_kv, RESPONSE_BYTES);
                match held {
                    Some((events, to)) => {
                        let events = events
                            .into_iter()
                            .filter(|e| passes(e, w.no_put, w.no_delete))
                            .map(event)
                            .collect();
                        batches.push((*id, to, Ok(events)));
                    }
                    None => plan.push(Read {
                        id: *id,
                        from: w.next_rev,
                        to,
                        range: w.range.clone(),
                        prev_kv: w.prev_kv,
                        no_put: w.no_put,
                        no_delete: w.no_delete,
                    }),
                }
            }
            if batches.is_empty() && plan.is_empty() {
                return Ok(());
            }
            if !plan.is_empty() {
                let storage = self.ctx.storage.clone();
                // Never closed, so the permit always comes.
                let _reading = HISTORY_READS.acquire().await;
                let read = tokio::task::spawn_blocking(move || read_plan(&storage, plan)).await;
                match read {
                    Ok(Ok(read)) => batches.extend(read),
                    Ok(Err(e)) => {
                        self.fail(super::status::storage_error(&e)).await;
                        return Err(Closed);
                    }
                    Err(e) => {
                        self.fail(super::status::internal("watch read failed", e))
                            .await;
                        return Err(Closed);
                    }
                }
            }
            for (id, to, outcome) in batches {
                let events = match outcome {
                    Ok(events) => events,
                    Err(compact_revision) => {
                        self.watchers.remove(&id);
                        let resp = pb::WatchResponse {
                            canceled: true,
                            compact_revision,
                            ..self.response(id, 0)
                        };
                        self.send(resp).await?;
                        continue;
                    }
                };
                let Some(w) = self.watchers.get_mut(&id) else {
                    continue;
                }; // canceled meanwhile
                w.next_rev = to + 1;
                if to >= store_current {
                    w.set_synced();
                }
                w.sent_since_tick |= !events.is_empty();
                let fragment = w.fragment;
                if events.is_empty() {
                    continue;
                }
                let whole = pb::WatchResponse {
                    events,
                    ..self.response(id, to)
                };
                if fragment {
                    // etcd's threshold: the request limit plus gRPC's allowance.
                    let limit = self.ctx.limits.max_request_bytes + super::GRPC_OVERHEAD_BYTES;
                    for part in fragments(whole, limit) {
                        self.send(part).await?;
                    }
                } else {
                    self.send(whole).await?;
                }
            }
        }
    }
}

/// How often a `hasleader` stream checks that its member still has a leader.
const LEADER_CHECK: std::time::Duration = std::time::Duration::from_millis(500);

/// Splits a response for a watcher that asked for `fragment`, as etcd does: a response of at
/// least `limit` encoded bytes with two or more events goes out in parts, each as many events
/// as fit under the limit (at least one), every part but the last marked `fragment`. etcd's
/// client reassembles them.
fn fragments(whole: pb::WatchResponse, limit: usize) -> Vec<pb::WatchResponse> {
    use prost::Message;
    if whole.encoded_len() < limit || whole.events.len() < 2 {
        return vec![whole];
    }
    let mut template = whole;
    let events = std::mem::take(&mut template.events);
    template.fragment = true;
    // Sizes add up: a part is the template plus, per event, the field key (field 11, length
    // delimited: one byte), the length prefix and the event.
    let base = template.encoded_len();
    let field_len =
        |e: &mvccpb::Event| 1 + prost::length_delimiter_len(e.encoded_len()) + e.encoded_len();
    let mut parts = Vec::new();
    let mut current: Vec<mvccpb::Event> = Vec::new();
    let mut size = base;
    for e in events {
        let len = field_len(&e);
        if !current.is_empty() && size + len >= limit {
            parts.push(std::mem::take(&mut current));
            size = base;
        }
        size += len;
        current.push(e);
    }
    parts.push(current);
    let last = parts.len() - 1;
    parts
        .into_iter()
        .enumerate()
        .map(|(i, events)| pb::WatchResponse {
            events,
            fragment: i < last,
            ..template.clone()
        })
        .collect()
}

/// Events read for one watcher in a round: its id, the last revision covered, and the events
/// (or the compact revision that took them away).
type Batch = (i64, Revision, Result<Vec<mvccpb::Event>, Revision>);

/// Reads a round's plan from one snapshot. Watchers that need the same revision window (the
/// common case: every caught-up watcher needs the latest commits) share one scan of history,
/// each taking the events in its range; a lone watcher scans only its own range.
fn read_plan(
    storage: &crate::storage::Storage,
    plan: Vec<Read>,
) -> Result<Vec<Batch>, crate::mvcc::Error> {
    let view = Mvcc::read_view(storage)?;
    let mut windows: BTreeMap<(Revision, Revision), Vec<Read>> = BTreeMap::new();
    for r in plan {
        windows.entry((r.from, r.to)).or_default().push(r);
    }
    let mut out = Vec::new();
    for ((from, to), reads) in windows {
        if from < view.compact_rev {
            // Compacted after the plan was made: cancel with the new mark.
            out.extend(reads.iter().map(|r| (r.id, to, Err(view.compact_rev))));
            continue;
        }
        let shared = if reads.len() > 1 {
            let any_prev = reads.iter().any(|r| r.prev_kv);
            let budget = RESPONSE_BYTES.saturating_mul(reads.len());
            Some(view.events(from, to, &KeyRange::all(), any_prev, budget)?)
        } else {
            None
        };
        for r in reads {
            let (events, to) = match &shared {
                Some((all, covered)) => (
                    all.iter()
                        .filter(|e| r.range.contains(&e.kv.key))
                        .cloned()
                        .map(|mut e| {
                            if !r.prev_kv {
                                e.prev_kv = None;
                            }
                            e
                        })
                        .collect(),
                    *covered,
                ),
                None => view.events(from, to, &r.range, r.prev_kv, RESPONSE_BYTES)?,
            };
            let events = events
                .into_iter()
                .filter(|e| passes(e, r.no_put, r.no_delete))
                .map(event)
                .collect();
            out.push((r.id, to, Ok(events)));
        }
    }
    Ok(out)
}

/// What one watcher needs read from history in a delivery round.
struct Read {
    id: i64,
    from: Revision,
    to: Revision,
    range: KeyRange,
    prev_kv: bool,
    no_put: bool,
    no_delete: bool,
}

fn event(e: Event) -> mvccpb::Event {
    mvccpb::Event {
        r#type: match e.kind {
            EventKind::Put => mvccpb::event::EventType::Put as i32,
            EventKind::Delete => mvccpb::event::EventType::Delete as i32,
        },
        kv: Some(convert::kv(e.kv)),
        prev_kv: e.prev_kv.map(convert::kv),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn fragments_follow_etcds_rule() {
        // Proves every part but the last is as full as etcd makes it: under the limit, and the
        // next event would reach it; events keep their order, and only the last part is final.
        let events: Vec<mvccpb::Event> = (0..40)
            .map(|i| mvccpb::Event {
                kv: Some(mvccpb::KeyValue {
                    key: format!("k{i}").into_bytes(),
                    value: vec![b'v'; 50 + 37 * (i % 7)],
                    ..Default::default()
                }),
                ..Default::default()
            })
            .collect();
        let whole = pb::WatchResponse {
            watch_id: 3,
            events: events.clone(),
            ..Default::default()
        };
        let limit = 1000;
        let parts = fragments(whole, limit);
        assert!(parts.len() > 2);
        let joined: Vec<_> = parts.iter().flat_map(|p| p.events.clone()).collect();
        assert_eq!(joined, events);
        let mut next = 0;
        for (i, part) in parts.iter().enumerate() {
            let last = i == parts.len() - 1;
            assert_eq!(part.fragment, !last);
            assert!(part.events.len() == 1 || part.encoded_len() < limit);
            next += part.events.len();
            if !last {
                let mut fuller = part.clone();
                fuller.events.push(events[next].clone());
                assert!(
                    fuller.encoded_len() >= limit,
                    "part {i} could hold one more event"
                );
            }
        }
    }
}
