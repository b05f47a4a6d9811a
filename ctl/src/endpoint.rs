//! Dialing the cluster and bounding each call, as etcdctl's `--endpoints`, `--dial-timeout` and
//! `--command-timeout`.
//!
//! Endpoints are tried in the order given; the first that completes the HTTP/2 handshake within
//! the dial timeout serves the whole command. Every call gets the command timeout, both as a
//! local deadline and as the `grpc-timeout` the server sees. `https://` endpoints use TLS (`tls.rs`).

use std::error::Error as StdError;
use std::future::Future;
use std::time::{Duration, Instant};

use cairn_proto::cairn_plugin::plugin_client::PluginClient;
use cairn_proto::etcdserverpb::auth_client::AuthClient;
use cairn_proto::etcdserverpb::cluster_client::ClusterClient;
use cairn_proto::etcdserverpb::kv_client::KvClient;
use cairn_proto::etcdserverpb::lease_client::LeaseClient;
use cairn_proto::etcdserverpb::maintenance_client::MaintenanceClient;
use cairn_proto::etcdserverpb::watch_client::WatchClient;
use cairn_proto::v3electionpb::election_client::ElectionClient;
use cairn_proto::v3lockpb::lock_client::LockClient;
use tonic::Code;
use tonic::transport::{Channel, Endpoint};

use crate::error::Error;

/// Largest response accepted: a big `get --prefix` in a txn must not fail at gRPC's default
/// 4 MiB, yet memory stays bounded.
pub const MAX_RESPONSE_BYTES: usize = 64 << 20;

/// A channel to one member, the deadline each call gets and the auth token each carries.
#[derive(Debug, Clone)]
pub struct Connection {
    channel: Channel,
    command_timeout: Duration,
    token: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
}

/// `host:port`, `http://host:port` or `https://host:port` as the URI tonic dials (always
/// `http://`: TLS, if any, is the connector's) and whether the endpoint is TLS.
pub fn endpoint_uri(endpoint: &str) -> Result<(String, bool), Error> {
    let bad = |reason: &str| Error::Endpoint {
        endpoint: endpoint.to_owned(),
        reason: reason.to_owned(),
    };
    let trimmed = endpoint.trim().trim_end_matches('/');
    if trimmed.is_empty() {
        return Err(bad("empty"));
    }
    if let Some(rest) = trimmed.strip_prefix("https://") {
        return Ok((format!("http://{rest}"), true));
    }
    if trimmed.starts_with("http://") {
        return Ok((trimmed.to_owned(), false));
    }
    if trimmed.contains("://") {
        return Err(bad("only http:// and https:// endpoints are supported"));
    }
    Ok((format!("http://{trimmed}"), false))
}

impl Connection {
    /// Connects to the first of `endpoints` that answers within `dial_timeout`.
    pub async fn dial(
        endpoints: &[String],
        tls: &crate::tls::TlsArgs,
        dial_timeout: Duration,
        command_timeout: Duration,
    ) -> Result<Self, Error> {
        Self::dial_with(endpoints, tls, dial_timeout, command_timeout, None).await
    }

    /// [`Connection::dial`], with HTTP/2 keepalive pings (`--keepalive-time`,
    /// `--keepalive-timeout`) when given.
    pub async fn dial_with(
        endpoints: &[String],
        tls: &crate::tls::TlsArgs,
        dial_timeout: Duration,
        command_timeout: Duration,
        keepalive: Option<(Duration, Duration)>,
    ) -> Result<Self, Error> {
        let mut failures = Vec::new();
        for endpoint in endpoints {
            let (uri, secure) = endpoint_uri(endpoint)?;
            let dialer = Endpoint::from_shared(uri.clone()).map_err(|error| Error::Endpoint {
                endpoint: endpoint.clone(),
                reason: error_chain(&error),
            })?;
            let mut dialer = dialer.connect_timeout(dial_timeout).tcp_nodelay(true);
            if let Some((interval, timeout)) = keepalive {
                dialer = dialer
                    .http2_keep_alive_interval(interval)
                    .keep_alive_timeout(timeout)
                    .keep_alive_while_idle(true);
            }
            let connect = async {
                if secure {
                    let connector = crate::tls::Connector::new(tls, &uri)?;
                    dialer
                        .connect_with_connector(connector)
                        .await
                        .map_err(|e| Error::Connect(format!("{endpoint}: {}", error_chain(&e))))
                } else {
                    dialer
                        .connect()
                        .await
                        .map_err(|e| Error::Connect(format!("{endpoint}: {}", error_chain(&e))))
                }
            };
            match tokio::time::timeout(dial_timeout, connect).await {
                Ok(Ok(channel)) => {
                    return Ok(Self {
                        channel,
                        command_timeout,
                        token: None,
                    });
                }
                Ok(Err(Error::Connect(failure))) => failures.push(failure),
                Ok(Err(other)) => return Err(other),
                Err(_) => failures.push(format!(
                    "{endpoint}: no answer within the dial timeout ({dial_timeout:?})"
                )),
            }
        }
        if failures.is_empty() {
            return Err(Error::Usage("no endpoints given".to_owned()));
        }
        Err(Error::Connect(failures.join("; ")))
    }

