//! etcd's key ranges as a client spells them: the prefix range end, and how a range reads on a
//! terminal.

/// The end of the range that holds every key starting with `key`, as etcd's
/// `clientv3.GetPrefixRangeEnd`: drop trailing `0xff` bytes and increment the last byte left.
/// A key with no such byte (empty, or all `0xff`) has no upper bound: `"\0"`, etcd's "every key
/// from `key` on".
pub fn prefix_range_end(key: &[u8]) -> Vec<u8> {
    let mut end = key.to_vec();
    while let Some(&last) = end.last() {
        if last < 0xff {
            // The loop condition proved `end` is non-empty.
            if let Some(byte) = end.last_mut() {
                *byte += 1;
            }
            return end;
        }
        end.pop();
    }
    vec![0]
}

/// The range clientv3's `WithPrefix` reads: every key that starts with `prefix`; for the
/// empty prefix, every key (from `"\0"`, with no upper bound).
pub fn prefix_range(prefix: &[u8]) -> (Vec<u8>, Vec<u8>) {
    if prefix.is_empty() {
        (vec![0], vec![0])
    } else {
        (prefix.to_vec(), prefix_range_end(prefix))
    }
}

/// A key as text: printable ASCII as is, anything else as `\xNN`, so that a binary key or a
/// terminal escape never reaches the terminal raw.
pub fn display_key(key: &[u8]) -> String {
    let mut text = String::with_capacity(key.len());
    for &byte in key {
        if byte.is_ascii_graphic() || byte == b' ' {
            text.push(char::from(byte));
        } else {
            text.push_str(&format!("\\x{byte:02x}"));
        }
    }
    text
}

/// A binding's key range in one short column: `key` for one key, `key*` for a prefix, `*` for
/// every key, `[key, +inf)` for every key from `key` on, `[key, end)` otherwise.
pub fn display_range(key: &[u8], range_end: &[u8]) -> String {
    if range_end.is_empty() {
        return display_key(key);
    }
    if range_end == prefix_range_end(key) {
        return format!("{}*", display_key(key));
    }
    if range_end == [0] {
        return format!("[{}, +inf)", display_key(key));
    }
    format!("[{}, {})", display_key(key), display_key(range_end))
}
