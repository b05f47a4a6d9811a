//! `cairnctl plugin logs [BINDING]`: follows the log lines plugins write, on every member at
//! once (each member's `Plugin.Logs` stream, merged as lines arrive), until interrupted.
//!
//! A line comes from each member that ran the plugin (see docs/plugins.md: a guard's from
//! the leader that vetted the write and the members that ran it again in apply, a watch
//! filter's from the member serving the watcher, a reactor's from the leader). Each line says
//! which member wrote it.

use std::io::Write;

use cairn_proto::cairn_plugin::{LogLine, LogsRequest};
use futures::StreamExt;

use crate::error::Error;
use crate::output;
use crate::print::WriteOut;
use crate::run::Session;

/// Follows `binding`'s lines (every binding's if empty) on every member.
pub async fn follow(
    session: &Session,
    binding: String,
    write_out: WriteOut,
    out: &mut dyn Write,
) -> Result<(), Error> {
    let members = crate::cluster::member_list(&session.dial().await?).await?;
    let mut streams = Vec::new();
    for member in members.members {
        let Some(url) = member.client_ur_ls.first() else {
            continue; // a member added but not started yet has no client URL
        };
        // A member that cannot be followed (down, unreachable) is reported; the others are
        // still followed.
        let opened = async {
            let connection = session.dial_one(url).await?;
            let request = connection.stream_request(LogsRequest {
                binding: binding.clone(),
            });
            Ok::<_, Error>(connection.plugin().logs(request).await?.into_inner())
        };
        match opened.await {
            Ok(lines) => {
                let id = member.id;
                streams.push(lines.map(move |line| (id, line)).boxed());
            }
            Err(e) => eprintln!("member {:x}: {e}", member.id),
        }
    }
    if streams.is_empty() {
        return Err(Error::Failed("no member could be followed".into()));
    }
    let mut merged = futures::stream::select_all(streams);
    while let Some((member, line)) = merged.next().await {
        match line {
            Ok(line) => print(&line, write_out, out)?,
            Err(status) => {
                // The others go on; this member's lines end here.
                eprintln!("member {member:x}: {}", status.message());
            }
        }
        out.flush()?;
    }
    Err(Error::Failed("every member ended its stream".into()))
}

fn print(line: &LogLine, write_out: WriteOut, out: &mut dyn Write) -> Result<(), Error> {
    if write_out == WriteOut::Json {
        output::json(out, line)?;
        return Ok(());
    }
    if line.missed > 0 {
        writeln!(
            out,
            "{:x} ({} lines missed: read more slowly than written)",
            line.member_id, line.missed
        )?;
    }
    writeln!(
        out,
        "{:x} {} {}: {}",
        line.member_id, line.binding, line.level, line.message
    )?;
    Ok(())
}
