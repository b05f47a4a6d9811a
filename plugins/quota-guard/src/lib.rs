//! A Cairn guard: at most `max_keys` keys under a prefix.
//!
//! Config: `{"prefix": "/jobs/", "max_keys": 3}`. The guard works out how many keys the
//! prefix would hold after the request (the store's count, plus the keys the request's puts
//! create, minus the keys its deletes remove, in request order) and denies the request if
//! that is more than `max_keys` and more than now. So a request that does not add keys is
//! always allowed: a prefix already over quota (the binding came later) can still be updated
//! and cleaned up. A bad config denies every write (fail closed).
//!
//! It costs one `count` per distinct put key and per disjoint deleted range, plus one: never a
//! `range`, however many keys a delete covers.

use std::collections::BTreeMap;

mod span;

use cairn_sdk::{Context, Decision, Guard, Op, Store};
use serde::Deserialize;
use span::Span;

/// The binding config.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The keys counted: those that start with it.
    pub prefix: String,
    /// The most keys the prefix may hold.
    pub max_keys: u64,
}

/// The guard: counts the keys under the prefix as the request would leave them.
pub struct QuotaGuard;

impl Guard for QuotaGuard {
    fn check(ctx: &Context<'_>, ops: &[Op]) -> Decision {
        let config: Config = match serde_json::from_slice(ctx.config()) {
            Ok(config) => config,
            Err(e) => {
                let reason = format!("quota-guard: bad binding config: {e}");
                ctx.warn(&reason);
                return Decision::Deny(reason);
            }
        };
        let prefix = Span::prefix(config.prefix.as_bytes());
        let store = ctx.store();
        let now = store.count(&prefix.start, &prefix.end_for_store());
        let after = keys_after(store, &prefix, ops, now);
        if after > config.max_keys && after > now {
            ctx.debug(&format!(
                "quota: {} would hold {after} keys, now {now}",
                config.prefix
            ));
            return Decision::Deny(format!(
                "quota: {} holds at most {} keys",
                config.prefix, config.max_keys
            ));
        }
        Decision::Allow
    }
}

cairn_sdk::export_guard!(QuotaGuard);

/// How many keys `prefix` holds after `ops`, given that it holds `now` keys before.
///
/// With S the keys there now, P the keys put, and U the keys the deletes cover (all within
/// the prefix): after = |S| - |S ∩ U| - |S ∩ P \ U| + |keys of P whose last write is a put|.
fn keys_after(store: &dyn Store, prefix: &Span, ops: &[Op], now: u64) -> u64 {
    // Each put key with the index of its last put.
    let mut puts: BTreeMap<&[u8], usize> = BTreeMap::new();
    // Each delete, clipped to the prefix, with its index.
    let mut deletes: Vec<(usize, Span)> = Vec::new();
    for (index, op) in ops.iter().enumerate() {
        match op {
            Op::Put(put) if prefix.contains(&put.key) => {
                puts.insert(&put.key, index);
            }
            Op::Put(_) => {}
            Op::DeleteRange(delete) => {
                let span = Span::from_range(&delete.key, &delete.range_end);
                if let Some(span) = span.intersect(prefix) {
                    deletes.push((index, span));
                }
            }
        }
    }
    let deleted_now = count_union(store, deletes.iter().map(|(_, span)| span.clone()));
    let mut put_now = 0;
    let mut put_after = 0;
    for (&key, &last_put) in &puts {
        let covered = |after: usize| {
            deletes
                .iter()
                .any(|(index, span)| *index >= after && span.contains(key))
        };
        if !covered(0) && store.count(key, b"") > 0 {
            put_now += 1;
        }
        if !covered(last_put) {
            put_after += 1;
        }
    }
    now.saturating_sub(deleted_now)
        .saturating_sub(put_now)
        .saturating_add(put_after)
}

/// How many keys the store holds in the union of `spans`: one count per disjoint range.
fn count_union(store: &dyn Store, spans: impl Iterator<Item = Span>) -> u64 {
    let mut spans: Vec<Span> = spans.collect();
    spans.sort_by(|a, b| a.start.cmp(&b.start));
    let mut merged: Vec<Span> = Vec::new();
    for span in spans {
        match merged.last_mut() {
            Some(last) if last.reaches(&span.start) => last.extend_to(span.end),
            _ => merged.push(span),
        }
    }
    merged.iter().map(|span| span.count_in(store)).sum()
}

#[cfg(test)]
#[path = "lib_test.rs"]
mod tests;