    pub fn kv(&self) -> KvClient<Channel> {
        KvClient::new(self.channel.clone()).max_decoding_message_size(MAX_RESPONSE_BYTES)
    }

    pub fn auth(&self) -> AuthClient<Channel> {
        AuthClient::new(self.channel.clone()).max_decoding_message_size(MAX_RESPONSE_BYTES)
    }

    pub fn lease(&self) -> LeaseClient<Channel> {
        LeaseClient::new(self.channel.clone()).max_decoding_message_size(MAX_RESPONSE_BYTES)
    }

    pub fn cluster(&self) -> ClusterClient<Channel> {
        ClusterClient::new(self.channel.clone()).max_decoding_message_size(MAX_RESPONSE_BYTES)
    }

    pub fn lock(&self) -> LockClient<Channel> {
        LockClient::new(self.channel.clone()).max_decoding_message_size(MAX_RESPONSE_BYTES)
    }

    pub fn election(&self) -> ElectionClient<Channel> {
        ElectionClient::new(self.channel.clone()).max_decoding_message_size(MAX_RESPONSE_BYTES)
    }

    pub fn watch(&self) -> WatchClient<Channel> {
        WatchClient::new(self.channel.clone()).max_decoding_message_size(MAX_RESPONSE_BYTES)
    }

    /// `message` as a request that carries the token but no deadline: a stream that lasts
    /// as long as the user wants.
    pub fn stream_request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        if let Some(token) = &self.token {
            request.metadata_mut().insert("token", token.clone());
        }
        request
    }

    pub fn maintenance(&self) -> MaintenanceClient<Channel> {
        MaintenanceClient::new(self.channel.clone()).max_decoding_message_size(MAX_RESPONSE_BYTES)
    }

    /// This connection with another deadline for each call.
    pub fn with_command_timeout(&self, timeout: Duration) -> Connection {
        Connection {
            command_timeout: timeout,
            ..self.clone()
        }
    }

    /// `--command-timeout`.
    pub fn command_timeout(&self) -> Duration {
        self.command_timeout
    }

    pub fn plugin(&self) -> PluginClient<Channel> {
        PluginClient::new(self.channel.clone()).max_decoding_message_size(MAX_RESPONSE_BYTES)
    }

    /// `message` as a request that tells the server the command timeout and carries the
    /// token, if any.
    pub fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.set_timeout(self.command_timeout);
        if let Some(token) = &self.token {
            request.metadata_mut().insert("token", token.clone());
        }
        request
    }

    /// Authenticates as `name` (etcdctl's `--user`); the token then goes with every request.
    /// A cluster with authentication off answers "authentication is not enabled": the
    /// connection is then used as it is, as etcd's client does.
    pub async fn authenticate(mut self, name: String, password: String) -> Result<Self, Error> {
        let request =
            self.request(cairn_proto::etcdserverpb::AuthenticateRequest { name, password });
        match self.deadline(self.auth().authenticate(request)).await {
            Ok(response) => {
                let token = response.token.parse().map_err(|_| {
                    Error::Connect("the server sent an auth token that is not ASCII".to_owned())
                })?;
                self.token = Some(token);
                Ok(self)
            }
            Err(Error::Status(message)) if message.ends_with("authentication is not enabled") => {
                Ok(self)
            }
            Err(e) => Err(e),
        }
    }

    /// Runs one call under the command timeout; a refusal becomes the server's message.
    pub async fn deadline<T>(
        &self,
        call: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    ) -> Result<T, Error> {
        let started = Instant::now();
        match tokio::time::timeout(self.command_timeout, call).await {
            Ok(Ok(response)) => Ok(response.into_inner()),
            // A server that honours `grpc-timeout` may give up first, as DEADLINE_EXCEEDED or
            // (tonic's) CANCELLED: the same deadline, so the same message.
            Ok(Err(status))
                if status.code() == Code::DeadlineExceeded
                    || (status.code() == Code::Cancelled
                        && started.elapsed() >= self.command_timeout) =>
            {
                Err(Error::DeadlineExceeded)
            }
            Ok(Err(status)) => Err(status.into()),
            Err(_) => Err(Error::DeadlineExceeded),
        }
    }
}

/// An error and its sources on one line: tonic's "transport error" alone says nothing, its
/// source ("Connection refused") does.
fn error_chain(error: &dyn StdError) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}
