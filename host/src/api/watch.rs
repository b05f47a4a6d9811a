//! etcd's Watch service: one bidirectional stream carries many watches.
//!
//! This is the protocol side of a watch stream: requests in, responses out, for gRPC and the
//! HTTP gateway alike. Which events each watcher is due, and reading them, is
//! `crate::watch::Watchers`; this file turns requests into its calls and its deliveries
//! into responses (`watch_wire::WatchFrame`s, which carry each event's shared encoding, split
//! for `fragment` watchers). `watch_wire.rs` serves them over gRPC.
//!
//! Each stream runs one task, woken by the member's watch hub after each commit. Memory is
//! bounded in bytes, not in responses: a delivery carries at most about
//! `watch::watcher::RESPONSE_BYTES` of events (whole revisions), and a stream holds at most
//! [`STREAM_BUFFER_BYTES`] of responses its client has not taken. A client that stops reading
//! therefore stops its stream's task at that bound; its watchers stay where they are, and when
//! it reads again they catch up from history (etcd's unsynced watchers). A stalled reader
//! costs a cursor and a bounded buffer, never the events written meanwhile.
//!
//! Watch filters (`plugin/filter.rs`) run here, on what a delivery carries: each watcher's
//! filters (those bound to its range, and the one it named in `cairn_filter`) are opened when
//! it is created and see its events in order. Dropping events leaves ordering and revisions
//! as they were; a delivery left empty sends nothing. A failing filter cancels its own
//! watcher, with the reason; the stream and its other watchers go on.

use crate::plugin::engine::PolicyOperation;
use std::sync::Arc;

use cairn_proto::etcdserverpb as pb;
use cairn_proto::etcdserverpb::watch_create_request::FilterType;
use cairn_proto::etcdserverpb::watch_request::RequestUnion;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::Status;

use super::watch_wire::WatchFrame;
use super::{Context, status};
use crate::auth::needs::Need;
use crate::mvcc::{Revision, Revisions};
use crate::plugin::filter::{OpenFilter, Watcher as FilterWatcher};
use crate::watch::{Delivery, ReadFailed, Shaped, Spec, Watchers};

/// Bytes of responses a stream holds before it waits for its client to take them.
const STREAM_BUFFER_BYTES: usize = 512 << 10;
/// Responses a stream holds (a second bound, for many small responses).
const SEND_BUFFER: usize = 128;
/// How long a progress request waits for the hub to reach the store's revision.
const PROGRESS_CATCH_UP: std::time::Duration = std::time::Duration::from_secs(5);

/// A response on its way to the client, holding its share of the stream's byte budget until
/// the transport takes it.
struct Outgoing {
    response: Result<WatchFrame, Status>,
    _budget: Option<OwnedSemaphorePermit>,
}

/// The responses of one watch stream, as the transport takes them; counted as an open
/// stream while the transport holds it.
pub struct WatchResponses {
    responses: ReceiverStream<Outgoing>,
    _open: crate::metrics::GaugeGuard,
}

impl Stream for WatchResponses {
    type Item = Result<WatchFrame, Status>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        // The budget returns to the stream as the response leaves it.
        std::pin::Pin::new(&mut self.responses)
            .poll_next(cx)
            .map(|o| o.map(|o| o.response))
    }
}

/// Opens a watch stream fed by `inbound` (gRPC's request stream, or the HTTP gateway's).
/// `require_leader` is clientv3's `WithRequireLeader`; `credentials` what the stream was
/// opened with, checked at each watcher's creation.
pub fn open<S>(
    ctx: &Context,
    require_leader: bool,
    credentials: super::Credentials,
    inbound: S,
) -> Result<WatchResponses, Status>
where
    S: Stream<Item = Result<pb::WatchRequest, Status>> + Unpin + Send + 'static,
{
    if require_leader && ctx.raft.status().leader.is_none() {
        return Err(status::propose_error(&crate::raft::ProposeError::NoLeader));
    }
    let (tx, rx) = mpsc::channel(SEND_BUFFER);
    let stream = WatchStream {
        require_leader,
        credentials,
        revs: ctx.hub.subscribe(),
        store: ctx.raft.subscribe(),
        ctx: ctx.clone(),
        tx,
        budget: Arc::new(Semaphore::new(STREAM_BUFFER_BYTES)),
        watchers: Watchers::new(ctx.hub.clone(), ctx.storage.clone()),
        filters: std::collections::BTreeMap::new(),
        filters_checked: ctx.watch_filters.generation(),
    };
    tokio::spawn(stream.run(inbound));
    Ok(WatchResponses {
        responses: ReceiverStream::new(rx),
        _open: crate::metrics::GaugeGuard::new(&crate::metrics::METRICS.watch_streams),
    })
}

