//! {{name}}: a Cairn reactor.
//!
//! For each key put in the bound range, writes when it last changed (the revision) under the
//! prefix the binding's config names (`/last-changed/` without a config). Bind it to the keys
//! it follows:
//!
//! `cairnctl plugin bind {{name}} --plugin {{name}} --kind reactor --key /app/ --prefix`

use cairn_sdk::{Context, Event, EventType, Op, Reactor};

pub struct Plugin;

impl Reactor for Plugin {
    fn react(ctx: &Context<'_>, revision: i64, events: &[Event]) -> Vec<Op> {
        let prefix = match ctx.config() {
            [] => &b"/last-changed/"[..],
            config => config,
        };
        events
            .iter()
            .filter(|event| event.kind == EventType::Put)
            .map(|event| {
                let mut key = prefix.to_vec();
                key.extend_from_slice(&event.kv.key);
                Op::put(key, revision.to_string())
            })
            .collect()
    }
}

cairn_sdk::export_reactor!(Plugin);

#[cfg(test)]
mod tests {
    use cairn_sdk::testing::{self, MemStore};
    use cairn_sdk::{Event, EventType, KeyValue, Op};

    use super::Plugin;

    #[test]
    fn puts_are_stamped() {
        let store = MemStore::new();
        let event = Event {
            kind: EventType::Put,
            kv: KeyValue {
                key: "/app/a".into(),
                ..KeyValue::default()
            },
            prev_kv: None,
        };
        let ops = testing::react::<Plugin>(&store, b"", 7, &[event]);
        assert_eq!(ops, vec![Op::put("/last-changed//app/a", "7")]);
    }
}
