//! A Cairn watch filter that passes the events whose value is a JSON object with a field
//! equal to what the watcher asks: `cairnctl watch /jobs/ --prefix --filter by-field
//! --filter-arg state=failed` sees only the jobs whose `state` is `"failed"`.
//!
//! Argument: `<field>=<value>`. `<field>` is a top-level field name; `<value>` matches a JSON
//! string with that text, or any other JSON value written the same way (`count=3`,
//! `ok=true`, `owner=null`). Values that are not JSON objects, or lack the field, are
//! dropped; deletes always pass (a delete has no value to match, and a watcher following a
//! set must see it shrink). No config. Bind it without a key range, so only the watchers that
//! name it run it:
//!
//! `cairnctl plugin bind by-field --plugin json-field --kind watch-filter`

use cairn_sdk::{Event, EventType, FilterContext, Verdict, WatchFilter, Watcher};

/// The filter, opened for one watcher.
#[derive(Debug)]
pub struct JsonFieldFilter {
    field: String,
    value: String,
}

impl WatchFilter for JsonFieldFilter {
    fn open(_ctx: &FilterContext<'_>, watcher: &Watcher) -> Result<Self, String> {
        let argument = std::str::from_utf8(&watcher.argument)
            .map_err(|_| "json-field-filter: the argument is not UTF-8".to_string())?;
        let Some((field, value)) = argument.split_once('=') else {
            return Err(format!(
                "json-field-filter: the argument must be <field>=<value>, not {argument:?}"
            ));
        };
        if field.is_empty() {
            return Err("json-field-filter: the field name is empty".to_string());
        }
        Ok(JsonFieldFilter {
            field: field.to_string(),
            value: value.to_string(),
        })
    }

    fn filter(&mut self, _ctx: &FilterContext<'_>, event: &Event) -> Verdict {
        if event.kind == EventType::Delete {
            return Verdict::Pass;
        }
        if self.matches(&event.kv.value) {
            Verdict::Pass
        } else {
            Verdict::Drop
        }
    }
}

impl JsonFieldFilter {
    fn matches(&self, value: &[u8]) -> bool {
        let Ok(serde_json::Value::Object(object)) = serde_json::from_slice(value) else {
            return false;
        };
        match object.get(&self.field) {
            Some(serde_json::Value::String(text)) => *text == self.value,
            // As JSON text (a number is not equal to a string holding its digits).
            Some(other) => serde_json::to_string(other).is_ok_and(|text| text == self.value),
            None => false,
        }
    }
}

cairn_sdk::export_watch_filter!(JsonFieldFilter);

#[cfg(test)]
mod tests {
    use cairn_sdk::testing;
    use cairn_sdk::{Event, EventType, KeyValue, Verdict, Watcher};

    use super::JsonFieldFilter;

    fn event(kind: EventType, value: &str) -> Event {
        Event {
            kind,
            kv: KeyValue {
                key: b"/jobs/1".to_vec(),
                value: value.into(),
                create_revision: 2,
                mod_revision: 3,
                version: 2,
                lease: 0,
            },
            prev_kv: None,
        }
    }

    fn run(argument: &str, events: &[Event]) -> Result<Vec<Verdict>, String> {
        let watcher = Watcher {
            argument: argument.into(),
            ..Watcher::default()
        };
        testing::filter::<JsonFieldFilter>(b"", &watcher, events)
    }

    #[test]
    fn passes_matching_values_and_deletes() {
        let events = [
            event(EventType::Put, r#"{"state": "failed"}"#),
            event(EventType::Put, r#"{"state": "done"}"#),
            event(EventType::Put, "not json"),
            event(EventType::Put, r#"{"other": 1}"#),
            event(EventType::Delete, ""),
        ];
        assert_eq!(
            run("state=failed", &events).expect("opens"),
            [
                Verdict::Pass,
                Verdict::Drop,
                Verdict::Drop,
                Verdict::Drop,
                Verdict::Pass
            ]
        );
    }

    #[test]
    fn non_string_values_match_as_json() {
        let events = [
            event(EventType::Put, r#"{"count": 3}"#),
            event(EventType::Put, r#"{"count": "3"}"#),
            event(EventType::Put, r#"{"count": 4}"#),
        ];
        assert_eq!(
            run("count=3", &events).expect("opens"),
            [Verdict::Pass, Verdict::Pass, Verdict::Drop]
        );
    }

    #[test]
    fn a_bad_argument_refuses_to_open() {
        assert!(run("state", &[]).is_err_and(|e| e.contains("<field>=<value>")));
        assert!(run("=x", &[]).is_err());
    }
}
