//! The process's logs, as operators' tools expect etcd's: `--log-level` (and `RUST_LOG` for
//! per-target detail), `--log-outputs` (stderr, stdout or files), and `--log-format`: text
//! (coloured only on a terminal) or JSON, one object per line with etcd's zap field names
//! (`level`, `ts`, `caller`, `msg`, then the event's own fields).
//!
//! Libraries' routine chatter stays out of the default levels: the storage engine's INFO lines
//! (each start printed ~25) and openraft's per-RPC warnings (an unreachable peer gave one every
//! 100 ms, with decimal member IDs) show only at `--log-level debug`. Cairn reports peer
//! reachability itself, rate-limited and in hex (`raft/transport/peers.rs`).

use std::fmt;
use std::io::IsTerminal;
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::writer::{BoxMakeWriter, MakeWriterExt};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines (zap calls it `console`).
    #[value(alias = "console")]
    Text,
    /// One JSON object per line, etcd's field names.
    Json,
}

/// The filter directives for `level`, with `rust_log` (the `RUST_LOG` variable) after them so
/// that its per-target directives win.
pub fn directives(level: &str, rust_log: Option<&str>) -> String {
    let debug = level == "debug";
    let (storage, raft) = if debug {
        ("debug", "warn")
    } else {
        ("warn", "error")
    };
    // The transport crates' debug output is per frame: noise even at debug.
    let mut out = format!(
        "{level},fjall={storage},lsm_tree={storage},openraft={raft},\
         h2=info,hyper=info,hyper_util=info,tower=info,tonic=info"
    );
    if let Some(extra) = rust_log.map(str::trim).filter(|s| !s.is_empty()) {
        out.push(',');
        out.push_str(extra);
    }
    out
}

/// Where log lines go: `default`/`stderr`, `stdout`, or a file (appended to).
fn writer(outputs: &[String]) -> Result<(BoxMakeWriter, bool), String> {
    let mut writer: Option<BoxMakeWriter> = None;
    let mut all_terminals = true;
    for output in outputs {
        let next = match output.as_str() {
            "default" | "stderr" => {
                all_terminals &= std::io::stderr().is_terminal();
                BoxMakeWriter::new(std::io::stderr)
            }
            "stdout" => {
                all_terminals &= std::io::stdout().is_terminal();
                BoxMakeWriter::new(std::io::stdout)
            }
            path => {
                all_terminals = false;
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|e| format!("--log-outputs: cannot open {path}: {e}"))?;
                BoxMakeWriter::new(std::sync::Mutex::new(file))
            }
        };
        writer = Some(match writer {
            None => next,
            Some(before) => BoxMakeWriter::new(before.and(next)),
        });
    }
    Ok((
        writer.unwrap_or_else(|| BoxMakeWriter::new(std::io::stderr)),
        all_terminals,
    ))
}

/// Installs the process's subscriber.
pub fn init(level: &str, format: LogFormat, outputs: &[String]) -> Result<(), String> {
    let rust_log = std::env::var("RUST_LOG").ok();
    let filter = tracing_subscriber::EnvFilter::builder()
        .parse_lossy(directives(level, rust_log.as_deref()));
    let (writer, terminal) = writer(outputs)?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    let installed = match format {
        LogFormat::Text => builder.with_ansi(terminal).try_init(),
        LogFormat::Json => builder.event_format(EtcdJson).try_init(),
    };
    installed.map_err(|e| format!("cannot install the logger: {e}"))
}

/// zap's JSON lines: `{"level":"info","ts":"2026-12-06T08:01:14.655Z","caller":"server.rs:120",
/// "msg":"...", <fields>}`.
pub struct EtcdJson;

impl<S, N> FormatEvent<S, N> for EtcdJson
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        writeln!(writer, "{}", json_line(event, SystemTime::now()))
    }
}

