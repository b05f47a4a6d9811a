//! `lease grant|revoke|timetolive|list|keep-alive`: etcdctl's lease commands over etcd's Lease
//! service. Lease IDs are hex on the command line and in simple output, as etcdctl has them.

use std::io::{self, Write};

use cairn_proto::etcdserverpb::{
    LeaseGrantRequest, LeaseGrantResponse, LeaseKeepAliveRequest, LeaseKeepAliveResponse,
    LeaseLeasesRequest, LeaseLeasesResponse, LeaseRevokeRequest, LeaseRevokeResponse,
    LeaseTimeToLiveRequest, LeaseTimeToLiveResponse, ResponseHeader,
};
use futures::StreamExt;
use prost::Message;

use crate::cli::LeaseCommand;
use crate::endpoint::Connection;
use crate::error::Error;
use crate::keys::go_parse_error;
use crate::print::gojson::{GoJson, Obj};
use crate::print::{Printable, Shown, Style, fields_header, go_quote, header_fields};
use crate::run::Session;

pub async fn lease(
    session: &Session,
    command: LeaseCommand,
    out: &mut dyn Write,
) -> Result<(), Error> {
    let printer = session.printer;
    match command {
        LeaseCommand::Grant { args } => {
            let [ttl] = args.as_slice() else {
                return Err(Error::BadArgs(
                    "lease grant command needs TTL argument".to_owned(),
                ));
            };
            let ttl: i64 = ttl.parse().map_err(|e| {
                Error::BadArgs(format!("bad TTL ({})", go_parse_error("ParseInt", ttl, &e)))
            })?;
            let connection = session.dial().await?;
            let request = connection.request(LeaseGrantRequest { ttl, id: 0 });
            let response = connection
                .deadline(connection.lease().lease_grant(request))
                .await
                .map_err(|e| Error::Failed(format!("failed to grant lease ({e})")))?;
            printer.print(out, &LeaseTtl::granted(response))
        }
        LeaseCommand::Revoke { args } => {
            let id = one_lease_id(&args, "lease revoke command needs 1 argument")?;
            let connection = session.dial().await?;
            let request = connection.request(LeaseRevokeRequest { id });
            let response = connection
                .deadline(connection.lease().lease_revoke(request))
                .await
                .map_err(|e| Error::Failed(format!("failed to revoke lease ({e})")))?;
            let simple = |out: &mut dyn Write| writeln!(out, "lease {id:016x} revoked");
            let fields = |out: &mut dyn Write| fields_header(out, response.header.as_ref());
            printer.print(
                out,
                &Shown {
                    response: &response,
                    simple: &simple,
                    fields: Some(&fields),
                    // etcdctl hands the printer a value, not the message: no protobuf.
                    protobuf: false,
                },
            )
        }
        LeaseCommand::Timetolive { args, keys } => {
            let id = one_lease_id(&args, "lease timetolive command needs lease ID as argument")?;
            let connection = session.dial().await?;
            let request = connection.request(LeaseTimeToLiveRequest { id, keys });
            let response = connection
                .deadline(connection.lease().lease_time_to_live(request))
                .await
                .map_err(bad_connection)?;
            printer.print(out, &TimeToLive { response, keys })
        }
        LeaseCommand::List => {
            let connection = session.dial().await?;
            let request = connection.request(LeaseLeasesRequest {});
            let response = connection
                .deadline(connection.lease().lease_leases(request))
                .await
                .map_err(bad_connection)?;
            printer.print(out, &Leases(response))
        }
        LeaseCommand::KeepAlive { args, once } => {
            let id = one_lease_id(&args, "lease keep-alive command needs lease ID as argument")?;
            let connection = session.dial().await?;
            keep_alive(session, &connection, id, once, out).await
        }
    }
}

/// etcdctl exits with status 2 when these lease calls fail.
fn bad_connection(error: Error) -> Error {
    Error::BadConnection(error.to_string())
}

/// The one lease ID a command takes, or etcdctl's `usage` error.
fn one_lease_id(args: &[String], usage: &str) -> Result<i64, Error> {
    match args {
        [id] => lease_id(id),
        _ => Err(Error::BadArgs(usage.to_owned())),
    }
}

/// etcdctl's lease ID argument: hex.
fn lease_id(text: &str) -> Result<i64, Error> {
    i64::from_str_radix(text, 16).map_err(|e| {
        Error::BadArgs(format!(
            "bad lease ID arg ({}), expecting ID in Hex",
            go_parse_error("ParseInt", text, &e)
        ))
    })
}

