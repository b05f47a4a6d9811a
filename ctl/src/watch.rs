//! `cairnctl watch`: etcdctl's watch (a key or range, `--rev`, `--prev-kv`, a command run per
//! event after `--`, `--interactive` with `watch ...` and `progress` lines from stdin), plus
//! Cairn's watch filters (`--filter`, `--filter-arg`). Each response is printed in the chosen
//! format and flushed, so a reader sees events as they come. Runs until the server cancels a
//! watch or the stream ends.

use std::io::Write;

use cairn_proto::etcdserverpb::{
    CairnWatchFilter, WatchCreateRequest, WatchProgressRequest, WatchRequest, WatchResponse,
    watch_request::RequestUnion,
};
use cairn_proto::mvccpb::event::EventType;
use clap::Parser;
use futures::StreamExt;
use tokio::io::AsyncBufReadExt;

use crate::cli::WatchArgs;
use crate::endpoint::Connection;
use crate::error::Error;
use crate::key_range::prefix_range;
use crate::print::{WatchShown, go_quote};
use crate::run::Session;

/// One watch: its create request and the command run for its events.
struct Watcher {
    create: WatchRequest,
    exec: Vec<String>,
}

/// The create request for `args` (with `ETCDCTL_WATCH_KEY`/`_RANGE_END` in front, as etcdctl).
fn watcher(mut args: WatchArgs) -> Result<Watcher, Error> {
    let env_key = std::env::var("ETCDCTL_WATCH_KEY").unwrap_or_default();
    let env_range = std::env::var("ETCDCTL_WATCH_RANGE_END").unwrap_or_default();
    if env_key.is_empty() && !env_range.is_empty() {
        return Err(Error::BadArgs(format!(
            "ETCDCTL_WATCH_KEY is empty but got ETCDCTL_WATCH_RANGE_END={env_range:?}"
        )));
    }
    if !env_key.is_empty() {
        if !args.args.is_empty() {
            return Err(Error::BadArgs(
                "cannot watch with positional arguments and ETCDCTL_WATCH_KEY at the same time"
                    .to_owned(),
            ));
        }
        args.args.push(env_key);
        if !env_range.is_empty() {
            args.args.push(env_range);
        }
    }
    let (key, range_end) = match args.args.as_slice() {
        [key] => (key.clone().into_bytes(), Vec::new()),
        [key, end] => {
            if args.prefix {
                return Err(Error::BadArgs(
                    "`range_end` and `--prefix` are mutually exclusive".to_owned(),
                ));
            }
            (key.clone().into_bytes(), end.clone().into_bytes())
        }
        _ => return Err(Error::BadArgs("bad number of arguments".to_owned())),
    };
    let (key, range_end) = if args.prefix {
        prefix_range(&key)
    } else {
        (key, range_end)
    };
    Ok(Watcher {
        create: WatchRequest {
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
        },
        exec: args.exec,
    })
}

/// An interactive line: `watch [flags] key [range_end] [-- command...]` or `progress`.
enum Line {
    Watch(Box<Watcher>),
    Progress,
}

fn parse_line(line: &str) -> Result<Line, String> {
    let words: Vec<&str> = line.split_whitespace().collect();
    match words.first() {
        Some(&"progress") => Ok(Line::Progress),
        Some(&"watch") => {
            #[derive(Parser)]
            #[command(no_binary_name = true)]
            struct InteractiveWatch {
                #[command(flatten)]
                args: WatchArgs,
            }
            let parsed = InteractiveWatch::try_parse_from(&words[1..]).map_err(|e| {
                let message = e.to_string();
                message.lines().next().unwrap_or_default().to_owned()
            })?;
            watcher(parsed.args)
                .map(|w| Line::Watch(Box::new(w)))
                .map_err(|e| e.to_string())
        }
        Some(_) => Err("only support watch".to_owned()),
        None => Err("watch and progress supported".to_owned()),
    }
}

