//! TLS for the client and peer listeners, and for this member's connections to its peers:
//! rustls on aws-lc-rs (the one crypto library in the tree), configured from etcd's flags.
//!
//! - Certificates, keys and CA bundles are re-read when their files change (checked at most
//!   once a second, on the next handshake), so they rotate without a restart; a change that
//!   does not load (a file half written) keeps the previous ones and is retried.
//! - A listener accepts TCP connections in one task and runs each handshake in its own task,
//!   bounded by [`HANDSHAKE_TIMEOUT`], so a slow or silent client holds up nobody. A failed
//!   handshake (plaintext to a TLS port, an unknown CA, a missing client certificate, a
//!   common name `--peer-cert-allowed-cn` does not allow) is logged with the peer's address
//!   and the reason, and the connection closed.
//! - A connection's verified client certificate common name travels with each of its
//!   requests ([`TlsInfo`] in the request's extensions): with `--client-cert-auth` it is the
//!   user of a request that carries no token, as in etcd.
//! - `--auto-tls` and `--peer-auto-tls` make a self-signed certificate with rcgen, kept in the
//!   data dir as etcd keeps its own (`fixtures/client`, `fixtures/peer`).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig, SupportedCipherSuite};
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;

/// The longest a TLS handshake may take, on either side.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How often certificate files are checked for changes, at most.
const RELOAD_CHECK: Duration = Duration::from_secs(1);

#[derive(Debug, Error)]
pub enum TlsError {
    #[error("reading {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("{0}")]
    Config(String),
}

fn read_error(path: &Path, reason: impl std::fmt::Display) -> TlsError {
    TlsError::Read {
        path: path.display().to_string(),
        reason: reason.to_string(),
    }
}

/// `--tls-min-version`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MinVersion {
    Tls12,
    Tls13,
}

impl std::str::FromStr for MinVersion {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "TLS1.2" => Ok(MinVersion::Tls12),
            "TLS1.3" => Ok(MinVersion::Tls13),
            other => Err(format!(
                "unsupported TLS version {other:?} (TLS1.2 or TLS1.3; rustls has no older ones)"
            )),
        }
    }
}

/// A listener's or a client's TLS settings, from the flags.
#[derive(Clone, Debug)]
pub struct TlsOptions {
    /// The certificate chain and key this side presents (a client side may have none).
    pub cert: Option<(PathBuf, PathBuf)>,
    /// CA bundle that verifies the other side's certificates.
    pub trusted_ca: Option<PathBuf>,
    /// Listener: require and verify a client certificate. Client: ignored.
    pub client_cert_auth: bool,
    /// Listener: only client certificates with this common name (`--peer-cert-allowed-cn`).
    pub allowed_cn: Option<String>,
    /// Client: accept any server certificate (peers with `--peer-auto-tls` and no CA, as
    /// etcd). Never for clients of the API.
    pub insecure_skip_verify: bool,
    pub min_version: MinVersion,
    /// TLS 1.2 suites allowed, by Go's names (`--cipher-suites`); empty: rustls's defaults.
    /// TLS 1.3's suites are not configurable, as in Go.
    pub cipher_suites: Vec<String>,
}

/// The aws-lc-rs provider with only the named TLS 1.2 suites (and every TLS 1.3 one).
fn provider(cipher_suites: &[String]) -> Result<Arc<CryptoProvider>, TlsError> {
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    if cipher_suites.is_empty() {
        return Ok(Arc::new(provider));
    }
    let known = |s: &SupportedCipherSuite| s.suite().as_str().unwrap_or_default().to_owned();
    let mut chosen: Vec<SupportedCipherSuite> = provider
        .cipher_suites
        .iter()
        .filter(|s| matches!(s, SupportedCipherSuite::Tls13(_)))
        .copied()
        .collect();
    for name in cipher_suites {
        // Go names the ChaCha suites without the trailing `_SHA256` rustls uses.
        let found = provider.cipher_suites.iter().find(|s| {
            let k = known(s);
            matches!(s, SupportedCipherSuite::Tls12(_))
                && (k == *name || k.strip_suffix("_SHA256") == Some(name.as_str()))
        });
        match found {
            Some(s) => chosen.push(*s),
            None => {
                return Err(TlsError::Config(format!(
                    "unsupported cipher suite {name:?} in --cipher-suites (supported: the \
                     TLS 1.2 ECDHE suites with AES-GCM or ChaCha20-Poly1305)"
                )));
            }
        }
    }
    provider.cipher_suites = chosen;
    Ok(Arc::new(provider))
}

