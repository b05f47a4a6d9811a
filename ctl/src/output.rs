//! What `cairnctl` prints for Cairn's own services (the plugin registry, snapshot status): a
//! simple format, or the response as proto3 JSON (pbjson: proto field names, 64-bit integers
//! as strings, bytes as base64) on one line. etcd's services print through `print`.
//!
//! Printers write to any `Write`, so tests read what a user would see.

use std::io::{self, Write};

use cairn_proto::cairn_plugin::{
    Binding, FailurePolicy, GetResponse, Kind, ListResponse, PluginInfo,
};

use crate::key_range::display_range;

/// A response as one line of proto3 JSON (Cairn's own services, which etcdctl does not print).
pub fn json(out: &mut dyn Write, value: &impl serde::Serialize) -> io::Result<()> {
    serde_json::to_writer(&mut *out, value).map_err(io::Error::other)?;
    writeln!(out)
}

/// `plugin list`: a table of plugins, a blank line, a table of bindings.
pub fn plugin_list(out: &mut dyn Write, response: &ListResponse) -> io::Result<()> {
    plugin_table(out, &response.plugins)?;
    writeln!(out)?;
    binding_table(out, &response.bindings)?;
    reactor_table(out, &response.bindings)
}

/// `plugin get`: the plugin's fields, a blank line, the bindings that use it.
pub fn plugin_get(out: &mut dyn Write, response: &GetResponse) -> io::Result<()> {
    if let Some(plugin) = &response.plugin {
        writeln!(out, "name: {}", plugin.name)?;
        writeln!(out, "sha256: {}", plugin.sha256)?;
        writeln!(out, "size: {}", plugin.size)?;
        writeln!(out, "exports: {}", plugin.exports.join(", "))?;
        writeln!(out)?;
    }
    binding_table(out, &response.bindings)?;
    reactor_table(out, &response.bindings)
}

/// Where each reactor stands, after a blank line; nothing when no binding is a reactor.
fn reactor_table(out: &mut dyn Write, bindings: &[Binding]) -> io::Result<()> {
    let rows: Vec<Vec<String>> = bindings
        .iter()
        .filter_map(|b| {
            let s = b.reactor_status.as_ref()?;
            let o = b.reactor_options.unwrap_or_default();
            Some(vec![
                b.name.clone(),
                s.cursor.to_string(),
                s.steps.to_string(),
                s.writes.to_string(),
                s.failures.to_string(),
                if s.paused { "paused" } else { "running" }.to_owned(),
                format!(
                    "{}{}",
                    o.max_depth,
                    if o.retrigger { " retrigger" } else { "" }
                ),
                s.last_error.clone(),
            ])
        })
        .collect();
    if rows.is_empty() {
        return Ok(());
    }
    writeln!(out)?;
    table(
        out,
        &[
            "REACTOR",
            "CURSOR",
            "STEPS",
            "WRITES",
            "FAILURES",
            "STATE",
            "DEPTH",
            "LAST ERROR",
        ],
        rows,
    )
}

fn plugin_table(out: &mut dyn Write, plugins: &[PluginInfo]) -> io::Result<()> {
    let rows = plugins
        .iter()
        .map(|plugin| {
            vec![
                plugin.name.clone(),
                plugin.sha256.chars().take(12).collect(),
                plugin.size.to_string(),
                plugin.exports.join(","),
            ]
        })
        .collect();
    table(out, &["PLUGIN", "SHA256", "SIZE", "EXPORTS"], rows)
}

fn binding_table(out: &mut dyn Write, bindings: &[Binding]) -> io::Result<()> {
    let rows = bindings
        .iter()
        .map(|binding| {
            let stats = binding.stats.clone().unwrap_or_default();
            vec![
                binding.name.clone(),
                binding.plugin.clone(),
                kind_name(binding.kind),
                display_range(&binding.key, &binding.range_end),
                failure_policy_name(binding.failure_policy),
                stats.calls.to_string(),
                stats.denials.to_string(),
                stats.failures.to_string(),
                stats.fuel_used.to_string(),
            ]
        })
        .collect();
    table(
        out,
        &[
            "BINDING",
            "PLUGIN",
            "KIND",
            "RANGE",
            "FAILURE POLICY",
            "CALLS",
            "DENIALS",
            "FAILURES",
            "FUEL USED",
        ],
        rows,
    )
}

pub fn kind_name(kind: i32) -> String {
    match Kind::try_from(kind) {
        Ok(Kind::Guard) => "guard".to_owned(),
        Ok(Kind::Compare) => "compare".to_owned(),
        Ok(Kind::Policy) => "policy".to_owned(),
        Ok(Kind::WatchFilter) => "watch-filter".to_owned(),
        Ok(Kind::Reactor) => "reactor".to_owned(),
        Ok(Kind::Unspecified) => "unspecified".to_owned(),
        Err(_) => format!("unknown({kind})"),
    }
}

pub fn failure_policy_name(policy: i32) -> String {
    match FailurePolicy::try_from(policy) {
        Ok(FailurePolicy::FailClosed) => "fail-closed".to_owned(),
        Ok(FailurePolicy::Ignore) => "ignore".to_owned(),
        Err(_) => format!("unknown({policy})"),
    }
}

/// Columns padded to their widest cell, two spaces apart; the header always shows, so an empty
/// table still says what it would list.
fn table(out: &mut dyn Write, headers: &[&str], rows: Vec<Vec<String>>) -> io::Result<()> {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let header_row = headers.iter().map(|h| (*h).to_owned()).collect();
    for row in std::iter::once(header_row).chain(rows) {
        let mut line = String::new();
        for (column, (cell, width)) in row.iter().zip(&widths).enumerate() {
            if column + 1 == widths.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<width$}  "));
            }
        }
        writeln!(out, "{}", line.trim_end())?;
    }
    Ok(())
}
