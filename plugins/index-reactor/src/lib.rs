//! A Cairn reactor that maintains a secondary index: for the JSON objects stored under a
//! prefix, `<index><field>/<value>/<key>` exists exactly while the object at `<key>` has
//! `<field>` equal to `<value>`.
//!
//! Config: `{"prefix": "/users/", "field": "city", "index": "/index/"}`. With it, putting
//! `/users/ada` = `{"city": "London"}` creates `/index/city/London//users/ada` (an empty
//! value); changing the city moves the entry; deleting the user, or a value without the field
//! or not a JSON object, removes it. String fields index by their text, others by their JSON
//! (`3`, `true`). Bind it to the prefix (its own writes are outside the prefix, so they never
//! trigger it):
//!
//! `cairnctl plugin bind users-by-city --plugin index --kind reactor --key /users/ --prefix
//! --config '{"prefix": "/users/", "field": "city", "index": "/index/"}'`
//!
//! It relies on each event's previous version (the host sends it) to find the entry to
//! remove, so it reads nothing from the store. Because the host applies each step exactly
//! once and in revision order, the index equals what one pass over the source's history
//! computes.

use cairn_sdk::{Context, Event, EventType, Op, Reactor};
use serde::Deserialize;

/// The binding config.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub prefix: String,
    pub field: String,
    pub index: String,
}

/// The reactor.
pub struct IndexReactor;

impl Reactor for IndexReactor {
    fn react(ctx: &Context<'_>, _revision: i64, events: &[Event]) -> Vec<Op> {
        let config: Config = match serde_json::from_slice(ctx.config()) {
            Ok(config) => config,
            // A reactor that cannot read its config fails its step, which the host counts
            // and, repeated, pauses on.
            Err(e) => panic!("index-reactor: bad binding config: {e}"),
        };
        index_ops(&config, events)
    }
}

cairn_sdk::export_reactor!(IndexReactor);

/// The writes that keep the index right after `events`.
pub fn index_ops(config: &Config, events: &[Event]) -> Vec<Op> {
    let mut ops = Vec::new();
    for event in events {
        if !event.kv.key.starts_with(config.prefix.as_bytes()) {
            continue;
        }
        let old = event
            .prev_kv
            .as_ref()
            .and_then(|kv| field_value(&kv.value, &config.field));
        let new = match event.kind {
            EventType::Put => field_value(&event.kv.value, &config.field),
            EventType::Delete => None,
        };
        if old == new {
            continue;
        }
        if let Some(old) = old {
            ops.push(Op::delete(entry(config, &old, &event.kv.key)));
        }
        if let Some(new) = new {
            ops.push(Op::put(entry(config, &new, &event.kv.key), ""));
        }
    }
    ops
}

/// The index key for `key` at `value`.
pub fn entry(config: &Config, value: &str, key: &[u8]) -> Vec<u8> {
    let mut out = format!("{}{}/{}/", config.index, config.field, value).into_bytes();
    out.extend_from_slice(key);
    out
}

/// The field's value as the index spells it, if the value is a JSON object that has it.
fn field_value(value: &[u8], field: &str) -> Option<String> {
    let serde_json::Value::Object(object) = serde_json::from_slice(value).ok()? else {
        return None;
    };
    match object.get(field)? {
        serde_json::Value::String(text) => Some(text.clone()),
        other => serde_json::to_string(other).ok(),
    }
}

#[cfg(test)]
mod tests {
    use cairn_sdk::testing::{self, MemStore};
    use cairn_sdk::{Event, EventType, KeyValue, Op};

    use super::IndexReactor;

    const CONFIG: &[u8] = br#"{"prefix": "/users/", "field": "city", "index": "/index/"}"#;

    fn kv(key: &str, value: &str) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: value.into(),
            create_revision: 2,
            mod_revision: 3,
            version: 1,
            lease: 0,
        }
    }

    fn event(kind: EventType, key: &str, value: &str, prev: Option<&str>) -> Event {
        Event {
            kind,
            kv: kv(key, value),
            prev_kv: prev.map(|p| kv(key, p)),
        }
    }

    fn react(events: &[Event]) -> Vec<Op> {
        testing::react::<IndexReactor>(&MemStore::new(), CONFIG, 3, events)
    }

    #[test]
    fn puts_moves_and_deletes_keep_the_index() {
        let london = r#"{"city": "London"}"#;
        let paris = r#"{"city": "Paris"}"#;
        assert_eq!(
            react(&[event(EventType::Put, "/users/ada", london, None)]),
            [Op::put("/index/city/London//users/ada", "")]
        );
        assert_eq!(
            react(&[event(EventType::Put, "/users/ada", paris, Some(london))]),
            [
                Op::delete("/index/city/London//users/ada"),
                Op::put("/index/city/Paris//users/ada", "")
            ]
        );
        assert_eq!(
            react(&[event(EventType::Put, "/users/ada", paris, Some(paris))]),
            []
        );
        assert_eq!(
            react(&[event(EventType::Delete, "/users/ada", "", Some(paris))]),
            [Op::delete("/index/city/Paris//users/ada")]
        );
        assert_eq!(
            react(&[event(EventType::Put, "/users/ada", "not json", Some(paris))]),
            [Op::delete("/index/city/Paris//users/ada")]
        );
    }
}
