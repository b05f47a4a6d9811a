//! `lock` and `elect`: etcdctl's lock and election commands. Locking and campaigning go
//! through etcd's Lock and Election services (the server runs the recipe etcdctl runs
//! client-side: a lease-backed key under the name, the lowest creation revision wins);
//! `elect -l` observes with the client-side recipe etcdctl uses, so that it prints what
//! etcdctl prints, leader by leader.
//!
//! Each command holds a session: a lease kept alive every third of its TTL. A held lock or a
//! won election lasts until SIGINT or SIGTERM (then it is released) or until the session's
//! lease is lost (then the command fails, as etcdctl's does).

use std::io::Write;
use std::time::Duration;

use cairn_proto::etcdserverpb::{
    LeaseGrantRequest, LeaseRevokeRequest, RangeRequest, RangeResponse, ResponseHeader,
    range_request,
};
use cairn_proto::mvccpb::{KeyValue, event::EventType};
use cairn_proto::v3electionpb::{CampaignRequest, ResignRequest};
use cairn_proto::v3lockpb::{LockRequest, UnlockRequest};
use tokio::sync::oneshot;

use crate::cli::{ElectArgs, LockArgs};
use crate::endpoint::Connection;
use crate::error::Error;
use crate::lease::Renewals;
use crate::run::Session;

/// etcd's concurrency sessions default to a 60 s TTL (`elect`); `lock --ttl` sets its own.
const SESSION_TTL: i64 = 60;

/// A lease kept alive in the background.
struct LeaseSession {
    id: i64,
    keeper: tokio::task::JoinHandle<()>,
}

impl LeaseSession {
    /// Grants the lease and starts keeping it alive; the receiver fires when it is lost.
    async fn start(
        connection: &Connection,
        ttl: i64,
    ) -> Result<(Self, oneshot::Receiver<()>), Error> {
        let granted = connection
            .deadline(
                connection
                    .lease()
                    .lease_grant(connection.request(LeaseGrantRequest { ttl, id: 0 })),
            )
            .await?;
        let id = granted.id;
        let (expire, expired) = oneshot::channel();
        let stream_connection = connection.clone();
        let keeper = tokio::spawn(async move {
            let pings = async {
                let mut renewals = Renewals::open(&stream_connection, id).await.ok()?;
                loop {
                    let answer = tokio::time::timeout(
                        Duration::from_secs(ttl.max(1) as u64),
                        renewals.next(),
                    )
                    .await
                    .ok()??
                    .ok()?;
                    if answer.ttl <= 0 {
                        return None::<()>;
                    }
                    tokio::time::sleep(Duration::from_secs((answer.ttl as u64 / 3).max(1))).await;
                    if !renewals.ping().await {
                        return None;
                    }
                }
            };
            pings.await;
            let _ = expire.send(());
        });
        Ok((LeaseSession { id, keeper }, expired))
    }

    /// Stops the keep-alives and revokes the lease (best effort: it expires anyway).
    async fn close(self, connection: &Connection) {
        self.keeper.abort();
        let request = connection.request(LeaseRevokeRequest { id: self.id });
        let _ = connection
            .deadline(connection.lease().lease_revoke(request))
            .await;
    }
}

/// Resolves on SIGINT or SIGTERM.
async fn interrupted() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate => {}
    }
}

async fn get_key(connection: &Connection, key: &[u8]) -> Result<RangeResponse, Error> {
    let request = connection.request(RangeRequest {
        key: key.to_vec(),
        ..RangeRequest::default()
    });
    connection.deadline(connection.kv().range(request)).await
}

pub async fn lock(session: &Session, args: LockArgs, out: &mut dyn Write) -> Result<(), Error> {
    let Some((name, command)) = args.args.split_first() else {
        return Err(Error::BadArgs(
            "lock takes a lock name argument and an optional command to execute".to_owned(),
        ));
    };
    // `lock L -- cmd` and `lock L cmd` run the same command (clap keeps the `--`).
    let command = match command.split_first() {
        Some((separator, rest)) if separator == "--" => rest,
        _ => command,
    };
    let connection = session.dial().await?;
    let (lease, expired) = LeaseSession::start(&connection, args.ttl).await?;
    let request = connection.stream_request(LockRequest {
        name: name.clone().into_bytes(),
        lease: lease.id,
    });
    let mut lock_client = connection.lock();
    let locked = tokio::select! {
        locked = lock_client.lock(request) => locked?.into_inner(),
        _ = interrupted() => {
            lease.close(&connection).await;
            return Ok(());
        }
    };
    let key = locked.key;
    let revision = locked.header.map(|h| h.revision).unwrap_or(0);
    let unlock = |connection: &Connection, key: Vec<u8>| {
        let request = connection.request(UnlockRequest { key });
        let connection = connection.clone();
        async move {
            connection
                .deadline(connection.lock().unlock(request))
                .await
                .map(|_| ())
        }
    };
    if let Some((program, program_args)) = command.split_first() {
        out.flush()?;
        let status = tokio::process::Command::new(program)
            .args(program_args)
            .env("ETCD_LOCK_KEY", String::from_utf8_lossy(&key).into_owned())
            .env("ETCD_LOCK_REV", revision.to_string())
            .status()
            .await;
        let unlocked = unlock(&connection, key).await;
        lease.close(&connection).await;
        let status = status.map_err(|e| Error::Failed(e.to_string()))?;
        if !status.success() {
            return Err(Error::Failed(match status.code() {
                Some(code) => format!("exit status {code}"),
                None => "signal: killed".to_owned(),
            }));
        }
        return unlocked;
    }
    let held = get_key(&connection, &key).await?;
    if held.kvs.is_empty() {
        return Err(Error::Failed("lock lost on init".to_owned()));
    }
    session.printer.print(out, &held)?;
    out.flush()?;
    tokio::select! {
        _ = interrupted() => {
            let unlocked = unlock(&connection, key).await;
            lease.close(&connection).await;
            unlocked
        }
        _ = expired => Err(Error::Failed("session expired".to_owned())),
    }
}