/// A keep-alive stream for one lease: opened with a first renewal on its way; `ping` sends
/// the next, `next` waits for an answer.
pub(crate) struct Renewals {
    id: i64,
    sender: tokio::sync::mpsc::Sender<LeaseKeepAliveRequest>,
    responses: tonic::Streaming<LeaseKeepAliveResponse>,
}

impl Renewals {
    /// Opens the stream (within the command timeout) and sends the first renewal.
    pub(crate) async fn open(connection: &Connection, id: i64) -> Result<Self, Error> {
        let (sender, receiver) = tokio::sync::mpsc::channel::<LeaseKeepAliveRequest>(1);
        // The first ping goes out before the stream is opened.
        sender
            .send(LeaseKeepAliveRequest { id })
            .await
            .map_err(|_| Error::Protocol("the keep-alive stream closed early".to_owned()))?;
        let requests = tokio_stream::wrappers::ReceiverStream::new(receiver);
        let responses = connection
            .deadline(
                connection
                    .lease()
                    .lease_keep_alive(connection.stream_request(requests)),
            )
            .await?;
        Ok(Renewals {
            id,
            sender,
            responses,
        })
    }

    /// Sends one more renewal; false once the stream is gone.
    pub(crate) async fn ping(&self) -> bool {
        self.sender
            .send(LeaseKeepAliveRequest { id: self.id })
            .await
            .is_ok()
    }

    /// The next answer, `None` when the server ends the stream.
    pub(crate) async fn next(&mut self) -> Option<Result<LeaseKeepAliveResponse, tonic::Status>> {
        self.responses.next().await
    }
}

/// Renews lease `id` once, or every third of its TTL until it expires or the user stops it.
async fn keep_alive(
    session: &Session,
    connection: &Connection,
    id: i64,
    once: bool,
    out: &mut dyn Write,
) -> Result<(), Error> {
    let mut renewals = Renewals::open(connection, id)
        .await
        .map_err(bad_connection)?;
    loop {
        // clientv3's KeepAliveOnce waits without a bound; Cairn's waits the command timeout.
        let next = if once {
            tokio::time::timeout(connection.command_timeout(), renewals.next())
                .await
                .map_err(|_| Error::DeadlineExceeded)?
        } else {
            renewals.next().await
        };
        let next = next.transpose().map_err(|e| bad_connection(e.into()))?;
        let Some(response) = next else { break };
        if response.ttl <= 0 {
            if once {
                // clientv3's KeepAliveOnce: a lease the server no longer has.
                return Err(Error::BadConnection(
                    "etcdserver: requested lease not found".to_owned(),
                ));
            }
            break;
        }
        session
            .printer
            .print(out, &LeaseTtl::kept_alive(response))?;
        out.flush()?;
        if once {
            return Ok(());
        }
        let wait = std::time::Duration::from_secs((response.ttl as u64 / 3).max(1));
        tokio::time::sleep(wait).await;
        if !renewals.ping().await {
            break;
        }
    }
    if session.printer.is_simple() {
        writeln!(out, "lease {id:016x} expired or revoked.")?;
    }
    Ok(())
}

/// etcdctl's protobuf output of clientv3's lease responses: they embed the header, whose
/// `Marshal` Go promotes, so only the header is encoded.
fn header_bytes(header: Option<&ResponseHeader>) -> Option<Vec<u8>> {
    Some(header.map(Message::encode_to_vec).unwrap_or_default())
}

/// clientv3's `LeaseGrantResponse` (the header embedded, then `ID`, `TTL`, `Error`) and
/// `LeaseKeepAliveResponse` (the same without `Error`), with their simple line.
struct LeaseTtl {
    header: Option<ResponseHeader>,
    id: i64,
    ttl: i64,
    /// `Some` for a grant.
    error: Option<String>,
    line: String,
}

impl LeaseTtl {
    fn granted(r: LeaseGrantResponse) -> Self {
        LeaseTtl {
            line: format!("lease {:016x} granted with TTL({}s)", r.id, r.ttl),
            header: r.header,
            id: r.id,
            ttl: r.ttl,
            error: Some(r.error),
        }
    }

    fn kept_alive(r: LeaseKeepAliveResponse) -> Self {
        LeaseTtl {
            line: format!("lease {:016x} keepalived with TTL({})", r.id, r.ttl),
            header: r.header,
            id: r.id,
            ttl: r.ttl,
            error: None,
        }
    }
}

impl Printable for LeaseTtl {
    fn simple(&self, out: &mut dyn Write, _style: Style) -> io::Result<()> {
        writeln!(out, "{}", self.line)
    }

