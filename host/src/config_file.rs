//! `--config-file`: etcd's YAML configuration (`etcd.conf.yml`), whose keys are the flags'
//! names, read into the command line before the flags are parsed.
//!
//! Precedence, highest first: a flag on the command line, its `CAIRN_*` variable, the file.
//! (etcd ignores flags and variables once a config file is given; Cairn lets an operator
//! override one setting of a shared file without editing it.) The file's
//! `client-transport-security` and `peer-transport-security` sections map to the TLS flags
//! (`cert-file` → `--cert-file`, and `--peer-cert-file` in the peer section). Keys Cairn has
//! no flag for are listed in one warning, so that etcd's sample file, full of settings Cairn
//! does not need, still starts a member.

use std::ffi::OsString;
use std::path::Path;

use clap::{ArgAction, CommandFactory};
use yaml_rust2::{Yaml, YamlLoader};

use crate::config::Config;

/// The largest config file read: a configuration, not a data file.
const MAX_CONFIG_FILE_BYTES: u64 = 1 << 20;

/// What the file adds to the command line, and the keys it ignored.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Applied {
    pub args: Vec<OsString>,
    pub ignored: Vec<String>,
}

/// `args` (the program name first) with the settings of the config file they or `CAIRN_CONFIG_FILE`
/// name; `env` answers whether a variable is set.
pub fn apply(args: Vec<OsString>, env: &dyn Fn(&str) -> Option<String>) -> Result<Applied, String> {
    let given: Vec<String> = args
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let path = given
        .iter()
        .enumerate()
        .find_map(|(i, arg)| match arg.strip_prefix("--config-file") {
            Some("") => given.get(i + 1).cloned(),
            Some(rest) => rest.strip_prefix('=').map(str::to_owned),
            None => None,
        })
        .or_else(|| env("CAIRN_CONFIG_FILE"));
    let Some(path) = path else {
        return Ok(Applied {
            args,
            ignored: Vec::new(),
        });
    };
    let settings = read(Path::new(&path))?;
    let command = Config::command();
    let mut out = Applied {
        args,
        ignored: Vec::new(),
    };
    for (key, value) in settings {
        let Some(arg) = command
            .get_arguments()
            .find(|a| a.get_long() == Some(key.as_str()))
        else {
            out.ignored.push(key);
            continue;
        };
        let on_command_line = given
            .iter()
            .any(|a| a == &format!("--{key}") || a.starts_with(&format!("--{key}=")));
        let in_environment = arg
            .get_env()
            .and_then(|name| env(&name.to_string_lossy()))
            .is_some();
        if on_command_line || in_environment {
            continue;
        }
        match arg.get_action() {
            // A switch: present or not.
            ArgAction::SetTrue => {
                if value == "true" {
                    out.args.push(format!("--{key}").into());
                }
            }
            _ => out.args.push(format!("--{key}={value}").into()),
        }
    }
    Ok(out)
}

/// The file's settings as (flag name, value) pairs, in the file's order.
fn read(path: &Path) -> Result<Vec<(String, String)>, String> {
    let shown = path.display();
    let metadata = std::fs::metadata(path).map_err(|e| format!("--config-file {shown}: {e}"))?;
    if metadata.len() > MAX_CONFIG_FILE_BYTES {
        return Err(format!(
            "--config-file {shown}: {} bytes; a config file may have at most {MAX_CONFIG_FILE_BYTES}",
            metadata.len()
        ));
    }
    let text = std::fs::read_to_string(path).map_err(|e| format!("--config-file {shown}: {e}"))?;
    settings(&text).map_err(|e| format!("--config-file {shown}: {e}"))
}

/// Parses etcd's YAML configuration into (flag name, value) pairs.
pub fn settings(text: &str) -> Result<Vec<(String, String)>, String> {
    let documents = YamlLoader::load_from_str(text).map_err(|e| e.to_string())?;
    let Some(document) = documents.into_iter().next() else {
        return Ok(Vec::new());
    };
    let Yaml::Hash(top) = document else {
        if document.is_null() {
            return Ok(Vec::new());
        }
        return Err("expected a mapping of etcd's configuration keys".to_owned());
    };
    let mut out = Vec::new();
    for (key, value) in top {
        let key = key
            .as_str()
            .ok_or_else(|| format!("a key that is not a string: {key:?}"))?
            .to_owned();
        let section_prefix = match key.as_str() {
            "client-transport-security" => Some(""),
            "peer-transport-security" => Some("peer-"),
            _ => None,
        };
        match (section_prefix, value) {
            (Some(prefix), Yaml::Hash(section)) => {
                for (inner, value) in section {
                    let inner = inner
                        .as_str()
                        .ok_or_else(|| format!("{key}: a key that is not a string"))?;
                    if let Some(text) = scalar(&format!("{key}.{inner}"), &value)? {
                        out.push((format!("{prefix}{inner}"), text));
                    }
                }
            }
            (Some(_), Yaml::Null) => {}
            (Some(_), _) => return Err(format!("{key}: expected a mapping")),
            (None, value) => {
                if let Some(text) = scalar(&key, &value)? {
                    out.push((key, text));
                }
            }
        }
    }
    Ok(out)
}

/// A value as the flag would take it: lists comma-joined; `None` for an empty value (etcd's
/// sample file writes unset settings as empty strings or nulls).
fn scalar(key: &str, value: &Yaml) -> Result<Option<String>, String> {
    Ok(match value {
        Yaml::Null => None,
        Yaml::String(s) if s.is_empty() => None,
        Yaml::String(s) | Yaml::Real(s) => Some(s.clone()),
        Yaml::Integer(n) => Some(n.to_string()),
        Yaml::Boolean(b) => Some(b.to_string()),
        Yaml::Array(items) => {
            let parts = items
                .iter()
                .map(|item| scalar(key, item))
                .collect::<Result<Vec<_>, _>>()?;
            let parts: Vec<String> = parts.into_iter().flatten().collect();
            (!parts.is_empty()).then(|| parts.join(","))
        }
        Yaml::Hash(_) => return Err(format!("{key}: a mapping where a value was expected")),
        other => return Err(format!("{key}: an unreadable value {other:?}")),
    })
}

