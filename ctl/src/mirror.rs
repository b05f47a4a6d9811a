//! `make-mirror`: etcdctl's mirror of a prefix into another cluster. First the keys under the
//! prefix as of one revision, put one by one; then every later change, each revision's events
//! as one txn on the destination, until an error (a compacted history ends it as etcdctl's
//! does) or the process is stopped. Every 30 s it prints how many keys it has mirrored.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use cairn_proto::etcdserverpb::{
    DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest, request_op,
};
use cairn_proto::mvccpb::event::EventType;

use crate::cli::MirrorArgs;
use crate::endpoint::Connection;
use crate::error::Error;
use crate::key_range::prefix_range;
use crate::run::Session;

/// Keys read per request of the initial copy.
const BATCH: i64 = 1000;

pub async fn make_mirror(
    session: &Session,
    args: MirrorArgs,
    out: &mut dyn Write,
) -> Result<(), Error> {
    let [destination] = args.destination.as_slice() else {
        return Err(Error::BadArgs(
            "make-mirror takes one destination argument".to_owned(),
        ));
    };
    let global = &session.global;
    let tls = crate::tls::TlsArgs {
        cacert: args.dest_cacert.clone(),
        cert: args.dest_cert.clone(),
        key: args.dest_key.clone(),
        insecure_skip_verify: false,
    };
    let dest = Connection::dial_with(
        std::slice::from_ref(destination),
        &tls,
        global.dial_timeout,
        global.command_timeout,
        Some((global.keepalive_time, global.keepalive_timeout)),
    )
    .await?;
    let source = session.dial().await?;
    if args.no_dest_prefix && !args.dest_prefix.is_empty() {
        return Err(Error::BadArgs(
            "`--dest-prefix` and `--no-dest-prefix` cannot be set at the same time, choose one"
                .to_owned(),
        ));
    }
    let dest_prefix = if !args.no_dest_prefix && args.dest_prefix.is_empty() {
        args.prefix.clone()
    } else {
        args.dest_prefix.clone()
    };
    let renamer = Renamer {
        from: args.prefix.clone().into_bytes(),
        to: dest_prefix.into_bytes(),
    };
    let total = Arc::new(AtomicU64::new(0));
    let reporter = {
        let total = total.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(30)).await;
                println!("{}", total.load(Ordering::Relaxed));
            }
        })
    };
    out.flush()?;
    let result = mirror(&source, &dest, args.prefix.as_bytes(), &renamer, &total).await;
    reporter.abort();
    result
}

/// etcdctl's renaming: the first occurrence of the source prefix becomes the destination's
/// (with an empty source prefix, the destination prefix goes in front).
struct Renamer {
    from: Vec<u8>,
    to: Vec<u8>,
}

impl Renamer {
    fn rename(&self, key: &[u8]) -> Vec<u8> {
        if self.from.is_empty() {
            return [self.to.as_slice(), key].concat();
        }
        match key
            .windows(self.from.len())
            .position(|window| window == self.from.as_slice())
        {
            Some(at) => [&key[..at], self.to.as_slice(), &key[at + self.from.len()..]].concat(),
            None => key.to_vec(),
        }
    }
}

async fn mirror(
    source: &Connection,
    dest: &Connection,
    prefix: &[u8],
    renamer: &Renamer,
    total: &AtomicU64,
) -> Result<(), Error> {
    let (start, range_end) = prefix_range(prefix);
    let mut key = start.clone();
    // The initial copy, in pages at one revision.
    let mut revision = 0;
    loop {
        let request = source.request(RangeRequest {
            key: key.clone(),
            range_end: range_end.clone(),
            limit: BATCH,
            revision,
            ..RangeRequest::default()
        });
        let page = source.deadline(source.kv().range(request)).await?;
        if revision == 0 {
            revision = page.header.as_ref().map(|h| h.revision).unwrap_or(0);
        }
        for kv in &page.kvs {
            let put = dest.request(PutRequest {
                key: renamer.rename(&kv.key),
                value: kv.value.clone(),
                ..PutRequest::default()
            });
            dest.deadline(dest.kv().put(put)).await?;
            total.fetch_add(1, Ordering::Relaxed);
        }
        match page.kvs.last() {
            Some(last) if page.more => {
                key = last.key.clone();
                key.push(0);
            }
            _ => break,
        }
    }
    // Then every change after that revision.
    let mut updates = crate::watch::watch_from(source, &start, &range_end, revision + 1).await?;
    while let Some(response) = updates.message().await? {
        if response.compact_revision != 0 {
            return Err(Error::Failed(
                "etcdserver: mvcc: required revision has been compacted".to_owned(),
            ));
        }
        if response.canceled {
            return Err(Error::Failed(format!(
                "watch is canceled by the server: {}",
                response.cancel_reason
            )));
        }
        // One txn per source revision, as etcdctl commits them.
        let mut ops = Vec::new();
        let mut last_revision = 0;
        for event in response.events {
            let kv = event.kv.unwrap_or_default();
            if last_revision != 0 && kv.mod_revision > last_revision {
                commit(dest, std::mem::take(&mut ops)).await?;
            }
            last_revision = kv.mod_revision;
            let key = renamer.rename(&kv.key);
            ops.push(RequestOp {
                request: Some(if event.r#type == EventType::Delete as i32 {
                    request_op::Request::RequestDeleteRange(DeleteRangeRequest {
                        key,
                        ..DeleteRangeRequest::default()
                    })
                } else {
                    request_op::Request::RequestPut(PutRequest {
                        key,
                        value: kv.value,
                        ..PutRequest::default()
                    })
                }),
            });
            total.fetch_add(1, Ordering::Relaxed);
        }
        if !ops.is_empty() {
            commit(dest, ops).await?;
        }
    }
    Ok(())
}

async fn commit(dest: &Connection, ops: Vec<RequestOp>) -> Result<(), Error> {
    let request = dest.request(TxnRequest {
        success: ops,
        ..TxnRequest::default()
    });
    dest.deadline(dest.kv().txn(request)).await.map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::Renamer;

    #[test]
    fn keys_are_renamed_as_etcdctl_renames_them() {
        let r = Renamer {
            from: b"/a/".to_vec(),
            to: b"/b/".to_vec(),
        };
        assert_eq!(r.rename(b"/a/x"), b"/b/x");
        let root = Renamer {
            from: b"/a/".to_vec(),
            to: Vec::new(),
        };
        assert_eq!(root.rename(b"/a/x"), b"x");
        let all = Renamer {
            from: Vec::new(),
            to: b"/m/".to_vec(),
        };
        assert_eq!(all.rename(b"k"), b"/m/k");
    }
}