static TLS13_ONLY: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13];

fn versions(min: MinVersion) -> &'static [&'static rustls::SupportedProtocolVersion] {
    match min {
        MinVersion::Tls12 => rustls::DEFAULT_VERSIONS,
        MinVersion::Tls13 => TLS13_ONLY,
    }
}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| read_error(path, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| read_error(path, e))?;
    if certs.is_empty() {
        return Err(read_error(path, "no PEM certificate in it"));
    }
    Ok(certs)
}

fn key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| read_error(path, e))
}

fn roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in certs(path)? {
        roots
            .add(cert)
            .map_err(|e| read_error(path, format!("not a usable CA certificate: {e}")))?;
    }
    Ok(roots)
}

/// A listener's rustls configuration, built from the files as they are now.
fn server_config(o: &TlsOptions) -> Result<ServerConfig, TlsError> {
    let provider = provider(&o.cipher_suites)?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions(o.min_version))
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let builder = if o.client_cert_auth {
        let ca = o.trusted_ca.as_ref().ok_or_else(|| {
            TlsError::Config("client certificate authentication needs a trusted CA file".into())
        })?;
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots(ca)?), provider)
            .build()
            .map_err(|e| TlsError::Config(format!("client certificate verifier: {e}")))?;
        builder.with_client_cert_verifier(verifier)
    } else {
        builder.with_no_client_auth()
    };
    let (cert, key_file) = o
        .cert
        .as_ref()
        .ok_or_else(|| TlsError::Config("a TLS listener needs a certificate and a key".into()))?;
    let mut config = builder
        .with_single_cert(certs(cert)?, key(key_file)?)
        .map_err(|e| TlsError::Config(format!("{}: {e}", cert.display())))?;
    // gRPC speaks HTTP/2; the gateway, probes and metrics also HTTP/1.1.
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// A client's rustls configuration (this member towards its peers).
fn client_config(o: &TlsOptions) -> Result<ClientConfig, TlsError> {
    let provider = provider(&o.cipher_suites)?;
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions(o.min_version))
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let builder = match (&o.trusted_ca, o.insecure_skip_verify) {
        (Some(ca), _) => builder.with_root_certificates(roots(ca)?),
        (None, true) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyServer(provider))),
        (None, false) => {
            return Err(TlsError::Config(
                "connecting to peers over TLS needs --peer-trusted-ca-file (or --peer-auto-tls)"
                    .into(),
            ));
        }
    };
    let mut config = match &o.cert {
        Some((cert, key_file)) => builder
            .with_client_auth_cert(certs(cert)?, key(key_file)?)
            .map_err(|e| TlsError::Config(format!("{}: {e}", cert.display())))?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// Accepts any server certificate (still checking the handshake's signatures): for peers
/// with `--peer-auto-tls` and no CA, whose certificates nobody can verify (etcd does the same).
#[derive(Debug)]
struct AnyServer(Arc<CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A rustls configuration kept in step with its files.
pub struct Reloading<T> {
    options: TlsOptions,
    build: fn(&TlsOptions) -> Result<T, TlsError>,
    state: Mutex<ReloadState<T>>,
}

struct ReloadState<T> {
    current: Arc<T>,
    stamps: Vec<Option<SystemTime>>,
    checked: Instant,
}

impl<T> std::fmt::Debug for Reloading<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reloading")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// A listener's configuration.
pub type ServerTls = Reloading<ServerConfig>;

/// Peer TLS: the peer listener's, and this member's towards its peers.
#[derive(Clone, Debug)]
pub struct PeerTls {
    pub server: Arc<ServerTls>,
    pub client: Arc<ClientTls>,
}
/// This member's configuration towards its peers.
pub type ClientTls = Reloading<ClientConfig>;

impl Reloading<ServerConfig> {
    pub fn server(options: TlsOptions) -> Result<Arc<Self>, TlsError> {
        Self::new(options, server_config)
    }
}

impl Reloading<ClientConfig> {
    pub fn client(options: TlsOptions) -> Result<Arc<Self>, TlsError> {
        Self::new(options, client_config)
    }
}

impl<T> Reloading<T> {
    fn new(
        options: TlsOptions,
        build: fn(&TlsOptions) -> Result<T, TlsError>,
    ) -> Result<Arc<Self>, TlsError> {
        let current = Arc::new(build(&options)?);
        let stamps = stamps(&options);
        Ok(Arc::new(Reloading {
            options,
            build,
            state: Mutex::new(ReloadState {
                current,
                stamps,
                checked: Instant::now(),
            }),
        }))
    }

    pub fn options(&self) -> &TlsOptions {
        &self.options
    }

    /// The configuration for the next handshake: rebuilt first if a file changed since it
    /// was built (checked at most once a second).
    pub fn current(&self) -> Arc<T> {
        let mut state = self.state.lock().expect("TLS reload lock poisoned");
        if state.checked.elapsed() >= RELOAD_CHECK {
            state.checked = Instant::now();
            let now = stamps(&self.options);
            if now != state.stamps {
                match (self.build)(&self.options) {
                    Ok(config) => {
                        state.current = Arc::new(config);
                        state.stamps = now;
                        tracing::info!(files = ?files(&self.options), "reloaded TLS certificates");
                    }
                    Err(e) => tracing::warn!(
                        "TLS files changed but do not load ({e}); keeping the previous ones"
                    ),
                }
            }
        }
        state.current.clone()
    }
}

fn files(o: &TlsOptions) -> Vec<&Path> {
    let mut files: Vec<&Path> = Vec::new();
    if let Some((cert, key)) = &o.cert {
        files.push(cert);
        files.push(key);
    }
    if let Some(ca) = &o.trusted_ca {
        files.push(ca);
    }
    files
}

fn stamps(o: &TlsOptions) -> Vec<Option<SystemTime>> {
    files(o)
        .iter()
        .map(|f| std::fs::metadata(f).and_then(|m| m.modified()).ok())
        .collect()
}

/// What a TLS connection tells each of its requests.
#[derive(Clone, Debug, Default)]
pub struct TlsInfo {
    pub remote: Option<std::net::SocketAddr>,
    /// The common name of the client's verified certificate, if it sent one.
    pub common_name: Option<String>,
}

/// The subject common name of a DER certificate.
pub fn common_name(cert: &CertificateDer<'_>) -> Option<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let cn = parsed.subject().iter_common_name().next()?;
    cn.as_str().ok().map(str::to_owned)
}

/// A server-side TLS connection and what it told about its client.
pub struct TlsConn {
    stream: tokio_rustls::server::TlsStream<TcpStream>,
    info: TlsInfo,
}

impl AsyncRead for TlsConn {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

impl tonic::transport::server::Connected for TlsConn {
    type ConnectInfo = TlsInfo;

    fn connect_info(&self) -> TlsInfo {
        self.info.clone()
    }
}

/// Accepts TLS connections on `listener` until `stopped` turns true; each handshake runs in
/// its own task (bounded), and completed connections come out of the returned stream.
pub fn incoming(
    url: String,
    listener: TcpListener,
    tls: Arc<ServerTls>,
    mut stopped: watch::Receiver<bool>,
) -> ReceiverStream<std::io::Result<TlsConn>> {
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let (tcp, remote) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of descriptors and the like: pause rather than spin.
                        tracing::warn!(%url, "accepting a connection failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                _ = async { stopped.wait_for(|s| *s).await.map(|_| ()) } => return,
                () = tx.closed() => return,
            };
            let _ = tcp.set_nodelay(true);
            let (tls, tx, url) = (tls.clone(), tx.clone(), url.clone());
            tokio::spawn(async move {
                match handshake(&tls, tcp, remote).await {
                    Ok(conn) => {
                        let _ = tx.send(Ok(conn)).await;
                    }
                    Err(reason) => {
                        tracing::warn!(%url, client = %remote, "TLS connection refused: {reason}")
                    }
                }
            });
        }
    });
    ReceiverStream::new(rx)
}

