//! `cairnctl snapshot save|status|restore`: etcdctl's `snapshot save` over Maintenance.Snapshot,
//! and etcdutl's `snapshot status|restore`, which read the file locally (`cairn::backup`).

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use cairn::backup::{self, RestorePlan, Summary};
use cairn_proto::etcdserverpb::SnapshotRequest;
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};

use crate::cli::{RestoreArgs, SnapshotCommand};
use crate::endpoint::Connection;
use crate::error::Error;
use crate::output;
use crate::print::{Table, WriteOut};

/// Runs a `snapshot` subcommand; only `save` needs `connect`.
pub async fn snapshot<F, Fut>(
    command: SnapshotCommand,
    connect: F,
    write_out: WriteOut,
    out: &mut dyn Write,
) -> Result<(), Error>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<Connection, Error>>,
{
    match command {
        SnapshotCommand::Save { file } => {
            save(&connect().await?, &file).await?;
            // etcdctl's words.
            writeln!(out, "Snapshot saved at {}", file.display())?;
        }
        SnapshotCommand::Status { file } => {
            let reading = spinner(&format!("checking {}", file.display()));
            let summary = backup::status(&file).map_err(|e| Error::Snapshot(e.to_string()));
            reading.finish_and_clear();
            let summary = summary?;
            // etcdctl's hash is a CRC-32 of the bolt file; Cairn's is the SHA-256's first
            // 32 bits (the 8 hex digits the simple line shows).
            let hash = u32::from_str_radix(&summary.sha256[..8], 16).unwrap_or(0);
            match write_out {
                WriteOut::Simple => status(out, &summary)?,
                // Everything the file holds (Cairn's summary, a superset of etcdctl's).
                WriteOut::Json => output::json(out, &summary)?,
                WriteOut::Fields => {
                    writeln!(out, "\"Hash\" : {hash}")?;
                    writeln!(out, "\"Revision\" : {}", summary.header.revision)?;
                    writeln!(out, "\"Keys\" : {}", summary.keys)?;
                    writeln!(out, "\"Size\" : {}", summary.size)?;
                }
                WriteOut::Table => Table {
                    header: vec!["hash", "revision", "total keys", "total size"],
                    rows: vec![vec![
                        format!("{hash:x}"),
                        summary.header.revision.to_string(),
                        summary.keys.to_string(),
                        crate::units::human_bytes(summary.size),
                    ]],
                }
                .render(out)?,
                WriteOut::Protobuf => {
                    return Err(Error::Unsupported(
                        "protobuf not supported as output format".to_owned(),
                    ));
                }
            }
        }
        SnapshotCommand::Restore(args) => {
            let (file, plan) = restore_plan(args)?;
            let restoring = spinner(&format!("restoring {}", file.display()));
            let restored =
                backup::restore(&file, &plan).map_err(|e| Error::Snapshot(e.to_string()));
            restoring.finish_and_clear();
            let restored = restored?;
            writeln!(
                out,
                "restored snapshot {} (revision {}) into {} as member {} ({:x}) of cluster {:x}",
                file.display(),
                restored.summary.header.revision,
                plan.data_dir.display(),
                plan.name,
                restored.member_id,
                restored.cluster_id
            )?;
        }
    }
    Ok(())
}

/// Streams the member's snapshot into `<file>.part`, syncs it, checks it whole (framing and
/// checksum, read back from disk), then renames it to `file`. Each message must arrive within
/// `--command-timeout` (a stalled server is given up on), but the whole transfer may take as
/// long as the data needs: etcdctl bounds the whole transfer instead, which fails large
/// snapshots under its 5 s default.
async fn save(connection: &Connection, file: &Path) -> Result<(), Error> {
    let part = part_path(file);
    let written = receive(connection, &part).await.and_then(|()| {
        backup::status(&part)
            .map(|_| ())
            .map_err(|e| Error::Snapshot(format!("the received snapshot is unusable: {e}")))
    });
    if let Err(e) = written {
        let _ = fs::remove_file(&part);
        return Err(e);
    }
    fs::rename(&part, file).map_err(|e| write_error(file, e))?;
    Ok(())
}

