//! etcd's Watch service: one bidirectional stream carries many watches.
//!
//! Each stream runs one task. It learns of commits from the state machine's revision channel
//! (which apply never waits on) and pulls, for each watcher, the events after the last
//! revision it was sent from history. Delivery is therefore ordered, gap-free and whole per
//! revision by construction, a watcher that falls behind simply reads more history, and a slow
//! client only ever delays its own stream.

use std::collections::BTreeMap;

use cairn_proto::etcdserverpb as pb;
use cairn_proto::etcdserverpb::watch_create_request::FilterType;
use cairn_proto::etcdserverpb::watch_request::RequestUnion;
use cairn_proto::etcdserverpb::watch_server::Watch;
use cairn_proto::mvccpb;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::{Context, convert};
use crate::mvcc::history::passes;
use crate::mvcc::{Event, EventKind, KeyRange, Mvcc, Revision, Revisions};

/// Most revisions in one response while catching up (etcd's watchBatchMaxRevs).
const MAX_REVS_PER_RESPONSE: i64 = 1000;
/// Responses buffered per stream before the stream waits for its client.
const SEND_BUFFER: usize = 128;
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
    type WatchStream = ReceiverStream<Result<pb::WatchResponse, Status>>;

    async fn watch(
        &self,
        request: Request<Streaming<pb::WatchRequest>>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let (tx, rx) = mpsc::channel(SEND_BUFFER);
        let stream = WatchStream {
            revs: self.ctx.raft.subscribe(),
            ctx: self.ctx.clone(),
            tx,
            watchers: BTreeMap::new(),
            next_id: 0,
        };
        tokio::spawn(stream.run(request.into_inner()));
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// One watch: a key range and the first revision not yet sent.
struct Watcher {
    range: KeyRange,
    next_rev: Revision,
    no_put: bool,
    no_delete: bool,
    prev_kv: bool,
}

/// The client went away; the stream ends.
struct Closed;

struct WatchStream {
    ctx: Context,
    revs: watch::Receiver<Revisions>,
    tx: mpsc::Sender<Result<pb::WatchResponse, Status>>,
    watchers: BTreeMap<i64, Watcher>,
    next_id: i64,
}

impl WatchStream {
    async fn run(mut self, mut inbound: Streaming<pb::WatchRequest>) {
        let mut stopping = self.ctx.stopping.clone();
        loop {
            tokio::select! {
                msg = inbound.message() => match msg {
                    Ok(Some(req)) => {
                        if self.handle(req).await.is_err() {
                            return;
                        }
                    }
                    // The client closed its side, or the transport failed.
                    Ok(None) | Err(_) => return,
                },
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

    async fn send(&self, resp: pb::WatchResponse) -> Result<(), Closed> {
        self.tx.send(Ok(resp)).await.map_err(|_| Closed)
    }

    fn response(&self, watch_id: i64, revision: Revision) -> pb::WatchResponse {
        pb::WatchResponse {
            header: self.ctx.header(revision),
            watch_id,
            ..Default::default()
        }
    }

    async fn handle(&mut self, req: pb::WatchRequest) -> Result<(), Closed> {
        let current = self.revs.borrow().current;
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
        let error = if range.is_empty() {
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
            },
        );
        self.send(resp).await?;
        self.deliver().await
    }

    /// Sends every watcher the events it has not had, up to the latest commit.
    async fn deliver(&mut self) -> Result<(), Closed> {
        let revs = *self.revs.borrow_and_update();
        let ids: Vec<i64> = self.watchers.keys().copied().collect();
        for id in ids {
            while let Some(w) = self.watchers.get(&id) {
                if w.next_rev > revs.current {
                    break;
                }
                if w.next_rev < revs.compact {
                    // History the watcher needs is gone: cancel it, as etcd does (its header
                    // carries no revision).
                    self.watchers.remove(&id);
                    let resp = pb::WatchResponse {
                        canceled: true,
                        compact_revision: revs.compact,
                        ..self.response(id, 0)
                    };
                    self.send(resp).await?;
                    break;
                }
                let (from, to) = (
                    w.next_rev,
                    revs.current.min(w.next_rev + MAX_REVS_PER_RESPONSE - 1),
                );
                let (range, prev_kv, no_put, no_delete) =
                    (w.range.clone(), w.prev_kv, w.no_put, w.no_delete);
                let storage = self.ctx.storage.clone();
                let read = tokio::task::spawn_blocking(move || {
                    let view = Mvcc::read_view(&storage)?;
                    view.events(from, to, &range, prev_kv)
                })
                .await;
                let events = match read {
                    Ok(Ok(events)) => events,
                    Ok(Err(e)) => {
                        let _ = self.tx.send(Err(super::status::storage_error(&e))).await;
                        return Err(Closed);
                    }
                    Err(e) => {
                        let _ = self
                            .tx
                            .send(Err(Status::internal(format!(
                                "cairn: watch read failed: {e}"
                            ))))
                            .await;
                        return Err(Closed);
                    }
                };
                let events: Vec<mvccpb::Event> = events
                    .into_iter()
                    .filter(|e| passes(e, no_put, no_delete))
                    .map(event)
                    .collect();
                if let Some(w) = self.watchers.get_mut(&id) {
                    w.next_rev = to + 1;
                }
                if !events.is_empty() {
                    self.send(pb::WatchResponse {
                        events,
                        ..self.response(id, to)
                    })
                    .await?;
                }
            }
        }
        Ok(())
    }
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