async fn handshake(
    tls: &ServerTls,
    tcp: TcpStream,
    remote: std::net::SocketAddr,
) -> Result<TlsConn, String> {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls.current());
    let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Err(_) => return Err(format!("no TLS handshake within {HANDSHAKE_TIMEOUT:?}")),
        Ok(Err(e)) => return Err(explain(&e)),
        Ok(Ok(stream)) => stream,
    };
    let common_name = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|certs| certs.first())
        .and_then(common_name);
    if let Some(allowed) = &tls.options().allowed_cn
        && common_name.as_deref() != Some(allowed.as_str())
    {
        return Err(format!(
            "client certificate common name {common_name:?} is not the allowed {allowed:?}"
        ));
    }
    Ok(TlsConn {
        stream,
        info: TlsInfo {
            remote: Some(remote),
            common_name,
        },
    })
}

/// A handshake failure in words an operator can act on.
fn explain(e: &std::io::Error) -> String {
    let text = e.to_string();
    if text.contains("InvalidContentType") || text.contains("corrupt message") {
        format!("the client did not speak TLS (plaintext to a TLS port?): {text}")
    } else {
        format!("handshake failed: {text}")
    }
}

/// Connects to a peer at `host:port`, over TLS when `tls` is given (the peer URL was
/// `https://`), bounded by `timeout`.
pub async fn connect(
    host: &str,
    port: u16,
    tls: Option<&ClientTls>,
    timeout: Duration,
) -> std::io::Result<PeerStream> {
    let connect = async {
        let tcp = TcpStream::connect((host, port)).await?;
        tcp.set_nodelay(true)?;
        let Some(tls) = tls else {
            return Ok(PeerStream::Plain(tcp));
        };
        let name = ServerName::try_from(host.to_owned())
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        let stream = tokio_rustls::TlsConnector::from(tls.current())
            .connect(name, tcp)
            .await?;
        Ok(PeerStream::Tls(Box::new(stream)))
    };
    tokio::time::timeout(timeout, connect)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))?
}