pub async fn watch(
    session: &Session,
    args: WatchArgs,
    _input: &mut dyn std::io::BufRead,
    out: &mut dyn Write,
) -> Result<(), Error> {
    let interactive = args.interactive;
    // Watchers in creation order: the server answers creates in the order sent.
    let mut pending: std::collections::VecDeque<Vec<String>> = Default::default();
    let mut execs: std::collections::HashMap<i64, Vec<String>> = Default::default();
    let (sender, receiver) = tokio::sync::mpsc::channel::<WatchRequest>(16);
    if !interactive {
        let first = watcher(args)?;
        pending.push_back(first.exec);
        sender
            .send(first.create)
            .await
            .map_err(|_| Error::Protocol("the watch stream closed early".to_owned()))?;
    }
    let connection = session.dial().await?;
    let requests = tokio_stream::wrappers::ReceiverStream::new(receiver);
    let mut responses = connection
        .watch()
        .watch(connection.stream_request(requests))
        .await?
        .into_inner();
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let mut stdin_open = interactive;
    loop {
        tokio::select! {
            response = responses.next() => {
                let Some(response) = response.transpose()? else { break };
                if response.created
                    && let Some(exec) = pending.pop_front()
                {
                    execs.insert(response.watch_id, exec);
                }
                if response.created && response.events.is_empty() && !response.canceled {
                    continue;
                }
                if response.canceled {
                    // etcdctl's two lines: the reason as clientv3 words it, then its error.
                    let reason = match (response.compact_revision, response.cancel_reason.as_str()) {
                        (r, _) if r > 0 => {
                            "etcdserver: mvcc: required revision has been compacted".to_owned()
                        }
                        (_, "") => {
                            "etcdserver: mvcc: required revision is a future revision".to_owned()
                        }
                        (_, reason) if reason.starts_with("etcdserver: ") => reason.to_owned(),
                        (_, reason) => {
                            format!("rpc error: code = FailedPrecondition desc = {reason}")
                        }
                    };
                    session.printer.print(out, &WatchShown(&response))?;
                    out.flush()?;
                    eprintln!("watch was canceled ({reason})");
                    return Err(Error::Canceled("watch is canceled by the server".to_owned()));
                }
                if is_progress_notify(&response) {
                    let revision = response.header.as_ref().map(|h| h.revision).unwrap_or(0);
                    writeln!(out, "progress notify: {revision}")?;
                }
                session.printer.print(out, &WatchShown(&response))?;
                out.flush()?;
                if let Some(exec) = execs.get(&response.watch_id).filter(|e| !e.is_empty()) {
                    run_for_events(exec, &response).await?;
                }
            }
            line = lines.next_line(), if stdin_open => {
                let Some(line) = line? else {
                    stdin_open = false;
                    continue;
                };
                match parse_line(&line) {
                    Ok(Line::Watch(w)) => {
                        pending.push_back(w.exec);
                        let _ = sender.send(w.create).await;
                    }
                    Ok(Line::Progress) => {
                        let progress = WatchRequest {
                            request_union: Some(RequestUnion::ProgressRequest(
                                WatchProgressRequest {},
                            )),
                        };
                        let _ = sender.send(progress).await;
                    }
                    Err(reason) => eprintln!("Invalid command {line} ({reason})"),
                }
            }
        }
    }
    Err(Error::Canceled(
        "watch is canceled by the server".to_owned(),
    ))
}

/// A response with no events that is neither a create nor a cancel: a progress notification.
fn is_progress_notify(response: &WatchResponse) -> bool {
    response.events.is_empty()
        && !response.created
        && !response.canceled
        && response.compact_revision == 0
}

/// Runs `exec` once per event, with the event in the environment (etcdctl's variables, values
/// quoted as Go's `%q`). A failing command ends the watch, as in etcdctl.
async fn run_for_events(exec: &[String], response: &WatchResponse) -> Result<(), Error> {
    let revision = response.header.as_ref().map(|h| h.revision).unwrap_or(0);
    for event in &response.events {
        let kind = match EventType::try_from(event.r#type) {
            Ok(EventType::Delete) => "DELETE",
            _ => "PUT",
        };
        let kv = event.kv.clone().unwrap_or_default();
        let status = tokio::process::Command::new(&exec[0])
            .args(&exec[1..])
            .env("ETCD_WATCH_REVISION", revision.to_string())
            .env("ETCD_WATCH_EVENT_TYPE", format!("\"{kind}\""))
            .env("ETCD_WATCH_KEY", go_quote(&kv.key))
            .env("ETCD_WATCH_VALUE", go_quote(&kv.value))
            .status()
            .await;
        let failure = match status {
            Ok(status) if status.success() => continue,
            Ok(status) => match status.code() {
                Some(code) => format!("exit status {code}"),
                None => "signal: killed".to_owned(),
            },
            Err(e) => e.to_string(),
        };
        eprintln!("command {exec:?} error ({failure})");
        return Err(Error::Silent);
    }
    Ok(())
}

/// A plain watch of `[key, range_end)` from `revision`, on a stream of its own (`elect -l`,
/// `make-mirror`).
pub async fn watch_from(
    connection: &Connection,
    key: &[u8],
    range_end: &[u8],
    revision: i64,
) -> Result<tonic::Streaming<WatchResponse>, Error> {
    let create = WatchRequest {
        request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
            key: key.to_vec(),
            range_end: range_end.to_vec(),
            start_revision: revision,
            ..WatchCreateRequest::default()
        })),
    };
    let requests = futures::stream::iter([create]).chain(futures::stream::pending());
    Ok(connection
        .watch()
        .watch(connection.stream_request(requests))
        .await?
        .into_inner())
}