/// etcd's flags that Cairn does not take (etcd 3.4's, and a few of 3.5's), so that an
/// unknown-flag error can say the flag is etcd's and where Cairn's are listed.
pub const ETCD_FLAGS_NOT_TAKEN: &[&str] = &[
    "backend-batch-interval",
    "backend-batch-limit",
    "client-cert-allowed-hostname",
    "client-crl-file",
    "cors",
    "debug",
    "discovery",
    "discovery-fallback",
    "discovery-proxy",
    "discovery-srv",
    "discovery-srv-name",
    "enable-log-rotation",
    "enable-pprof",
    "enable-v2",
    "experimental-backend-bbolt-freelist-type",
    "experimental-compaction-batch-limit",
    "experimental-enable-lease-checkpoint",
    "experimental-enable-v2v3",
    "experimental-max-learners",
    "experimental-memory-mlock",
    "experimental-peer-skip-client-san-verification",
    "experimental-warning-apply-duration",
    "experimental-watch-progress-notify-interval",
    "grpc-keepalive-min-time",
    "host-whitelist",
    "initial-election-tick-advance",
    "log-package-levels",
    "log-rotation-config-json",
    "max-snapshots",
    "max-wals",
    "peer-cert-allowed-hostname",
    "peer-crl-file",
    "pre-vote",
    "proxy",
    "proxy-dial-timeout",
    "proxy-failure-wait",
    "proxy-read-timeout",
    "proxy-refresh-interval",
    "proxy-write-timeout",
    "unsafe-no-fsync",
    "v2-deprecation",
    "wal-dir",
];

/// The line to add to clap's error for an unknown `flag` (`--wal-dir=x`), if it is etcd's.
pub fn etcd_flag_hint(flag: &str) -> Option<String> {
    let name = flag.trim_start_matches('-');
    let name = name.split_once('=').map_or(name, |(name, _)| name);
    ETCD_FLAGS_NOT_TAKEN.contains(&name).then(|| {
        format!(
            "--{name} is an etcd flag Cairn does not take; docs/compatibility.md (Server flags) \
             lists the flags Cairn takes and those it does not"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "
name: 'infra1'
data-dir: /var/lib/etcd
wal-dir:
snapshot-count: 10000
heartbeat-interval: 100
listen-client-urls: http://127.0.0.1:2379
initial-cluster-state: 'new'
strict-reconfig-check: false
log-outputs: [stderr]
enable-v2: true
client-transport-security:
  cert-file: /etc/c.pem
  client-cert-auth: true
  trusted-ca-file:
peer-transport-security:
  key-file: /etc/p.key
  auto-tls: false
";

    #[test]
    fn etcds_sample_keys_become_flags() {
        let got = settings(SAMPLE).expect("parses");
        let got: Vec<(&str, &str)> = got.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(
            got,
            [
                ("name", "infra1"),
                ("data-dir", "/var/lib/etcd"),
                ("snapshot-count", "10000"),
                ("heartbeat-interval", "100"),
                ("listen-client-urls", "http://127.0.0.1:2379"),
                ("initial-cluster-state", "new"),
                ("strict-reconfig-check", "false"),
                ("log-outputs", "stderr"),
                ("enable-v2", "true"),
                ("cert-file", "/etc/c.pem"),
                ("client-cert-auth", "true"),
                ("peer-key-file", "/etc/p.key"),
                ("peer-auto-tls", "false"),
            ]
        );
    }

    #[test]
    fn flags_and_variables_win_over_the_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("etcd.conf.yml");
        std::fs::write(&path, SAMPLE).expect("write the file");
        let args = vec![
            OsString::from("cairn"),
            OsString::from(format!("--config-file={}", path.display())),
            OsString::from("--name=flag"),
        ];
        let env = |name: &str| (name == "CAIRN_SNAPSHOT_COUNT").then(|| "5".to_owned());
        let applied = apply(args, &env).expect("applies");
        let args: Vec<String> = applied
            .args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert!(args.contains(&"--name=flag".to_owned()));
        assert!(!args.iter().any(|a| a == "--name=infra1"));
        assert!(!args.iter().any(|a| a.starts_with("--snapshot-count")));
        assert!(args.contains(&"--data-dir=/var/lib/etcd".to_owned()));
        assert!(args.contains(&"--strict-reconfig-check=false".to_owned()));
        assert!(args.contains(&"--cert-file=/etc/c.pem".to_owned()));
        assert_eq!(applied.ignored, ["enable-v2"]);
        // And the result parses as Cairn's flags.
        let config = <Config as clap::Parser>::try_parse_from(&args).expect("flags parse");
        assert_eq!(config.name, "flag");
        assert!(!config.strict_reconfig_check);
        assert!(config.client_cert_auth);
    }

    #[test]
    fn etcds_own_flags_are_named_as_such() {
        assert!(etcd_flag_hint("--wal-dir=/x").is_some_and(|h| h.starts_with("--wal-dir is")));
        assert!(etcd_flag_hint("--no-such-flag").is_none());
    }

    #[test]
    fn bad_files_are_refused_clearly() {
        assert!(settings("- a\n- b\n").is_err());
        assert!(settings("name: [a, {b: c}]\n").is_err());
        assert_eq!(settings("").expect("empty"), []);
    }
}
