//! Keys and values: get, put, del, txn and watch responses in every format etcdctl has for
//! them (all but `table`).

use std::io::{self, Write};

use cairn_proto::etcdserverpb::{
    DeleteRangeResponse, PutResponse, RangeResponse, ResponseHeader, ResponseOp, TxnResponse,
    WatchResponse, response_op::Response,
};
use cairn_proto::mvccpb::{Event, KeyValue, event::EventType};
use prost::Message;

use super::gojson::{GoJson, Obj};
use super::{Printable, Style, fields_header, go_quote, hex_escaped};

/// etcdctl's `printKV`: the key line (unless values only), then the value line.
pub fn print_kv(out: &mut dyn Write, style: Style, kv: &KeyValue) -> io::Result<()> {
    let line = |out: &mut dyn Write, bytes: &[u8]| -> io::Result<()> {
        if style.hex {
            writeln!(out, "{}", hex_escaped(bytes))
        } else {
            out.write_all(bytes)?;
            writeln!(out)
        }
    };
    if !style.value_only {
        line(out, &kv.key)?;
    }
    line(out, &kv.value)
}

fn fields_kv(out: &mut dyn Write, prefix: &str, kv: &KeyValue) -> io::Result<()> {
    writeln!(out, "\"{prefix}Key\" : {}", go_quote(&kv.key))?;
    writeln!(out, "\"{prefix}CreateRevision\" : {}", kv.create_revision)?;
    writeln!(out, "\"{prefix}ModRevision\" : {}", kv.mod_revision)?;
    writeln!(out, "\"{prefix}Version\" : {}", kv.version)?;
    writeln!(out, "\"{prefix}Value\" : {}", go_quote(&kv.value))?;
    writeln!(out, "\"{prefix}Lease\" : {}", kv.lease)
}

impl GoJson for KeyValue {
    fn go_json(&self, out: &mut String) {
        let mut obj = Obj::open(out);
        obj.bytes("key", &self.key)
            .int("create_revision", self.create_revision)
            .int("mod_revision", self.mod_revision)
            .int("version", self.version)
            .bytes("value", &self.value)
            .int("lease", self.lease);
        obj.close();
    }
}

impl GoJson for RangeResponse {
    fn go_json(&self, out: &mut String) {
        let mut obj = Obj::open(out);
        obj.msg("header", self.header.as_ref())
            .list("kvs", &self.kvs)
            .bool("more", self.more)
            .int("count", self.count);
        obj.close();
    }
}

impl Printable for RangeResponse {
    fn simple(&self, out: &mut dyn Write, style: Style) -> io::Result<()> {
        self.kvs.iter().try_for_each(|kv| print_kv(out, style, kv))
    }

    fn json(&self) -> Option<String> {
        Some(self.to_go_json())
    }

    fn fields(&self, out: &mut dyn Write) -> Option<io::Result<()>> {
        Some((|| {
            fields_header(out, self.header.as_ref())?;
            for kv in &self.kvs {
                fields_kv(out, "", kv)?;
            }
            writeln!(out, "\"More\" : {}", self.more)?;
            writeln!(out, "\"Count\" : {}", self.count)
        })())
    }

    fn protobuf(&self) -> Option<Vec<u8>> {
        Some(self.encode_to_vec())
    }
}

impl GoJson for PutResponse {
    fn go_json(&self, out: &mut String) {
        let mut obj = Obj::open(out);
        obj.msg("header", self.header.as_ref())
            .msg("prev_kv", self.prev_kv.as_ref());
        obj.close();
    }
}

impl Printable for PutResponse {
    fn simple(&self, out: &mut dyn Write, style: Style) -> io::Result<()> {
        writeln!(out, "OK")?;
        match &self.prev_kv {
            Some(kv) => print_kv(out, style, kv),
            None => Ok(()),
        }
    }

    fn json(&self) -> Option<String> {
        Some(self.to_go_json())
    }

    fn fields(&self, out: &mut dyn Write) -> Option<io::Result<()>> {
        Some((|| {
            fields_header(out, self.header.as_ref())?;
            match &self.prev_kv {
                Some(kv) => fields_kv(out, "Prev", kv),
                None => Ok(()),
            }
        })())
    }

    fn protobuf(&self) -> Option<Vec<u8>> {
        Some(self.encode_to_vec())
    }
}

impl GoJson for DeleteRangeResponse {
    fn go_json(&self, out: &mut String) {
        let mut obj = Obj::open(out);
        obj.msg("header", self.header.as_ref())
            .int("deleted", self.deleted)
            .list("prev_kvs", &self.prev_kvs);
        obj.close();
    }
}

impl Printable for DeleteRangeResponse {
    fn simple(&self, out: &mut dyn Write, style: Style) -> io::Result<()> {
        writeln!(out, "{}", self.deleted)?;
        self.prev_kvs
            .iter()
            .try_for_each(|kv| print_kv(out, style, kv))
    }

    fn json(&self) -> Option<String> {
        Some(self.to_go_json())
    }

    fn fields(&self, out: &mut dyn Write) -> Option<io::Result<()>> {
        Some((|| {
            fields_header(out, self.header.as_ref())?;
            writeln!(out, "\"Deleted\" : {}", self.deleted)?;
            self.prev_kvs
                .iter()
                .try_for_each(|kv| fields_kv(out, "Prev", kv))
        })())
    }

    fn protobuf(&self) -> Option<Vec<u8>> {
        Some(self.encode_to_vec())
    }
}