/// The client went away; the stream ends.
struct Closed;

struct WatchStream {
    ctx: Context,
    /// The client asked (gRPC metadata `hasleader=true`) that the stream end when this member
    /// loses its leader, as etcd's clientv3 `WithRequireLeader` does.
    require_leader: bool,
    /// Who opened the stream.
    credentials: super::Credentials,
    /// Revisions whose events the hub holds: what delivery follows.
    revs: watch::Receiver<Revisions>,
    /// The store's revisions: where a new watcher starts.
    store: watch::Receiver<Revisions>,
    tx: mpsc::Sender<Outgoing>,
    /// Bytes of responses the client may leave untaken (see [`STREAM_BUFFER_BYTES`]).
    budget: Arc<Semaphore>,
    watchers: Watchers,
    /// Each watcher's watch filters: what it was created with, and the open ones, in the
    /// order they run.
    filters: std::collections::BTreeMap<i64, WatcherFilters>,
    /// The registry generation the filters were last checked against.
    filters_checked: u64,
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
                        self.fail(status::propose_error(&no_leader)).await;
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
    async fn send(&self, resp: impl Into<WatchFrame>) -> Result<(), Closed> {
        let resp = resp.into();
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
                self.filters.remove(&c.watch_id);
                if self.watchers.cancel(c.watch_id) {
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
        // As etcd: a watcher the caller may not read is refused in a response (watch ID -1,
        // created and canceled, the error as grpc-go prints it); the stream stays open.
        let caller = match self.ctx.caller_from(&self.credentials).and_then(|caller| {
            self.ctx
                .check_read(
                    &caller,
                    PolicyOperation::Watch,
                    [Need::read(&c.key, &c.range_end)],
                )
                .map(|()| caller)
        }) {
            Ok(caller) => caller,
            Err(refused) => {
                let resp = pb::WatchResponse {
                    created: true,
                    canceled: true,
                    cancel_reason: status::as_grpc_go_text(&refused),
                    ..self.response(-1, current)
                };
                return self.send(resp).await;
            }
        };
        // The registry as the filters are chosen: a change after this is caught by the next
        // delivery's check (`check_filters`).
        let generation = self.ctx.watch_filters.generation();
        let plugin_filters = match self.open_filters(&c, &caller).await {
            Ok(filters) => filters,
            Err(reason) => {
                let resp = pb::WatchResponse {
                    created: true,
                    canceled: true,
                    cancel_reason: reason,
                    ..self.response(-1, current)
                };
                return self.send(resp).await;
            }
        };
        let filters: Vec<_> = c
            .filters
            .iter()
            .filter_map(|f| FilterType::try_from(*f).ok())
            .collect();
        let spec = Spec {
            id: c.watch_id,
            key: c.key.clone(),
            range_end: c.range_end.clone(),
            start_revision: c.start_revision,
            no_put: filters.contains(&FilterType::Noput),
            no_delete: filters.contains(&FilterType::Nodelete),
            prev_kv: c.prev_kv,
            progress_notify: c.progress_notify,
            fragment: c.fragment,
        };
        let created = self.watchers.create(spec, current);
        let id = match created {
            Ok(id) | Err((id, _)) => id,
        };
        let mut resp = pb::WatchResponse {
            created: true,
            ..self.response(id, current)
        };
        if let Err((_, refusal)) = created {
            resp.canceled = true;
            resp.cancel_reason = refusal.to_string();
            return self.send(resp).await;
        }
        let (open, bindings) = plugin_filters;
        self.filters.insert(
            id,
            WatcherFilters {
                key: c.key.clone(),
                range_end: c.range_end.clone(),
                named: c.cairn_filter.as_ref().map(|f| f.binding.clone()),
                bindings,
                open,
                generation,
            },
        );
        self.send(resp).await?;
        self.deliver().await
    }

    /// Opens the watch filters a new watcher runs: those bound to its range and the one it
    /// named. `Err` is the reason it is refused with.
    async fn open_filters(
        &self,
        c: &pb::WatchCreateRequest,
        caller: &crate::auth::Caller,
    ) -> Result<(Vec<OpenFilter>, Vec<FilterSignature>), String> {
        let named = c.cairn_filter.as_ref();
        let bindings = self.ctx.watch_filters.for_watcher(
            &c.key,
            &c.range_end,
            named.map(|f| f.binding.as_str()),
        )?;
        let signature = bindings.iter().map(|(b, _)| signature(b)).collect();
        if bindings.is_empty() {
            return Ok((Vec::new(), signature));
        }
        let user = caller.user().unwrap_or_default().to_string();
        let roles = self
            .ctx
            .auth
            .read()
            .expect("auth store lock poisoned")
            .users
            .get(&user)
            .map(|u| u.roles.clone())
            .unwrap_or_default();
        let mut open = Vec::with_capacity(bindings.len());
        for (binding, is_named) in bindings {
            let watcher = FilterWatcher {
                user: user.clone(),
                roles: roles.clone(),
                argument: if is_named {
                    named.map(|f| f.argument.clone()).unwrap_or_default()
                } else {
                    Vec::new()
                },
            };
            let name = binding.name.clone();
            match self
                .ctx
                .watch_filters
                .open(binding, is_named, watcher)
                .await
            {
                Ok(Ok(filter)) => open.push(filter),
                Ok(Err(reason)) => {
                    return Err(format!("cairn: watch filter {name} refused: {reason}"));
                }
                Err(fault) => {
                    tracing::warn!(binding = %name, error = %fault, "opening a watch filter");
                    return Err(format!(
                        "cairn: watch filter {name} could not start: {fault}"
                    ));
                }
            }
        }
        Ok((open, signature))
    }

    /// After a registry change: cancels every watcher whose filters are no longer the ones
    /// its range and name call for (a filter bound, unbound or rebound since it was created),
    /// so no watcher goes on unfiltered, or with an old filter, after a bind. Its client
    /// watches again and gets the current ones.
    async fn check_filters(&mut self) -> Result<(), Closed> {
        let generation = self.ctx.watch_filters.generation();
        if generation == self.filters_checked {
            return Ok(());
        }
        self.filters_checked = generation;
        let mut changed = Vec::new();
        for (id, w) in &self.filters {
            if w.generation == generation {
                continue;
            }
            let now = self
                .ctx
                .watch_filters
                .for_watcher(&w.key, &w.range_end, w.named.as_deref())
                .map(|bindings| {
                    bindings
                        .iter()
                        .map(|(b, _)| signature(b))
                        .collect::<Vec<_>>()
                });
            if now.as_ref() != Ok(&w.bindings) {
                changed.push(*id);
            }
        }
        for w in self.filters.values_mut() {
            w.generation = generation;
        }
        let current = self.revs.borrow().current;
        for id in changed {
            self.filters.remove(&id);
            if self.watchers.cancel(id) {
                let resp = pb::WatchResponse {
                    canceled: true,
                    cancel_reason: "cairn: the watch filters of this watcher changed; watch again"
                        .into(),
                    ..self.response(id, current)
                };
                self.send(resp).await?;
            }
        }
        Ok(())
    }

    /// etcd's periodic progress notification: each `progress_notify` watcher that is caught up
    /// and was sent nothing since the last tick gets an empty response at the current
    /// revision, so its client knows it has seen everything up to there.
    async fn notify_progress(&mut self) -> Result<(), Closed> {
        let current = self.revs.borrow().current;
        for id in self.watchers.progress_due(current) {
            self.send(self.response(id, current)).await?;
        }
        Ok(())
    }

    /// Sends every watcher the events it has not had, up to the latest commit, one
    /// delivery round at a time (see `Watchers::round`).
    async fn deliver(&mut self) -> Result<(), Closed> {
        self.check_filters().await?;
        loop {
            let hub = *self.revs.borrow_and_update();
            let store_current = self.store.borrow().current;
            let deliveries = match self.watchers.round(hub, store_current).await {
                Ok(Some(deliveries)) => deliveries,
                Ok(None) => return Ok(()),
                Err(e) => {
                    self.fail(read_failed(&e)).await;
                    return Err(Closed);
                }
            };
            for delivery in deliveries {
                self.send_delivery(delivery).await?;
            }
        }
    }

    async fn send_delivery(&mut self, delivery: Delivery) -> Result<(), Closed> {
        match delivery {
            Delivery::Compacted {
                id,
                compact_revision,
            } => {
                self.filters.remove(&id);
                // etcd's cancellation for a compacted watcher carries no revision in its header.
                let resp = pb::WatchResponse {
                    canceled: true,
                    compact_revision,
                    ..self.response(id, 0)
                };
                self.send(resp).await
            }
            Delivery::Events {
                id,
                to,
                events,
                fragment,
            } => {
                // A watcher its filter canceled earlier in this round gets nothing more.
                if !self.watchers.contains(id) {
                    return Ok(());
                }
                let events = match self.filter(id, events) {
                    Ok(events) => events,
                    Err(reason) => {
                        // Only this watcher ends; its stream and other watchers go on.
                        self.filters.remove(&id);
                        self.watchers.cancel(id);
                        let resp = pb::WatchResponse {
                            canceled: true,
                            cancel_reason: reason,
                            ..self.response(id, to)
                        };
                        return self.send(resp).await;
                    }
                };
                if events.is_empty() {
                    // Every event was filtered out: nothing to send, and the watcher is due
                    // progress notifications as if nothing had come.
                    self.watchers.mark_unsent(id);
                    return Ok(());
                }
                let whole = WatchFrame {
                    head: self.response(id, to),
                    events,
                };
                if !fragment {
                    return self.send(whole).await;
                }
                // etcd's threshold: the request limit plus gRPC's allowance.
                let limit = self.ctx.limits.max_request_bytes + super::GRPC_OVERHEAD_BYTES;
                for part in whole.fragments(limit) {
                    self.send(part).await?;
                }
                Ok(())
            }
        }
    }
}

/// What decides a watcher's filters: which bindings, with which module, config and range.
type FilterSignature = (String, String, Vec<u8>, Vec<u8>, Vec<u8>);

fn signature(b: &crate::plugin::Binding) -> FilterSignature {
    (
        b.name.clone(),
        b.sha256.clone(),
        b.config.clone(),
        b.key.clone(),
        b.range_end.clone(),
    )
}

/// One watcher's watch filters.
struct WatcherFilters {
    key: Vec<u8>,
    range_end: Vec<u8>,
    named: Option<String>,
    /// The bindings it was created with.
    bindings: Vec<FilterSignature>,
    open: Vec<OpenFilter>,
    /// The registry generation they were chosen (or last checked) at.
    generation: u64,
}

/// The longest a delivery's filtering may take: a filter within its per-call deadline but
/// slow on many events cancels its watcher rather than hold the stream.
const FILTER_TIME_PER_DELIVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// How long a delivery's filtering runs inline before it moves off the runtime's worker.
const FILTER_INLINE: std::time::Duration = std::time::Duration::from_millis(1);

impl WatchStream {
    /// Runs watcher `id`'s filters over `events`: what it is sent, or why a filter failed.
    /// Inline on this worker while it is quick (most deliveries: a call takes microseconds);
    /// a delivery still filtering after [`FILTER_INLINE`] hands the worker's other tasks to
    /// another thread for the rest (`block_in_place` per delivery cost more than the calls).
    /// A filtered watcher is sent copies of its events (a filter may rewrite them), not the
    /// shared ones.
    fn filter(&mut self, id: i64, events: Vec<Shaped>) -> Result<Vec<Shaped>, String> {
        let Some(filters) = self.filters.get_mut(&id).filter(|w| !w.open.is_empty()) else {
            return Ok(events);
        };
        let started = std::time::Instant::now();
        let mut out = Vec::with_capacity(events.len());
        let mut events = events.into_iter();
        let mut one = |shaped: Shaped| -> Result<Option<Shaped>, String> {
            let event = shaped.to_event();
            if started.elapsed() > FILTER_TIME_PER_DELIVERY {
                return Err(format!(
                    "cairn: watch filters took over {} ms on one delivery",
                    FILTER_TIME_PER_DELIVERY.as_millis()
                ));
            }
            let mut event = event;
            for filter in filters.open.iter_mut() {
                match filter.apply(event) {
                    Ok(Some(kept)) => event = kept,
                    Ok(None) => return Ok(None),
                    Err(why) => {
                        tracing::info!(binding = %filter.binding, watch_id = id, %why, "a watch filter failed; its watcher is canceled");
                        return Err(format!(
                            "cairn: watch filter {} failed: {why}",
                            filter.binding
                        ));
                    }
                }
            }
            Ok(Some(Shaped::owned(event)))
        };
        while started.elapsed() < FILTER_INLINE {
            let Some(event) = events.next() else {
                return Ok(out);
            };
            out.extend(one(event)?);
        }
        super::blocking_in_place(|| {
            for event in events {
                out.extend(one(event)?);
            }
            Ok(out)
        })
    }
}

fn read_failed(e: &ReadFailed) -> Status {
    match e {
        ReadFailed::Storage(e) => status::storage_error(e),
        ReadFailed::Task(e) => status::internal("watch read failed", e),
    }
}

/// How often a `hasleader` stream checks that its member still has a leader.
const LEADER_CHECK: std::time::Duration = std::time::Duration::from_millis(500);