pub async fn elect(session: &Session, args: ElectArgs, out: &mut dyn Write) -> Result<(), Error> {
    match (args.args.as_slice(), args.listen) {
        ([name], true) => observe(session, name, out).await,
        ([_], false) => Err(Error::BadArgs(
            "no proposal argument but -l not set".to_owned(),
        )),
        ([_, _], true) => Err(Error::BadArgs("proposal given but -l is set".to_owned())),
        ([name, proposal], false) => campaign(session, name, proposal, out).await,
        _ => Err(Error::BadArgs(
            "elect takes one election name argument and an optional proposal argument".to_owned(),
        )),
    }
}

/// Prints each new leader's key and proposal until interrupted: etcd's client-side observe
/// recipe, as etcdctl runs it (the first-created key under the name is the leader; a watch
/// on it reports its new proposals, and its deletion sends the observer looking for the next).
async fn observe(session: &Session, name: &str, out: &mut dyn Write) -> Result<(), Error> {
    let connection = session.dial().await?;
    tokio::select! {
        result = observe_leaders(session, &connection, name, out) => result,
        _ = interrupted() => Ok(()),
    }
}

async fn observe_leaders(
    session: &Session,
    connection: &Connection,
    name: &str,
    out: &mut dyn Write,
) -> Result<(), Error> {
    let lost = || Error::Failed("elect: observer lost".to_owned());
    let (prefix, prefix_end) = crate::key_range::prefix_range(format!("{name}/").as_bytes());
    loop {
        // The leader: the key under the prefix created first.
        let request = connection.request(RangeRequest {
            key: prefix.clone(),
            range_end: prefix_end.clone(),
            limit: 1,
            sort_order: range_request::SortOrder::Ascend as i32,
            sort_target: range_request::SortTarget::Create as i32,
            ..RangeRequest::default()
        });
        let first = connection.deadline(connection.kv().range(request)).await?;
        let mut header = first.header.unwrap_or_default();
        let leader = match first.kvs.into_iter().next() {
            Some(kv) => kv,
            None => {
                // No candidate yet: the first put under the prefix is the leader.
                let mut events =
                    crate::watch::watch_from(connection, &prefix, &prefix_end, header.revision)
                        .await?;
                loop {
                    let response = events.message().await?.ok_or_else(lost)?;
                    if response.canceled {
                        return Err(lost());
                    }
                    let put = response
                        .events
                        .into_iter()
                        .find(|e| e.r#type == EventType::Put as i32)
                        .and_then(|e| e.kv);
                    if let Some(kv) = put {
                        header = response.header.unwrap_or_default();
                        header.revision = kv.mod_revision;
                        break kv;
                    }
                }
            }
        };
        print_leader(session, out, header, leader.clone())?;
        // Its proposals, until it is deleted.
        let mut events =
            crate::watch::watch_from(connection, &leader.key, &[], header.revision + 1).await?;
        'leader: loop {
            let response = events.message().await?.ok_or_else(lost)?;
            if response.canceled {
                return Err(lost());
            }
            for event in response.events {
                if event.r#type == EventType::Delete as i32 {
                    break 'leader;
                }
                let header = response.header.unwrap_or_default();
                print_leader(session, out, header, event.kv.unwrap_or_default())?;
            }
        }
    }
}

/// One observed leader, printed as etcdctl prints the recipe's get response (no count).
fn print_leader(
    session: &Session,
    out: &mut dyn Write,
    header: ResponseHeader,
    kv: KeyValue,
) -> Result<(), Error> {
    let shown = RangeResponse {
        header: Some(header),
        kvs: vec![kv],
        ..RangeResponse::default()
    };
    session.printer.print(out, &shown)?;
    out.flush()?;
    Ok(())
}

/// Campaigns, prints the won key and proposal, and holds leadership until interrupted.
async fn campaign(
    session: &Session,
    name: &str,
    proposal: &str,
    out: &mut dyn Write,
) -> Result<(), Error> {
    let connection = session.dial().await?;
    let (lease, expired) = LeaseSession::start(&connection, SESSION_TTL).await?;
    let request = connection.stream_request(CampaignRequest {
        name: name.as_bytes().to_vec(),
        lease: lease.id,
        value: proposal.as_bytes().to_vec(),
    });
    let mut election = connection.election();
    let won = tokio::select! {
        won = election.campaign(request) => won?.into_inner(),
        _ = interrupted() => {
            lease.close(&connection).await;
            return Ok(());
        }
    };
    let leader = won.leader.unwrap_or_default();
    let held = get_key(&connection, &leader.key).await?;
    session.printer.print(out, &held)?;
    out.flush()?;
    tokio::select! {
        _ = interrupted() => {
            let request = connection.request(ResignRequest { leader: Some(leader) });
            let resigned = connection
                .deadline(connection.election().resign(request))
                .await
                .map(|_| ());
            lease.close(&connection).await;
            resigned
        }
        _ = expired => Err(Error::Failed("elect: session expired".to_owned())),
    }
}