/// One event as zap's JSON object.
fn json_line(event: &Event<'_>, now: SystemTime) -> String {
    let meta = event.metadata();
    let mut fields = Fields::default();
    event.record(&mut fields);
    let caller = match (meta.file(), meta.line()) {
        (Some(file), Some(line)) => {
            // zap's short caller: the path under the crate's `src/`.
            let short = file.rsplit_once("src/").map(|(_, f)| f).unwrap_or(file);
            format!("{short}:{line}")
        }
        _ => meta.target().to_owned(),
    };
    let mut out = String::from("{");
    let mut push = |key: &str, value: serde_json::Value| {
        if out.len() > 1 {
            out.push(',');
        }
        out.push_str(&serde_json::Value::String(key.to_owned()).to_string());
        out.push(':');
        out.push_str(&value.to_string());
    };
    push("level", meta.level().as_str().to_ascii_lowercase().into());
    push("ts", rfc3339_millis(now).into());
    push("caller", caller.into());
    push("msg", fields.message.unwrap_or_default().into());
    for (key, value) in fields.rest {
        push(&key, value);
    }
    out.push('}');
    out
}

/// An event's fields: the message apart, the others in the order given.
#[derive(Default)]
struct Fields {
    message: Option<String>,
    rest: Vec<(String, serde_json::Value)>,
}

impl Fields {
    fn put(&mut self, field: &Field, value: serde_json::Value) {
        if field.name() == "message" {
            self.message = Some(match value {
                serde_json::Value::String(s) => s,
                other => other.to_string(),
            });
        } else {
            self.rest.push((field.name().to_owned(), value));
        }
    }
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.put(field, format!("{value:?}").into());
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, value.into());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, value.into());
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, value.into());
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.put(field, value.to_string().into());
    }
}

/// `2026-12-06T08:01:14.655Z` (UTC, milliseconds), as zap writes `ts`.
fn rfc3339_millis(time: SystemTime) -> String {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rest) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's days-to-civil: the proleptic Gregorian date of day `days` after 1970-01-01.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rest / 3600,
        rest / 60 % 60,
        rest % 60,
        since.subsec_millis()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timestamps_read_as_zap_writes_them() {
        let at = |secs: u64, millis: u64| {
            rfc3339_millis(UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_millis(millis))
        };
        assert_eq!(at(0, 0), "1970-01-01T00:00:00.000Z");
        assert_eq!(at(951_782_400, 5), "2000-02-29T00:00:00.005Z");
        assert_eq!(at(1_796_544_074, 655), "2026-12-06T08:01:14.655Z");
    }

    #[test]
    fn rust_log_adds_to_the_level() {
        assert_eq!(
            directives("info", Some("cairn::raft=debug")),
            "info,fjall=warn,lsm_tree=warn,openraft=error,h2=info,hyper=info,hyper_util=info,\
             tower=info,tonic=info,cairn::raft=debug"
        );
        assert!(directives("debug", None).contains("fjall=debug"));
    }

    #[test]
    fn json_lines_carry_etcds_field_names() {
        use std::sync::{Arc, Mutex};
        use tracing_subscriber::layer::SubscriberExt;

        #[derive(Clone, Default)]
        struct Sink(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Sink {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0.lock().expect("sink").extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let sink = Sink::default();
        let layer = tracing_subscriber::fmt::layer()
            .event_format(EtcdJson)
            .with_writer({
                let sink = sink.clone();
                move || sink.clone()
            });
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!(
                member = "8e9e05c52164694d",
                failures = 3u64,
                "peer \"b\" unreachable"
            );
        });
        let text = String::from_utf8(sink.0.lock().expect("sink").clone()).expect("utf-8");
        let line: serde_json::Value = serde_json::from_str(text.trim()).expect("one JSON object");
        assert_eq!(line["level"], "warn");
        assert_eq!(line["msg"], "peer \"b\" unreachable");
        assert_eq!(line["member"], "8e9e05c52164694d");
        assert_eq!(line["failures"], 3);
        assert!(
            line["caller"]
                .as_str()
                .expect("caller")
                .starts_with("logging.rs:")
        );
        assert!(line["ts"].as_str().expect("ts").ends_with('Z'));
        assert!(text.starts_with("{\"level\":\"warn\",\"ts\":"), "{text}");
    }
}
