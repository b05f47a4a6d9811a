//! A Cairn watch filter that redacts secrets: events under a prefix reach watchers whose user
//! holds none of the reader roles with their values (and previous values) replaced.
//!
//! Config: `{"prefix": "/secrets/", "reader_roles": ["secrets"], "replacement": "[redacted]"}`
//! (`replacement` optional, default `[redacted]`). Root always reads the real values. Keys,
//! revisions and event types are never changed, so a watcher still sees that a secret changed
//! and when. Bind it to the prefix, so it applies to every watcher of it:
//!
//! `cairnctl plugin bind secrets --plugin redact --kind watch-filter --key /secrets/ --prefix
//! --config '{"prefix": "/secrets/", "reader_roles": ["secrets"]}'`

use cairn_sdk::{Event, FilterContext, Verdict, WatchFilter, Watcher};
use serde::Deserialize;

/// The binding config.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub prefix: String,
    #[serde(default)]
    pub reader_roles: Vec<String>,
    #[serde(default = "default_replacement")]
    pub replacement: String,
}

fn default_replacement() -> String {
    "[redacted]".to_string()
}

/// The filter, opened for one watcher.
#[derive(Debug)]
pub struct RedactFilter {
    prefix: Vec<u8>,
    replacement: Vec<u8>,
    /// The watcher may see the values.
    reader: bool,
}

impl WatchFilter for RedactFilter {
    fn open(ctx: &FilterContext<'_>, watcher: &Watcher) -> Result<Self, String> {
        let config: Config = serde_json::from_slice(ctx.config())
            .map_err(|e| format!("redact-filter: bad binding config: {e}"))?;
        let reader = watcher.user == "root"
            || watcher
                .roles
                .iter()
                .any(|r| r == "root" || config.reader_roles.contains(r));
        Ok(RedactFilter {
            prefix: config.prefix.into_bytes(),
            replacement: config.replacement.into_bytes(),
            reader,
        })
    }

    fn filter(&mut self, _ctx: &FilterContext<'_>, event: &Event) -> Verdict {
        if self.reader || !event.kv.key.starts_with(&self.prefix) {
            Verdict::Pass
        } else {
            Verdict::rewrite(self.replacement.clone())
        }
    }
}

cairn_sdk::export_watch_filter!(RedactFilter);

#[cfg(test)]
mod tests {
    use cairn_sdk::testing;
    use cairn_sdk::{Event, EventType, KeyValue, Verdict, Watcher};

    use super::RedactFilter;

    const CONFIG: &[u8] = br#"{"prefix": "/secrets/", "reader_roles": ["secrets"]}"#;

    fn put(key: &str, value: &str) -> Event {
        Event {
            kind: EventType::Put,
            kv: KeyValue {
                key: key.into(),
                value: value.into(),
                create_revision: 2,
                mod_revision: 2,
                version: 1,
                lease: 0,
            },
            prev_kv: None,
        }
    }

    fn watcher(user: &str, roles: &[&str]) -> Watcher {
        Watcher {
            user: user.into(),
            roles: roles.iter().map(|r| r.to_string()).collect(),
            argument: Vec::new(),
        }
    }

    #[test]
    fn values_are_redacted_for_users_without_a_reader_role() {
        let events = [put("/secrets/db", "hunter2"), put("/public/x", "1")];
        let verdicts = testing::filter::<RedactFilter>(CONFIG, &watcher("app", &["app"]), &events)
            .expect("opens");
        assert_eq!(verdicts, [Verdict::rewrite("[redacted]"), Verdict::Pass]);
    }

    #[test]
    fn readers_and_root_see_values() {
        let events = [put("/secrets/db", "hunter2")];
        for w in [watcher("ops", &["secrets"]), watcher("root", &["root"])] {
            let verdicts = testing::filter::<RedactFilter>(CONFIG, &w, &events).expect("opens");
            assert_eq!(verdicts, [Verdict::Pass]);
        }
    }

    #[test]
    fn a_bad_config_refuses_to_open() {
        let refused = testing::filter::<RedactFilter>(b"{}", &watcher("app", &[]), &[]);
        assert!(refused.is_err_and(|e| e.contains("bad binding config")));
    }
}
