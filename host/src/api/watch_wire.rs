//! The Watch service's wire: responses whose events are encoded once per revision.
//!
//! tonic's generated server encodes every `WatchResponse` field by field, so a revision sent
//! to ten thousand watchers was converted and encoded ten thousand times, with a copy of
//! each key and value per watcher. Here a response is a [`WatchFrame`]: its header and flags
//! (a `WatchResponse` without events) plus the watcher's [`Shaped`] events, whose
//! `mvccpb.Event` encodings are made once and shared by every stream (see
//! `watch::SharedEvent`). The frame writes the header's fields, then each event's bytes as
//! field 11: byte for byte what prost writes for the whole message, since `events` has the
//! highest field number of `WatchResponse`.
//!
//! [`WatchServer`] is the generated `watch_server::WatchServer` with this codec in place of
//! prost's: tonic's generator takes one codec for every service of a file, and only Watch
//! needs another.

use std::convert::Infallible;
use std::task::{Context as TaskContext, Poll};

use bytes::{BufMut, Bytes};
use cairn_proto::etcdserverpb as pb;
use cairn_proto::mvccpb;
use futures::future::BoxFuture;
use prost::Message;
use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint};
use tonic::Status;
use tonic::codec::{Codec, EncodeBuf, Encoder};
use tonic::server::{Grpc, NamedService, StreamingService};

use super::{Context, convert};
use crate::mvcc::{Event, EventKind};
use crate::watch::Shaped;

/// `WatchResponse.events`' field number.
const EVENTS_FIELD: u32 = 11;

/// One watch response on its way out: everything but the events as prost's message, and the
/// events as the watcher is sent them.
#[derive(Debug, Default)]
pub struct WatchFrame {
    /// The response without its events.
    pub head: pb::WatchResponse,
    pub events: Vec<Shaped>,
}

impl From<pb::WatchResponse> for WatchFrame {
    /// A response without events (created, canceled, progress).
    fn from(head: pb::WatchResponse) -> Self {
        debug_assert!(head.events.is_empty(), "events go in WatchFrame::events");
        WatchFrame {
            head,
            events: Vec::new(),
        }
    }
}

impl WatchFrame {
    /// Bytes of the encoded response.
    pub fn encoded_len(&self) -> usize {
        self.head.encoded_len() + self.events.iter().map(event_field_len).sum::<usize>()
    }

    /// Writes the response as prost would write the whole `WatchResponse`.
    pub fn encode(&self, buf: &mut impl BufMut) {
        self.head.encode_raw(buf);
        for e in &self.events {
            let wire = wire(e);
            encode_key(EVENTS_FIELD, WireType::LengthDelimited, buf);
            encode_varint(wire.len() as u64, buf);
            buf.put_slice(wire);
        }
    }

    /// The response as prost's message (the HTTP gateway writes it as JSON).
    pub fn into_pb(self) -> pb::WatchResponse {
        pb::WatchResponse {
            events: self.events.iter().map(|e| event(e.to_event())).collect(),
            ..self.head
        }
    }

    /// Splits the frame for a watcher that asked for `fragment`, as etcd does: a response of
    /// at least `limit` encoded bytes with two or more events goes out in parts, each as many
    /// events as fit under the limit (at least one), every part but the last marked
    /// `fragment`. etcd's client reassembles them.
    pub fn fragments(self, limit: usize) -> Vec<WatchFrame> {
        if self.encoded_len() < limit || self.events.len() < 2 {
            return vec![self];
        }
        let mut template = self.head;
        template.fragment = true;
        let base = template.encoded_len();
        let mut parts: Vec<Vec<Shaped>> = Vec::new();
        let mut current: Vec<Shaped> = Vec::new();
        let mut size = base;
        for e in self.events {
            let len = event_field_len(&e);
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
            .map(|(i, events)| WatchFrame {
                head: pb::WatchResponse {
                    fragment: i < last,
                    ..template.clone()
                },
                events,
            })
            .collect()
    }
}

/// The event's encoding, made once for every watcher that is sent it alike.
fn wire(e: &Shaped) -> &Bytes {
    e.wire(|shaped| Bytes::from(event(shaped.to_event()).encode_to_vec()))
}

/// Bytes the event takes in a response: field key (one byte), length, encoding.
fn event_field_len(e: &Shaped) -> usize {
    let len = wire(e).len();
    1 + encoded_len_varint(len as u64) + len
}

/// etcd's `mvccpb.Event` for `e`.
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

/// gRPC's codec for the Watch service: requests through prost, responses as frames.
#[derive(Clone, Copy, Debug, Default)]
pub struct WatchCodec;

impl Codec for WatchCodec {
    type Encode = WatchFrame;
    type Decode = pb::WatchRequest;
    type Encoder = FrameEncoder;
    type Decoder = tonic_prost::ProstDecoder<pb::WatchRequest>;

    fn encoder(&mut self) -> Self::Encoder {
        FrameEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        tonic_prost::ProstDecoder::default()
    }
}

#[derive(Debug)]
pub struct FrameEncoder;

impl Encoder for FrameEncoder {
    type Item = WatchFrame;
    type Error = Status;

    fn encode(&mut self, item: WatchFrame, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        item.encode(dst);
        Ok(())
    }
}

/// etcd's Watch service on [`WatchCodec`]: `/etcdserverpb.Watch/Watch`, requests up to
/// `max_decoding` bytes.
#[derive(Clone)]
pub struct WatchServer {
    ctx: Context,
    max_decoding: usize,
}

impl WatchServer {
    pub fn new(ctx: Context, max_decoding: usize) -> Self {
        WatchServer { ctx, max_decoding }
    }
}

impl NamedService for WatchServer {
    const NAME: &'static str = "etcdserverpb.Watch";
}

impl<B> tower_service::Service<http::Request<B>> for WatchServer
where
    B: http_body::Body + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut TaskContext<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        if req.uri().path() != "/etcdserverpb.Watch/Watch" {
            // What tonic's generated servers answer for a method they do not have.
            return Box::pin(async {
                Ok(Status::unimplemented("").into_http::<tonic::body::Body>())
            });
        }
        let call = WatchCall(self.ctx.clone());
        let max_decoding = self.max_decoding;
        Box::pin(async move {
            let mut grpc =
                Grpc::new(WatchCodec).apply_max_message_size_config(Some(max_decoding), None);
            Ok(grpc.streaming(call, req).await)
        })
    }
}

/// One Watch call: opens the stream.
struct WatchCall(Context);

impl StreamingService<pb::WatchRequest> for WatchCall {
    type Response = WatchFrame;
    type ResponseStream = super::watch::WatchResponses;
    type Future = std::future::Ready<Result<tonic::Response<Self::ResponseStream>, Status>>;

    fn call(
        &mut self,
        request: tonic::Request<tonic::Streaming<pb::WatchRequest>>,
    ) -> Self::Future {
        let require_leader = super::requires_leader(&request);
        let credentials = super::Credentials::of(&request);
        std::future::ready(
            super::watch::open(&self.0, require_leader, credentials, request.into_inner())
                .map(tonic::Response::new),
        )
    }
}

#[cfg(test)]
#[path = "watch_wire_test.rs"]
mod tests;
