//! Moves between the generated WIT types and the SDK's own: field for field, no copies of
//! keys or values.

use super::bindings::guard_world::cairn::plugin::{log as wit_log, types as wit};
use super::bindings::policy_world::exports::cairn::plugin::policy as wit_policy;
use super::bindings::watch_filter_world::exports::cairn::plugin::watch_filter as wit_filter;
use crate::context::Level;
use crate::types::{
    Access, Answer, Decision, DeleteRange, Event, EventType, KeyValue, Op, Operation,
    PolicyRequest, Put, Value, Verdict, Watcher,
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
            wit_policy::Operation::Range => Self::Range,
            wit_policy::Operation::Put => Self::Put,
            wit_policy::Operation::DeleteRange => Self::DeleteRange,
            wit_policy::Operation::Txn => Self::Txn,
            wit_policy::Operation::Watch => Self::Watch,
            wit_policy::Operation::LeaseRevoke => Self::LeaseRevoke,
        }
    }
}

impl From<wit_policy::Access> for Access {
    fn from(access: wit_policy::Access) -> Self {
        Self {
            write: access.write,
            key: access.key,
            range_end: access.range_end,
            value: access.value,
            lease: access.lease,
            allowed_by_roles: access.allowed_by_roles,
        }
    }
}

impl From<wit_policy::Request> for PolicyRequest {
    fn from(request: wit_policy::Request) -> Self {
        Self {
            user: request.user,
            roles: request.roles,
            operation: request.operation.into(),
            accesses: request.accesses.into_iter().map(Into::into).collect(),
        }
    }
}

impl From<Answer> for wit_policy::Answer {
    fn from(answer: Answer) -> Self {
        match answer {
            Answer::Allow => Self::Allow,
            Answer::Deny(reason) => Self::Deny(reason),
            Answer::Defer => Self::Defer,
        }
    }
}

impl From<Verdict> for wit_filter::Verdict {
    fn from(verdict: Verdict) -> Self {
        match verdict {
            Verdict::Pass => Self::Pass,
            Verdict::Drop => Self::Drop,
            Verdict::Rewrite { value, prev_value } => {
                Self::Rewrite(wit_filter::NewValues { value, prev_value })
            }
        }
    }
}

impl From<wit_filter::Watcher> for Watcher {
    fn from(watcher: wit_filter::Watcher) -> Self {
        Self {
            user: watcher.user,
            roles: watcher.roles,
            argument: watcher.argument,
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
        assert!(matches!(
            wit_filter::Verdict::from(Verdict::rewrite("x")),
            wit_filter::Verdict::Rewrite(v) if v.value == b"x" && v.prev_value == b"x"
        ));
        assert_eq!(
            Operation::from(wit_policy::Operation::Watch),
            Operation::Watch
        );
        assert!(matches!(
            wit_policy::Answer::from(Answer::Defer),
            wit_policy::Answer::Defer
        ));
        let request = PolicyRequest::from(wit_policy::Request {
            user: "u".into(),
            roles: vec!["r".into()],
            operation: wit_policy::Operation::LeaseRevoke,
            accesses: vec![wit_policy::Access {
                write: true,
                key: b"k".to_vec(),
                range_end: Vec::new(),
                value: Some(b"v".to_vec()),
                lease: 5,
                allowed_by_roles: true,
            }],
        });
        assert_eq!(request.operation, Operation::LeaseRevoke);
        assert_eq!(request.roles, ["r"]);
        assert_eq!(
            request.accesses[0],
            Access {
                lease: 5,
                ..Access::put("k", "v").allowed_by_roles(true)
            }
        );
        assert!(matches!(
            wit_log::Level::from(Level::Warn),
            wit_log::Level::Warn
        ));
    }
}
