//! Listeners: binding the member's URLs and serving connections on them, for clients and for
//! peers. What is served (routes, services) is decided elsewhere (`api::router`,
//! `raft::RaftNode::peer_routes`); this module owns sockets, HTTP/2 settings, keepalives and
//! how a listener stops.
//!
//! Every client connection passes through [`authority::AuthorityRepair`], which repairs the
//! `:authority` etcd 3.4-era Go clients send and closes connections that never speak.

pub mod authority;
pub mod tls;

use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::ListenUrl;

/// How long a stopping member keeps its peer connections for calls in flight.
const PEER_DRAIN: Duration = Duration::from_millis(500);

#[derive(Debug, Error)]
pub enum NetError {
    #[error("cannot listen on {url}: {reason}")]
    Listen { url: String, reason: String },
    #[error("serving {url}: {reason}")]
    Serve { url: String, reason: String },
}

/// Binds every URL, failing on the first that cannot be bound.
pub async fn bind_all(urls: &[ListenUrl]) -> Result<Vec<(String, TcpListener)>, NetError> {
    let mut listeners = Vec::new();
    for url in urls {
        let listener = TcpListener::bind((url.host.as_str(), url.port))
            .await
            .map_err(|e| NetError::Listen {
                url: url.url.clone(),
                reason: e.to_string(),
            })?;
        listeners.push((url.url.clone(), listener));
    }
    Ok(listeners)
}

/// How a client connection is kept honest: HTTP/2 pings after `interval` of quiet, the
/// connection closed when one goes unanswered for `timeout` (etcd's gRPC keepalive flags), and
/// at most `max_streams` streams open on it at once (`--max-concurrent-streams`).
#[derive(Clone, Copy, Debug)]
pub struct Keepalive {
    pub interval: Duration,
    pub timeout: Duration,
    pub max_streams: u32,
}

/// The HTTP/2 flow-control window of a whole client connection, in bytes: how much a client
/// may send ahead of the member reading it, across all its streams. grpc-go (etcd's server)
/// lets this window grow to the same 16 MiB. It also sizes h2's budget for small DATA frames
/// that wait unread (half the window): with hyper's 1 MiB default, a client with a few
/// thousand small requests queued on one connection while the member's runtime is saturated
/// (a writer beside 10,000 watchers) used it up, and h2 closed the connection with GOAWAY
/// ENHANCE_YOUR_CALM ("too_many_data_frames"). One stream keeps hyper's 1 MiB window.
const CLIENT_CONNECTION_WINDOW: u32 = 16 << 20;

/// Serves `router` (gRPC and HTTP/1.1 on one port) on a client-side listener, over TLS when
/// `tls` is given, until `stopped` turns true; in-flight requests then finish (the caller
/// bounds how long).
pub async fn serve_client(
    url: String,
    listener: TcpListener,
    router: axum::Router,
    keepalive: Keepalive,
    tls: Option<Arc<tls::ServerTls>>,
    stopped: watch::Receiver<bool>,
) -> Result<(), NetError> {
    let server = || {
        tonic::transport::Server::builder()
            .accept_http1(true)
            .http2_keepalive_interval(Some(keepalive.interval))
            .http2_keepalive_timeout(Some(keepalive.timeout))
            .max_concurrent_streams(Some(keepalive.max_streams))
            .initial_connection_window_size(CLIENT_CONNECTION_WINDOW)
            .add_routes(tonic::service::Routes::from(router.clone()))
    };
    let mut on_stop = stopped.clone();
    let shutdown = async move {
        let _ = on_stop.wait_for(|s| *s).await;
    };
    // Every connection goes through the `:authority` repair for etcd 3.4 clients.
    let served = match tls {
        None => {
            // Small request/response messages: Nagle's algorithm would hold responses back.
            let incoming = tokio_stream::StreamExt::map(
                tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
                |conn| conn.map(authority::AuthorityRepair::new),
            );
            server()
                .serve_with_incoming_shutdown(incoming, shutdown)
                .await
        }
        Some(tls) => {
            let incoming = tokio_stream::StreamExt::map(
                tls::incoming(url.clone(), listener, tls, stopped),
                |conn| conn.map(authority::AuthorityRepair::new),
            );
            server()
                .serve_with_incoming_shutdown(incoming, shutdown)
                .await
        }
    };
    served.map_err(|e| NetError::Serve {
        url,
        reason: e.to_string(),
    })
}

/// Serves the peer service until the member stops. Peers hold long-lived streams (the
/// leader's replication and call streams) whose client side stays open after this member ends
/// them, so a graceful drain would wait for the peers rather than for work: after
/// [`PEER_DRAIN`] the connections are simply closed (peers reconnect or give up on their own).
pub async fn serve_peer(
    url: String,
    listener: TcpListener,
    routes: tonic::service::Routes,
    tls: Option<Arc<tls::ServerTls>>,
    stopped: watch::Receiver<bool>,
) -> Result<(), NetError> {
    let mut on_stop = stopped.clone();
    let shutdown = async move {
        let _ = on_stop.wait_for(|s| *s).await;
    };
    let server = tonic::transport::Server::builder().add_routes(routes);
    let serve = async {
        match tls {
            None => {
                server
                    .serve_with_incoming_shutdown(
                        tonic::transport::server::TcpIncoming::from(listener)
                            .with_nodelay(Some(true)),
                        shutdown,
                    )
                    .await
            }
            Some(tls) => {
                server
                    .serve_with_incoming_shutdown(
                        tls::incoming(url.clone(), listener, tls, stopped.clone()),
                        shutdown,
                    )
                    .await
            }
        }
    };
    let mut drained = stopped.clone();
    tokio::select! {
        served = serve => served.map_err(|e| NetError::Serve {
            url: url.clone(),
            reason: e.to_string(),
        }),
        () = async move {
            let _ = drained.wait_for(|s| *s).await;
            tokio::time::sleep(PEER_DRAIN).await;
        } => Ok(()),
    }
}