    fn json(&self) -> Option<String> {
        let mut out = String::new();
        let mut obj = Obj::open(&mut out);
        header_fields(&mut obj, self.header.as_ref());
        obj.int_always("ID", self.id).int_always("TTL", self.ttl);
        if let Some(error) = &self.error {
            obj.str_always("Error", error);
        }
        obj.close();
        Some(out)
    }

    fn fields(&self, out: &mut dyn Write) -> Option<io::Result<()>> {
        Some((|| {
            fields_header(out, self.header.as_ref())?;
            writeln!(out, "\"ID\" : {}", self.id)?;
            writeln!(out, "\"TTL\" : {}", self.ttl)
        })())
    }

    fn protobuf(&self) -> Option<Vec<u8>> {
        header_bytes(self.header.as_ref())
    }
}

/// clientv3's `LeaseTimeToLiveResponse`: the header embedded, then `id`, `ttl`,
/// `granted-ttl`, `keys`.
struct TimeToLive {
    response: LeaseTimeToLiveResponse,
    keys: bool,
}

impl Printable for TimeToLive {
    fn simple(&self, out: &mut dyn Write, _style: Style) -> io::Result<()> {
        let r = &self.response;
        if r.granted_ttl == 0 && r.ttl == -1 {
            return writeln!(out, "lease {:016x} already expired", r.id);
        }
        write!(
            out,
            "lease {:016x} granted with TTL({}s), remaining({}s)",
            r.id, r.granted_ttl, r.ttl
        )?;
        if self.keys {
            let keys: Vec<String> = r
                .keys
                .iter()
                .map(|k| String::from_utf8_lossy(k).into_owned())
                .collect();
            write!(out, ", attached keys([{}])", keys.join(" "))?;
        }
        writeln!(out)
    }

    fn json(&self) -> Option<String> {
        let r = &self.response;
        let mut out = String::new();
        let mut obj = Obj::open(&mut out);
        header_fields(&mut obj, r.header.as_ref());
        obj.int_always("id", r.id)
            .int_always("ttl", r.ttl)
            .int_always("granted-ttl", r.granted_ttl)
            .bytes_list_always("keys", &r.keys);
        obj.close();
        Some(out)
    }

    fn fields(&self, out: &mut dyn Write) -> Option<io::Result<()>> {
        let r = &self.response;
        Some((|| {
            fields_header(out, r.header.as_ref())?;
            writeln!(out, "\"ID\" : {}", r.id)?;
            writeln!(out, "\"TTL\" : {}", r.ttl)?;
            writeln!(out, "\"GrantedTTL\" : {}", r.granted_ttl)?;
            for key in &r.keys {
                writeln!(out, "\"Key\" : {}", go_quote(key))?;
            }
            Ok(())
        })())
    }

    fn protobuf(&self) -> Option<Vec<u8>> {
        header_bytes(self.response.header.as_ref())
    }
}

/// clientv3's `LeaseLeasesResponse`: the header embedded, then `leases: [{id}]`.
struct Leases(LeaseLeasesResponse);

impl Printable for Leases {
    fn simple(&self, out: &mut dyn Write, _style: Style) -> io::Result<()> {
        writeln!(out, "found {} leases", self.0.leases.len())?;
        for lease in &self.0.leases {
            writeln!(out, "{:016x}", lease.id)?;
        }
        Ok(())
    }

    fn json(&self) -> Option<String> {
        let mut out = String::new();
        let mut obj = Obj::open(&mut out);
        header_fields(&mut obj, self.0.header.as_ref());
        let mut leases = String::from("[");
        for (i, lease) in self.0.leases.iter().enumerate() {
            if i > 0 {
                leases.push(',');
            }
            leases.push_str(&format!("{{\"id\":{}}}", lease.id));
        }
        leases.push(']');
        // clientv3 makes the slice itself: `[]` when empty, never `null`.
        obj.raw("leases", &leases);
        obj.close();
        Some(out)
    }

    fn fields(&self, out: &mut dyn Write) -> Option<io::Result<()>> {
        Some((|| {
            fields_header(out, self.0.header.as_ref())?;
            for lease in &self.0.leases {
                writeln!(out, "\"ID\" : {}", lease.id)?;
            }
            Ok(())
        })())
    }

    fn protobuf(&self) -> Option<Vec<u8>> {
        header_bytes(self.0.header.as_ref())
    }
}

impl GoJson for LeaseRevokeResponse {
    fn go_json(&self, out: &mut String) {
        let mut obj = Obj::open(out);
        obj.msg("header", self.header.as_ref());
        obj.close();
    }
}
