//! A Cairn reactor for cascading deletes: deleting a parent key deletes its children.
//!
//! Config: `{"parent": "/projects/", "children": ["/tasks/", "/members/"]}`. When
//! `/projects/<id>` is deleted, every key under `/tasks/<id>/` and `/members/<id>/` is
//! deleted, in one step applied exactly once. Bind it to the parent prefix:
//!
//! `cairnctl plugin bind cascade --plugin cascade --kind reactor --key /projects/ --prefix
//! --config '{"parent": "/projects/", "children": ["/tasks/"]}'`

use cairn_sdk::{Context, Event, EventType, Op, Reactor, prefix_end};
use serde::Deserialize;

/// The binding config.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub parent: String,
    pub children: Vec<String>,
}

/// The reactor.
pub struct CascadeReactor;

impl Reactor for CascadeReactor {
    fn react(ctx: &Context<'_>, _revision: i64, events: &[Event]) -> Vec<Op> {
        let config: Config = match serde_json::from_slice(ctx.config()) {
            Ok(config) => config,
            Err(e) => panic!("cascade-reactor: bad binding config: {e}"),
        };
        cascade(&config, events)
    }
}

cairn_sdk::export_reactor!(CascadeReactor);

/// The deletes that follow `events`.
pub fn cascade(config: &Config, events: &[Event]) -> Vec<Op> {
    let mut ops = Vec::new();
    for event in events {
        if event.kind != EventType::Delete {
            continue;
        }
        let Some(id) = event.kv.key.strip_prefix(config.parent.as_bytes()) else {
            continue;
        };
        if id.is_empty() {
            continue;
        }
        for child in &config.children {
            let mut prefix = child.as_bytes().to_vec();
            prefix.extend_from_slice(id);
            prefix.push(b'/');
            let end = prefix_end(&prefix);
            ops.push(Op::delete_range(prefix, end));
        }
    }
    ops
}

#[cfg(test)]
mod tests {
    use cairn_sdk::testing::{self, MemStore};
    use cairn_sdk::{Event, EventType, KeyValue, Op};

    use super::CascadeReactor;

    fn event(kind: EventType, key: &str) -> Event {
        Event {
            kind,
            kv: KeyValue {
                key: key.into(),
                value: Vec::new(),
                create_revision: 2,
                mod_revision: 4,
                version: 0,
                lease: 0,
            },
            prev_kv: None,
        }
    }

    #[test]
    fn deleting_a_parent_deletes_its_children() {
        let config = br#"{"parent": "/projects/", "children": ["/tasks/", "/members/"]}"#;
        let ops = testing::react::<CascadeReactor>(
            &MemStore::new(),
            config,
            4,
            &[
                event(EventType::Delete, "/projects/p1"),
                event(EventType::Put, "/projects/p2"),
            ],
        );
        assert_eq!(
            ops,
            [
                Op::delete_range("/tasks/p1/", "/tasks/p10"),
                Op::delete_range("/members/p1/", "/members/p10")
            ]
        );
    }
}
