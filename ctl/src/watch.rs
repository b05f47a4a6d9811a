//! `cairnctl watch`: etcdctl's watch, plus Cairn's watch filters (`--filter`,
//! `--filter-arg`). Prints each event as etcdctl's simple format does (the type, then the
//! previous key and value when asked, then the key and value, one per line) and flushes after
//! each response, so a reader sees events as they come. Runs until the server cancels the
//! watch or the stream ends.

use std::io::Write;

use cairn_proto::etcdserverpb::{
    CairnWatchFilter, WatchCreateRequest, WatchRequest, watch_request::RequestUnion,
};
use cairn_proto::mvccpb::{Event, event::EventType};

use crate::cli::WatchArgs;
use crate::endpoint::Connection;
use crate::error::Error;
use crate::key_range::prefix_range_end;

pub async fn watch(
    connection: &Connection,
    args: WatchArgs,
    out: &mut dyn Write,
) -> Result<(), Error> {
    let key = args.key.into_bytes();
    let range_end = if args.prefix {
        prefix_range_end(&key)
    } else {
        args.range_end.map(String::into_bytes).unwrap_or_default()
    };
    let create = WatchRequest {
        request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
            key,
            range_end,
            start_revision: args.rev,
            prev_kv: args.prev_kv,
            cairn_filter: args.filter.map(|binding| CairnWatchFilter {
                binding,
                argument: args.filter_arg.map(String::into_bytes).unwrap_or_default(),
            }),
            ..Default::default()
        })),
    };
    // The request stream stays open (a closed one would not end the watch, but keeps the
    // door open for cancels).
    let requests = futures::stream::iter([create]).chain(futures::stream::pending());
    let mut responses = connection
        .watch()
        .watch(connection.stream_request(requests))
        .await?
        .into_inner();
    while let Some(response) = responses.message().await? {
        if response.canceled {
            let reason = if response.cancel_reason.is_empty() {
                "watch is canceled by the server".to_owned()
            } else {
                format!(
                    "watch is canceled by the server: {}",
                    response.cancel_reason
                )
            };
            return Err(Error::Status(reason));
        }
        for event in &response.events {
            print_event(out, event)?;
        }
        out.flush()?;
    }
    Ok(())
}

use futures::StreamExt;

fn print_event(out: &mut dyn Write, event: &Event) -> std::io::Result<()> {
    let kind = match EventType::try_from(event.r#type) {
        Ok(EventType::Delete) => "DELETE",
        _ => "PUT",
    };
    writeln!(out, "{kind}")?;
    if let Some(prev) = &event.prev_kv {
        out.write_all(&prev.key)?;
        writeln!(out)?;
        out.write_all(&prev.value)?;
        writeln!(out)?;
    }
    if let Some(kv) = &event.kv {
        out.write_all(&kv.key)?;
        writeln!(out)?;
        out.write_all(&kv.value)?;
        writeln!(out)?;
    }
    Ok(())
}
