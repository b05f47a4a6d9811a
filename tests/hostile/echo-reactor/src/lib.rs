//! A reactor that writes into its own range: for every put of `k` it puts `k/`, which (bound
//! with `--retrigger`) triggers it again, without end but for the host's depth limit.

use cairn_sdk::{Context, Event, EventType, Op, Reactor};

/// Echoes every put one level deeper.
pub struct EchoReactor;

impl Reactor for EchoReactor {
    fn react(_ctx: &Context<'_>, _revision: i64, events: &[Event]) -> Vec<Op> {
        events
            .iter()
            .filter(|e| e.kind == EventType::Put)
            .map(|e| {
                let mut key = e.kv.key.clone();
                key.push(b'/');
                Op::put(key, e.kv.value.clone())
            })
            .collect()
    }
}

cairn_sdk::export_reactor!(EchoReactor);