async fn receive(connection: &Connection, part: &Path) -> Result<(), Error> {
    let mut stream = connection
        .deadline(
            connection
                .maintenance()
                .snapshot(connection.stream_request(SnapshotRequest {})),
        )
        .await?;
    let mut out = BufWriter::new(File::create(part).map_err(|e| write_error(part, e))?);
    let progress = ProgressBar::hidden();
    let mut started = false;
    loop {
        let message = match tokio::time::timeout(connection.command_timeout(), stream.next()).await
        {
            Err(_) => return Err(Error::DeadlineExceeded),
            Ok(None) => break,
            Ok(Some(message)) => message?,
        };
        if !started {
            started = true;
            let total = message.remaining_bytes + message.blob.len() as u64;
            progress.set_length(total);
            progress.set_style(
                ProgressStyle::with_template(
                    "{bytes}/{total_bytes} [{bar:30}] {bytes_per_sec}, {eta} left",
                )
                .expect("a fixed, valid template")
                .progress_chars("=> "),
            );
            // Drawn only on a terminal: scripts and CI logs see just the final line.
            progress.set_draw_target(indicatif::ProgressDrawTarget::stderr());
        }
        out.write_all(&message.blob)
            .map_err(|e| write_error(part, e))?;
        progress.inc(message.blob.len() as u64);
    }
    progress.finish_and_clear();
    let file = out
        .into_inner()
        .map_err(|e| write_error(part, e.into_error()))?;
    file.sync_all().map_err(|e| write_error(part, e))?;
    Ok(())
}

/// A spinner with the time so far, for work whose size is not known ahead (checking and
/// restoring a file read in one pass); drawn on stderr only when it is a terminal.
fn spinner(what: &str) -> ProgressBar {
    let spinner = ProgressBar::new_spinner();
    if let Ok(style) = ProgressStyle::with_template("{spinner} {msg} ({elapsed})") {
        spinner.set_style(style);
    }
    spinner.set_message(what.to_string());
    spinner.enable_steady_tick(Duration::from_millis(120));
    spinner
}

fn part_path(file: &Path) -> PathBuf {
    let mut name = file.as_os_str().to_os_string();
    name.push(".part");
    PathBuf::from(name)
}

fn write_error(path: &Path, e: std::io::Error) -> Error {
    Error::Snapshot(format!("cannot write {}: {e}", path.display()))
}

/// etcdctl's simple status line (hash, revision, total keys, total size; the hash is the
/// first 8 hex digits of the SHA-256), then what only Cairn's snapshots hold.
fn status(out: &mut dyn Write, s: &Summary) -> std::io::Result<()> {
    writeln!(
        out,
        "{}, {}, {}, {}",
        &s.sha256[..8],
        s.header.revision,
        s.keys,
        crate::units::human_bytes(s.size)
    )?;
    let names = |names: &[String]| {
        if names.is_empty() {
            "none".to_string()
        } else {
            names.join(", ")
        }
    };
    writeln!(out, "sha256: {}", s.sha256)?;
    writeln!(
        out,
        "cluster: {:x}, member: {:x}, cairn {}",
        s.header.cluster_id, s.header.member_id, s.header.cairn_version
    )?;
    writeln!(
        out,
        "compact revision: {}, history: {} revisions, leases: {}",
        s.header.compact_revision, s.history, s.leases
    )?;
    writeln!(
        out,
        "users: {}; roles: {}",
        names(&s.users),
        names(&s.roles)
    )?;
    writeln!(
        out,
        "plugins: {}; bindings: {}",
        names(&s.plugins),
        names(&s.bindings)
    )
}

fn restore_plan(args: RestoreArgs) -> Result<(PathBuf, RestorePlan), Error> {
    let initial_cluster = cairn::config::parse_initial_cluster(&args.initial_cluster)
        .map_err(|e| Error::Usage(e.to_string()))?;
    let data_dir = args
        .data_dir
        .unwrap_or_else(|| PathBuf::from(format!("{}.cairn", args.name)));
    Ok((
        args.file,
        RestorePlan {
            name: args.name,
            data_dir,
            initial_cluster,
            initial_cluster_token: args.initial_cluster_token,
            initial_advertise_peer_urls: args.initial_advertise_peer_urls,
        },
    ))
}