impl GoJson for ResponseOp {
    fn go_json(&self, out: &mut String) {
        // Go's oneof: an interface field named `Response` holding a wrapper struct whose one
        // field is named after the variant.
        let mut obj = Obj::open(out);
        let mut inner = String::new();
        match &self.response {
            None => inner.push_str("null"),
            Some(response) => {
                let mut wrapper = Obj::open(&mut inner);
                match response {
                    Response::ResponseRange(r) => wrapper.msg("ResponseRange", Some(r)),
                    Response::ResponsePut(r) => wrapper.msg("ResponsePut", Some(r)),
                    Response::ResponseDeleteRange(r) => wrapper.msg("ResponseDeleteRange", Some(r)),
                    Response::ResponseTxn(r) => wrapper.msg("ResponseTxn", Some(r)),
                };
                wrapper.close();
            }
        }
        obj.raw("Response", &inner);
        obj.close();
    }
}

impl GoJson for TxnResponse {
    fn go_json(&self, out: &mut String) {
        let mut obj = Obj::open(out);
        obj.msg("header", self.header.as_ref())
            .bool("succeeded", self.succeeded)
            .list("responses", &self.responses);
        obj.close();
    }
}

impl Printable for TxnResponse {
    fn simple(&self, out: &mut dyn Write, style: Style) -> io::Result<()> {
        writeln!(
            out,
            "{}",
            if self.succeeded { "SUCCESS" } else { "FAILURE" }
        )?;
        for op in &self.responses {
            writeln!(out)?;
            match &op.response {
                Some(Response::ResponsePut(r)) => r.simple(out, style)?,
                Some(Response::ResponseRange(r)) => r.simple(out, style)?,
                Some(Response::ResponseDeleteRange(r)) => r.simple(out, style)?,
                // etcdctl 3.4 has no line for a nested txn; Cairn prints it as a txn.
                Some(Response::ResponseTxn(r)) => r.simple(out, style)?,
                None => writeln!(out, "unexpected empty response")?,
            }
        }
        Ok(())
    }

    fn json(&self) -> Option<String> {
        Some(self.to_go_json())
    }

    fn fields(&self, out: &mut dyn Write) -> Option<io::Result<()>> {
        Some((|| {
            fields_header(out, self.header.as_ref())?;
            writeln!(out, "\"Succeeded\" : {}", self.succeeded)?;
            for op in &self.responses {
                match &op.response {
                    Some(Response::ResponsePut(r)) => r.fields(out),
                    Some(Response::ResponseRange(r)) => r.fields(out),
                    Some(Response::ResponseDeleteRange(r)) => r.fields(out),
                    Some(Response::ResponseTxn(r)) => r.fields(out),
                    None => Some(writeln!(out, "\"Unknown\" : \"<nil>\"")),
                }
                .unwrap_or(Ok(()))?;
            }
            Ok(())
        })())
    }

    fn protobuf(&self) -> Option<Vec<u8>> {
        Some(self.encode_to_vec())
    }
}

impl GoJson for Event {
    fn go_json(&self, out: &mut String) {
        let mut obj = Obj::open(out);
        obj.int("type", self.r#type)
            .msg("kv", self.kv.as_ref())
            .msg("prev_kv", self.prev_kv.as_ref());
        obj.close();
    }
}

/// One watch response as etcdctl prints it (clientv3's `WatchResponse`, whose JSON has Go's
/// field names: `Header`, `Events`...).
pub struct WatchShown<'a>(pub &'a WatchResponse);

impl WatchShown<'_> {
    fn header(&self) -> ResponseHeader {
        self.0.header.unwrap_or_default()
    }
}

impl Printable for WatchShown<'_> {
    fn simple(&self, out: &mut dyn Write, style: Style) -> io::Result<()> {
        for event in &self.0.events {
            let kind = match EventType::try_from(event.r#type) {
                Ok(EventType::Delete) => "DELETE",
                _ => "PUT",
            };
            writeln!(out, "{kind}")?;
            if let Some(prev) = &event.prev_kv {
                print_kv(out, style, prev)?;
            }
            print_kv(
                out,
                style,
                event.kv.as_ref().unwrap_or(&KeyValue::default()),
            )?;
        }
        Ok(())
    }

    fn json(&self) -> Option<String> {
        let mut out = String::new();
        let mut obj = Obj::open(&mut out);
        obj.msg_always("Header", Some(&self.header()));
        // clientv3 makes the events slice itself: `[]` when empty, never `null`.
        if self.0.events.is_empty() {
            obj.raw("Events", "[]");
        } else {
            obj.list_always("Events", &self.0.events);
        }
        obj.int_always("CompactRevision", self.0.compact_revision)
            .bool_always("Canceled", self.0.canceled)
            .bool_always("Created", self.0.created);
        obj.close();
        Some(out)
    }

    fn fields(&self, out: &mut dyn Write) -> Option<io::Result<()>> {
        Some((|| {
            fields_header(out, Some(&self.header()))?;
            for event in &self.0.events {
                let kind = match EventType::try_from(event.r#type) {
                    Ok(EventType::Delete) => "DELETE",
                    _ => "PUT",
                };
                writeln!(out, "\"Type\" : {kind}")?;
                if let Some(prev) = &event.prev_kv {
                    fields_kv(out, "Prev", prev)?;
                }
                fields_kv(out, "", event.kv.as_ref().unwrap_or(&KeyValue::default()))?;
            }
            Ok(())
        })())
    }

    fn protobuf(&self) -> Option<Vec<u8>> {
        // etcdctl rebuilds the message from the client's view: header, events, compact
        // revision, canceled, created (no watch ID, no fragment flag).
        let response = WatchResponse {
            header: Some(self.header()),
            events: self.0.events.clone(),
            compact_revision: self.0.compact_revision,
            canceled: self.0.canceled,
            created: self.0.created,
            ..WatchResponse::default()
        };
        Some(response.encode_to_vec())
    }
}
