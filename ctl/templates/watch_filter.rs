//! {{name}}: a Cairn watch filter.
//!
//! Hides puts of an empty value from the watchers it applies to; the argument a
//! watcher names the filter with (`cairnctl watch --filter {{name}} --filter-arg X`) narrows
//! that to keys that start with it. Bind it to a range, or without one for watchers that
//! name it:
//!
//! `cairnctl plugin bind {{name}} --plugin {{name}} --kind watch-filter`

use cairn_sdk::{Event, EventType, FilterContext, Verdict, WatchFilter, Watcher};

pub struct Plugin {
    prefix: Vec<u8>,
}

impl WatchFilter for Plugin {
    fn open(_ctx: &FilterContext<'_>, watcher: &Watcher) -> Result<Self, String> {
        Ok(Plugin {
            prefix: watcher.argument.clone(),
        })
    }

    fn filter(&mut self, _ctx: &FilterContext<'_>, event: &Event) -> Verdict {
        let empty_put = event.kind == EventType::Put && event.kv.value.is_empty();
        if empty_put && event.kv.key.starts_with(&self.prefix) {
            Verdict::Drop
        } else {
            Verdict::Pass
        }
    }
}

cairn_sdk::export_watch_filter!(Plugin);

#[cfg(test)]
mod tests {
    use cairn_sdk::testing;
    use cairn_sdk::{Event, EventType, KeyValue, Verdict, Watcher};

    use super::Plugin;

    fn put(key: &str, value: &str) -> Event {
        Event {
            kind: EventType::Put,
            kv: KeyValue {
                key: key.into(),
                value: value.into(),
                ..KeyValue::default()
            },
            prev_kv: None,
        }
    }

    #[test]
    fn empty_values_are_hidden() {
        let watcher = Watcher::default();
        let verdicts = testing::filter::<Plugin>(b"", &watcher, &[put("a", ""), put("b", "1")]);
        assert_eq!(verdicts, Ok(vec![Verdict::Drop, Verdict::Pass]));
    }
}
