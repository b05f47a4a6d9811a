//! `get`, `put`, `del` and `compaction`: etcdctl's KV commands, with its argument rules and
//! messages, over etcd's KV service.

use std::io::Write;

use cairn_proto::etcdserverpb::{
    CompactionRequest, DeleteRangeRequest, PutRequest, RangeRequest, range_request,
};

use crate::cli::{CompactionArgs, DelArgs, GetArgs, PutArgs};
use crate::error::Error;
use crate::key_range::prefix_range;
use crate::print::WriteOut;
use crate::run::Session;

/// The range end clientv3 gives `--from-key`: every key from the key on.
const FROM_KEY: &[u8] = b"\0";

/// A key and range end from etcdctl's `<key> [range_end]` with `--prefix` / `--from-key`.
fn key_range(
    command: &str,
    args: &[String],
    prefix: bool,
    from_key: bool,
) -> Result<(Vec<u8>, Vec<u8>), Error> {
    let Some(key) = args.first() else {
        return Err(Error::BadArgs(format!(
            "{command} command needs one argument as key and an optional argument as range_end"
        )));
    };
    if prefix && from_key {
        return Err(Error::BadArgs(
            "`--prefix` and `--from-key` cannot be set at the same time, choose one".to_owned(),
        ));
    }
    let mut key = key.clone().into_bytes();
    let mut range_end = Vec::new();
    if let Some(end) = args.get(1) {
        if prefix || from_key {
            return Err(Error::BadArgs(
                "too many arguments, only accept one argument when `--prefix` or `--from-key` is set"
                    .to_owned(),
            ));
        }
        range_end = end.clone().into_bytes();
    }
    if prefix {
        (key, range_end) = prefix_range(&key);
    }
    if from_key {
        if key.is_empty() {
            key = FROM_KEY.to_vec();
        }
        range_end = FROM_KEY.to_vec();
    }
    Ok((key, range_end))
}

pub async fn get(session: &Session, args: GetArgs, out: &mut dyn Write) -> Result<(), Error> {
    let (key, range_end) = key_range("get", &args.args, args.prefix, args.from_key)?;
    let serializable = match args.consistency.as_str() {
        "s" => true,
        "l" => false,
        other => {
            return Err(Error::Unsupported(format!(
                "unknown consistency flag {other:?}"
            )));
        }
    };
    use range_request::{SortOrder, SortTarget};
    let mut sort_order = match args.order.to_uppercase().as_str() {
        "ASCEND" => SortOrder::Ascend,
        "DESCEND" => SortOrder::Descend,
        "" => SortOrder::None,
        _ => {
            return Err(Error::Unsupported(format!("bad sort order {}", args.order)));
        }
    };
    let sort_target = match args.sort_by.to_uppercase().as_str() {
        "CREATE" => SortTarget::Create,
        "KEY" | "" => SortTarget::Key,
        "MODIFY" => SortTarget::Mod,
        "VALUE" => SortTarget::Value,
        "VERSION" => SortTarget::Version,
        _ => {
            return Err(Error::Unsupported(format!(
                "bad sort target {}",
                args.sort_by
            )));
        }
    };
    // clientv3: keys come back in ascending key order anyway, so that sort is not asked for.
    if sort_target == SortTarget::Key && sort_order == SortOrder::Ascend {
        sort_order = SortOrder::None;
    }
    let mut printer = session.printer;
    if args.print_value_only {
        if printer.format != WriteOut::Simple {
            return Err(Error::BadArgs(
                "print-value-only is only for `--write-out=simple`".to_owned(),
            ));
        }
        printer.style.value_only = true;
    }
    let request = RangeRequest {
        key,
        range_end,
        limit: args.limit,
        revision: args.rev.max(0),
        sort_order: sort_order as i32,
        sort_target: sort_target as i32,
        serializable,
        keys_only: args.keys_only,
        ..RangeRequest::default()
    };
    let connection = session.dial().await?;
    let response = connection
        .deadline(connection.kv().range(connection.request(request)))
        .await?;
    printer.print(out, &response)
}

pub async fn put(
    session: &Session,
    args: PutArgs,
    input: &mut dyn std::io::BufRead,
    out: &mut dyn Write,
) -> Result<(), Error> {
    let usage = || {
        Error::BadArgs(
            "put command needs 1 argument and input from stdin or 2 arguments".to_owned(),
        )
    };
    let key = args.args.first().ok_or_else(usage)?.clone();
    if args.ignore_value && args.args.len() > 1 {
        return Err(Error::BadArgs(
            "put command needs only 1 argument when 'ignore-value' is set".to_owned(),
        ));
    }
    let value = match (args.ignore_value, args.args.get(1)) {
        (true, _) => Vec::new(),
        (false, Some(value)) => value.clone().into_bytes(),
        (false, None) => {
            let mut value = Vec::new();
            input.read_to_end(&mut value)?;
            if value.is_empty() {
                return Err(usage());
            }
            value
        }
    };
    let lease = i64::from_str_radix(&args.lease, 16).map_err(|e| {
        Error::BadArgs(format!(
            "bad lease ID ({}), expecting ID in Hex",
            go_parse_error("ParseInt", &args.lease, &e)
        ))
    })?;
    let request = PutRequest {
        key: key.into_bytes(),
        value,
        lease,
        prev_kv: args.prev_kv,
        ignore_value: args.ignore_value,
        ignore_lease: args.ignore_lease,
    };
    let connection = session.dial().await?;
    let response = connection
        .deadline(connection.kv().put(connection.request(request)))
        .await?;
    session.printer.print(out, &response)
}

pub async fn del(session: &Session, args: DelArgs, out: &mut dyn Write) -> Result<(), Error> {
    if args.args.len() > 2 {
        return Err(Error::BadArgs(
            "del command needs one argument as key and an optional argument as range_end"
                .to_owned(),
        ));
    }
    let (key, range_end) = key_range("del", &args.args, args.prefix, args.from_key)?;
    let request = DeleteRangeRequest {
        key,
        range_end,
        prev_kv: args.prev_kv,
    };
    let connection = session.dial().await?;
    let response = connection
        .deadline(connection.kv().delete_range(connection.request(request)))
        .await?;
    session.printer.print(out, &response)
}

pub async fn compaction(
    session: &Session,
    args: CompactionArgs,
    out: &mut dyn Write,
) -> Result<(), Error> {
    let [revision] = args.args.as_slice() else {
        return Err(Error::BadArgs(
            "compaction command needs 1 argument".to_owned(),
        ));
    };
    let revision: i64 = revision
        .parse()
        .map_err(|e| Error::Failed(go_parse_error("ParseInt", revision, &e)))?;
    let request = CompactionRequest {
        revision,
        physical: args.physical,
    };
    let connection = session.dial().await?;
    let response = connection
        .deadline(connection.kv().compact(connection.request(request)))
        .await?;
    // etcdctl prints this line whatever the output format.
    let _ = response;
    writeln!(out, "compacted revision {revision}")?;
    Ok(())
}

/// Go's `strconv` error text: `strconv.ParseInt: parsing "x": invalid syntax`.
pub fn go_parse_error(function: &str, text: &str, error: &std::num::ParseIntError) -> String {
    use std::num::IntErrorKind;
    let reason = match error.kind() {
        IntErrorKind::PosOverflow | IntErrorKind::NegOverflow => "value out of range",
        _ => "invalid syntax",
    };
    format!("strconv.{function}: parsing {text:?}: {reason}")
}
