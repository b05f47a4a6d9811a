//! Environment variables as flags, by etcdctl's rule: `ETCDCTL_DIAL_TIMEOUT=3s` is
//! `--dial-timeout=3s` for every global flag. A variable and its flag on the same command line
//! conflict (etcdctl's words and exit status), and an unknown `ETCDCTL_` variable gets a
//! warning. `CAIRNCTL_` variables work the same and win over their `ETCDCTL_` twins.

use std::ffi::OsString;

use clap::CommandFactory;

use crate::cli::Cli;

/// Variables that are not flags: etcdctl reads `ETCDCTL_API` itself, and `watch` and `lock`
/// set `ETCDCTL_WATCH_*` for the commands they run.
const NOT_FLAGS: &[&str] = &["API", "WATCH_KEY", "WATCH_RANGE_END"];

/// `args` with a `--flag=value` after the program name for each variable in `vars` that names
/// a global flag, and the warnings to print for the variables that name none.
pub fn args_with_env(
    args: Vec<OsString>,
    vars: impl IntoIterator<Item = (OsString, OsString)>,
) -> Result<(Vec<OsString>, Vec<String>), String> {
    let command = Cli::command();
    // The top-level flags: (long name, short name).
    let flags: Vec<(String, Option<char>)> = command
        .get_arguments()
        .filter_map(|arg| Some((arg.get_long()?.to_owned(), arg.get_short())))
        .filter(|(long, _)| long != "help")
        .collect();
    // The command line up to `--` (what follows belongs to a command `lock` or `watch` runs).
    let given: Vec<String> = args
        .iter()
        .skip(1)
        .map(|a| a.to_string_lossy().into_owned())
        .take_while(|a| a != "--")
        .collect();
    let on_command_line = |long: &str, short: Option<char>| {
        given.iter().any(|arg| {
            arg.strip_prefix("--")
                .map(|rest| rest == long || rest.starts_with(&format!("{long}=")))
                .unwrap_or(false)
                || short.is_some_and(|s| {
                    arg.strip_prefix('-')
                        .is_some_and(|rest| !rest.starts_with('-') && rest.starts_with(s))
                })
        })
    };

    let mut chosen: Vec<(String, String, String)> = Vec::new(); // (flag, variable, value)
    let mut warnings = Vec::new();
    let mut vars: Vec<(String, String)> = vars
        .into_iter()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect();
    // ETCDCTL_ first, so that a CAIRNCTL_ twin replaces it.
    vars.sort_by_key(|(name, _)| (!name.starts_with("ETCDCTL_"), name.clone()));
    for (name, value) in vars {
        let Some(rest) = name
            .strip_prefix("ETCDCTL_")
            .or_else(|| name.strip_prefix("CAIRNCTL_"))
        else {
            continue;
        };
        if NOT_FLAGS.contains(&rest) {
            continue;
        }
        let long = rest.to_lowercase().replace('_', "-");
        let Some((_, short)) = flags.iter().find(|(l, _)| *l == long) else {
            warnings.push(format!(
                "cairnctl: unrecognized environment variable {name}={value}"
            ));
            continue;
        };
        if on_command_line(&long, *short) {
            return Err(format!(
                "conflicting environment variable {name:?} is shadowed by corresponding \
                 command-line flag (either unset environment variable or disable flag)"
            ));
        }
        chosen.retain(|(flag, _, _)| *flag != long);
        chosen.push((long, name, value));
    }
    let mut out = Vec::with_capacity(args.len() + chosen.len());
    let mut args = args.into_iter();
    out.extend(args.next());
    out.extend(
        chosen
            .into_iter()
            .map(|(flag, _, value)| OsString::from(format!("--{flag}={value}"))),
    );
    out.extend(args);
    Ok((out, warnings))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str], vars: &[(&str, &str)]) -> Result<(Vec<String>, Vec<String>), String> {
        let (args, warnings) = args_with_env(
            args.iter().map(OsString::from).collect(),
            vars.iter()
                .map(|(k, v)| (OsString::from(k), OsString::from(v))),
        )?;
        Ok((
            args.into_iter()
                .map(|a| a.to_string_lossy().into_owned())
                .collect(),
            warnings,
        ))
    }

    #[test]
    fn variables_become_flags() {
        let (args, warnings) = run(
            &["cairnctl", "get", "foo"],
            &[
                ("ETCDCTL_ENDPOINTS", "a:1,b:2"),
                ("ETCDCTL_API", "3"),
                ("HOME", "/root"),
            ],
        )
        .expect("no conflict");
        assert_eq!(args, ["cairnctl", "--endpoints=a:1,b:2", "get", "foo"]);
        assert!(warnings.is_empty());
    }

    #[test]
    fn cairnctl_variables_win_over_etcdctl_ones() {
        let (args, _) = run(
            &["cairnctl", "get", "foo"],
            &[
                ("CAIRNCTL_WRITE_OUT", "json"),
                ("ETCDCTL_WRITE_OUT", "fields"),
            ],
        )
        .expect("no conflict");
        assert_eq!(args, ["cairnctl", "--write-out=json", "get", "foo"]);
    }

    #[test]
    fn a_variable_and_its_flag_conflict() {
        let error = run(
            &["cairnctl", "-w", "json", "get", "foo"],
            &[("ETCDCTL_WRITE_OUT", "fields")],
        )
        .expect_err("conflict");
        assert!(
            error.starts_with("conflicting environment variable \"ETCDCTL_WRITE_OUT\""),
            "{error}"
        );
        // After `--`, flags belong to the command lock runs.
        run(
            &["cairnctl", "lock", "L", "--", "tool", "--endpoints=x"],
            &[("ETCDCTL_ENDPOINTS", "a:1")],
        )
        .expect("no conflict");
    }

    #[test]
    fn unknown_variables_are_warned_about() {
        let (_, warnings) = run(&["cairnctl", "version"], &[("ETCDCTL_BOGUS", "1")]).expect("ok");
        assert_eq!(
            warnings,
            ["cairnctl: unrecognized environment variable ETCDCTL_BOGUS=1"]
        );
    }
}
