//! Moves between the generated WIT types and the SDK's own: field for field, no copies of
//! keys or values.

use super::bindings::guard_world::cairn::plugin::{log as wit_log, types as wit};
use super::bindings::policy_world::exports::cairn::plugin::policy as wit_policy;
use super::bindings::watch_filter_world::exports::cairn::plugin::watch_filter as wit_filter;
use crate::context::Level;
use crate::types::{
    Decision, DeleteRange, Event, EventType, KeyValue, Op, Operation, Put, Value, Verdict,
};

impl From<wit::KeyValue> for KeyValue {
    fn from(kv: wit::KeyValue) -> Self {
        Self {
            key: kv.key,
            value: kv.value,
            create_revision: kv.create_revision,
            mod_revision: kv.mod_revision,
            version: kv.version,
            lease: kv.lease,
        }
    }
}

impl From<KeyValue> for wit::KeyValue {
    fn from(kv: KeyValue) -> Self {
        Self {
            key: kv.key,
            value: kv.value,
            create_revision: kv.create_revision,
            mod_revision: kv.mod_revision,
            version: kv.version,
            lease: kv.lease,
        }
    }
}

impl From<wit::Op> for Op {
    fn from(op: wit::Op) -> Self {
        match op {
            wit::Op::Put(put) => Self::Put(Put {
                key: put.key,
                value: put.value,
                lease: put.lease,
                ignore_value: put.ignore_value,
                ignore_lease: put.ignore_lease,
            }),
            wit::Op::DeleteRange(delete) => Self::DeleteRange(DeleteRange {
                key: delete.key,
                range_end: delete.range_end,
            }),
        }
    }
}

impl From<Op> for wit::Op {
    fn from(op: Op) -> Self {
        match op {
            Op::Put(put) => Self::Put(wit::Put {
                key: put.key,
                value: put.value,
                lease: put.lease,
                ignore_value: put.ignore_value,
                ignore_lease: put.ignore_lease,
            }),
            Op::DeleteRange(delete) => Self::DeleteRange(wit::DeleteRange {
                key: delete.key,
                range_end: delete.range_end,
            }),
        }
    }
}

impl From<Decision> for wit::Decision {
    fn from(decision: Decision) -> Self {
        match decision {
            Decision::Allow => Self::Allow,
            Decision::Deny(reason) => Self::Deny(reason),
        }
    }
}

impl From<Value> for wit::Value {
    fn from(value: Value) -> Self {
        match value {
            Value::Int(int) => Self::Int(int),
            Value::Bytes(bytes) => Self::Bytes(bytes),
        }
    }
}

impl From<wit::Event> for Event {
    fn from(event: wit::Event) -> Self {
        Self {
            kind: match event.type_ {
                wit::EventType::Put => EventType::Put,
                wit::EventType::Delete => EventType::Delete,
            },
            kv: event.kv.into(),
            prev_kv: event.prev_kv.map(Into::into),
        }
    }
}

impl From<Event> for wit::Event {
    fn from(event: Event) -> Self {
        Self {
            type_: match event.kind {
                EventType::Put => wit::EventType::Put,
                EventType::Delete => wit::EventType::Delete,
            },
            kv: event.kv.into(),
            prev_kv: event.prev_kv.map(Into::into),
        }
    }
}

impl From<wit_policy::Operation> for Operation {
    fn from(operation: wit_policy::Operation) -> Self {
        match operation {
            wit_policy::Operation::Read => Self::Read,
            wit_policy::Operation::Write => Self::Write,
            wit_policy::Operation::Watch => Self::Watch,
        }
    }
}

impl From<Verdict> for wit_filter::Verdict {
    fn from(verdict: Verdict) -> Self {
        match verdict {
            Verdict::Keep => Self::Keep,
            Verdict::Drop => Self::Drop,
            Verdict::Replace(event) => Self::Replace(event.into()),
        }
    }
}

impl From<Level> for wit_log::Level {
    fn from(level: Level) -> Self {
        match level {
            Level::Debug => Self::Debug,
            Level::Info => Self::Info,
            Level::Warn => Self::Warn,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ops, key-values and events survive a trip through the WIT types unchanged.
    #[test]
    fn round_trips() {
        let ops = [
            Op::Put(Put {
                key: b"k".to_vec(),
                value: b"v".to_vec(),
                lease: 7,
                ignore_value: true,
                ignore_lease: false,
            }),
            Op::delete_range("a", "b"),
        ];
        for op in ops {
            assert_eq!(Op::from(wit::Op::from(op.clone())), op);
        }
        let kv = KeyValue {
            key: b"k".to_vec(),
            value: b"v".to_vec(),
            create_revision: 2,
            mod_revision: 3,
            version: 2,
            lease: 9,
        };
        let event = Event {
            kind: EventType::Delete,
            kv: kv.clone(),
            prev_kv: Some(kv),
        };
        assert_eq!(Event::from(wit::Event::from(event.clone())), event);
    }

    /// Answers map variant for variant.
    #[test]
    fn answers_map_one_to_one() {
        assert!(matches!(
            wit::Decision::from(Decision::deny("no")),
            wit::Decision::Deny(reason) if reason == "no"
        ));
        assert!(matches!(
            wit::Decision::from(Decision::Allow),
            wit::Decision::Allow
        ));
        assert!(matches!(
            wit::Value::from(Value::Int(-1)),
            wit::Value::Int(-1)
        ));
        assert!(matches!(
            wit_filter::Verdict::from(Verdict::Drop),
            wit_filter::Verdict::Drop
        ));
        assert_eq!(
            Operation::from(wit_policy::Operation::Watch),
            Operation::Watch
        );
        assert!(matches!(
            wit_log::Level::from(Level::Warn),
            wit_log::Level::Warn
        ));
    }
}