/// This member's connection to a peer.
pub enum PeerStream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl AsyncRead for PeerStream {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            PeerStream::Plain(s) => std::pin::Pin::new(s).poll_read(cx, buf),
            PeerStream::Tls(s) => std::pin::Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for PeerStream {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        match self.get_mut() {
            PeerStream::Plain(s) => std::pin::Pin::new(s).poll_write(cx, buf),
            PeerStream::Tls(s) => std::pin::Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            PeerStream::Plain(s) => std::pin::Pin::new(s).poll_flush(cx),
            PeerStream::Tls(s) => std::pin::Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            PeerStream::Plain(s) => std::pin::Pin::new(s).poll_shutdown(cx),
            PeerStream::Tls(s) => std::pin::Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// `--auto-tls`/`--peer-auto-tls`: the self-signed certificate and key in `dir`, made (valid
/// `validity_years` years, for `hosts`) if they are not there yet.
pub fn self_signed(
    dir: &Path,
    hosts: &[String],
    validity_years: u32,
) -> Result<(PathBuf, PathBuf), TlsError> {
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    if cert_path.exists() && key_path.exists() {
        return Ok((cert_path, key_path));
    }
    std::fs::create_dir_all(dir).map_err(|e| read_error(dir, e))?;
    let mut params = rcgen::CertificateParams::new(hosts.to_vec())
        .map_err(|e| TlsError::Config(format!("self-signed certificate: {e}")))?;
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, "cairn");
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(365 * i64::from(validity_years));
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|e| TlsError::Config(format!("self-signed key: {e}")))?;
    let cert = params
        .self_signed(&key)
        .map_err(|e| TlsError::Config(format!("self-signed certificate: {e}")))?;
    write_private(&key_path, key.serialize_pem().as_bytes())?;
    std::fs::write(&cert_path, cert.pem()).map_err(|e| read_error(&cert_path, e))?;
    Ok((cert_path, key_path))
}

/// Writes a private key readable by its owner only.
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), TlsError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| read_error(path, e))?;
    file.write_all(bytes).map_err(|e| read_error(path, e))
}
