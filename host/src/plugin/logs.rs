//! The log lines plugins write (`cairn:plugin/log`), on the member that ran them: each goes to
//! the member's own log, and to the clients following the plugin's lines (`Plugin.Logs`,
//! `cairnctl plugin logs`).
//!
//! A line comes from each member that ran the plugin: guards and write-side policy hooks on
//! the leader that vets the write and on each member that runs them again in apply
//! (`carry.rs`), compares on every member, read-side policy hooks and watch filters on the
//! member serving the request, reactors on the leader. A follower that reads too slowly misses lines rather than slowing
//! the plugin: the channel keeps the last [`KEPT_LINES`] and tells the follower how many it
//! missed.

use tokio::sync::broadcast;

/// Lines kept for followers that have not read them yet.
pub const KEPT_LINES: usize = 1024;

/// One line a plugin wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogLine {
    pub binding: String,
    /// `debug`, `info` or `warn`.
    pub level: &'static str,
    pub message: String,
    /// Wall time on this member, milliseconds since the Unix epoch (shown, never applied).
    pub unix_ms: i64,
}

/// Where one member's plugin log lines go. Cheap to clone.
#[derive(Clone, Debug)]
pub struct PluginLogs {
    lines: broadcast::Sender<LogLine>,
}

impl Default for PluginLogs {
    fn default() -> Self {
        PluginLogs {
            lines: broadcast::channel(KEPT_LINES).0,
        }
    }
}

impl PluginLogs {
    /// Writes one line to the member's log (`what` names the hook's kind) and to followers.
    pub fn write(&self, what: &str, binding: &str, level: &'static str, message: String) {
        match level {
            "warn" => tracing::warn!(%binding, "{what}: {message}"),
            "info" => tracing::info!(%binding, "{what}: {message}"),
            _ => tracing::debug!(%binding, "{what}: {message}"),
        }
        if self.lines.receiver_count() > 0 {
            // Ignored when the last follower went away meanwhile.
            let _ = self.lines.send(LogLine {
                binding: binding.to_string(),
                level,
                message,
                unix_ms: crate::wall_clock_ms(),
            });
        }
    }

    /// The lines written from now on.
    pub fn follow(&self) -> broadcast::Receiver<LogLine> {
        self.lines.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn followers_get_the_lines_written_after_they_start() {
        let logs = PluginLogs::default();
        logs.write("plugin", "b", "info", "before".into());
        let mut follower = logs.follow();
        logs.write("plugin", "b", "warn", "after".into());
        let line = follower.try_recv().expect("a line");
        assert_eq!((line.binding.as_str(), line.level), ("b", "warn"));
        assert_eq!(line.message, "after");
        assert!(follower.try_recv().is_err());
    }
}
