//! A small JSON object writer for event properties.
//!
//! Properties are written straight into one `String` per event: building a
//! `serde_json::Value` map per event would cost several allocations per property, and the
//! generator's budget is a few hundred nanoseconds per event. Every string goes through
//! [`write_string`], which escapes exactly as RFC 8259 requires.

/// Writes one JSON object, nested objects included, into a `String`.
pub(crate) struct JsonObject {
    buf: String,
    needs_comma: bool,
}

impl JsonObject {
    pub(crate) fn with_capacity(capacity: usize) -> Self {
        let mut buf = String::with_capacity(capacity);
        buf.push('{');
        Self {
            buf,
            needs_comma: false,
        }
    }

    /// Starts from a finished object (e.g. properties shared by many events) and adds to it.
    pub(crate) fn extending(finished: &str, extra_capacity: usize) -> Self {
        debug_assert!(finished.starts_with('{') && finished.ends_with('}'));
        let mut buf = String::with_capacity(finished.len() + extra_capacity);
        buf.push_str(&finished[..finished.len() - 1]);
        Self {
            needs_comma: finished.len() > 2,
            buf,
        }
    }

    /// Keys are literals of this crate, never data, so they are written without escaping.
    fn key(&mut self, key: &str) {
        debug_assert!(!needs_escape(key.as_bytes()), "key {key:?} needs escaping");
        if self.needs_comma {
            self.buf.push(',');
        }
        self.buf.push('"');
        self.buf.push_str(key);
        self.buf.push_str("\":");
        self.needs_comma = true;
    }

    pub(crate) fn str(&mut self, key: &str, value: &str) -> &mut Self {
        self.key(key);
        write_string(&mut self.buf, value);
        self
    }

    /// A string value made of `parts` joined, without building the joined string first.
    pub(crate) fn str_joined(&mut self, key: &str, parts: &[&str]) -> &mut Self {
        self.key(key);
        self.buf.push('"');
        for part in parts {
            push_escaped(&mut self.buf, part);
        }
        self.buf.push('"');
        self
    }

    pub(crate) fn int(&mut self, key: &str, value: i64) -> &mut Self {
        self.key(key);
        if value < 0 {
            self.buf.push('-');
        }
        push_decimal(&mut self.buf, value.unsigned_abs(), 1);
        self
    }

    pub(crate) fn bool(&mut self, key: &str, value: bool) -> &mut Self {
        self.key(key);
        self.buf.push_str(if value { "true" } else { "false" });
        self
    }

    /// Opens a nested object under `key`; close it with [`JsonObject::end_object`].
    pub(crate) fn begin_object(&mut self, key: &str) -> &mut Self {
        self.key(key);
        self.buf.push('{');
        self.needs_comma = false;
        self
    }

    pub(crate) fn end_object(&mut self) -> &mut Self {
        self.buf.push('}');
        self.needs_comma = true;
        self
    }

    pub(crate) fn finish(mut self) -> String {
        self.buf.push('}');
        self.buf
    }
}

/// Appends `value` as a JSON string literal.
pub(crate) fn write_string(buf: &mut String, value: &str) {
    buf.push('"');
    push_escaped(buf, value);
    buf.push('"');
}

/// Appends the escaped contents of a JSON string literal, without the quotes.
fn push_escaped(buf: &mut String, value: &str) {
    if !needs_escape(value.as_bytes()) {
        buf.push_str(value);
        return;
    }
    let mut clean_from = 0;
    for (index, byte) in value.bytes().enumerate() {
        let escape = match byte {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x00..=0x1f => "",
            _ => continue,
        };
        buf.push_str(&value[clean_from..index]);
        if escape.is_empty() {
            buf.push_str("\\u00");
            buf.push(char::from(HEX_DIGITS[usize::from(byte >> 4)]));
            buf.push(char::from(HEX_DIGITS[usize::from(byte & 0xf)]));
        } else {
            buf.push_str(escape);
        }
        clean_from = index + 1;
    }
    buf.push_str(&value[clean_from..]);
}

const HEX_DIGITS: &[u8; 16] = b"0123456789abcdef";

/// Whether `bytes` holds a control character, a quote or a backslash. Almost every string
/// is clean, so this is tested eight bytes at a time with the classic "has a zero byte"
/// bit trick (exact as to whether such a byte exists, which is all that is asked).
fn needs_escape(bytes: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH_BITS: u64 = 0x8080_8080_8080_8080;
    let has_zero_byte = |x: u64| x.wrapping_sub(ONES) & !x & HIGH_BITS != 0;
    let mut chunks = bytes.chunks_exact(8);
    for chunk in &mut chunks {
        let word = u64::from_le_bytes(chunk.try_into().expect("chunks of eight"));
        let has_control = word.wrapping_sub(ONES * 0x20) & !word & HIGH_BITS != 0;
        if has_control
            || has_zero_byte(word ^ (ONES * u64::from(b'"')))
            || has_zero_byte(word ^ (ONES * u64::from(b'\\')))
        {
            return true;
        }
    }
    chunks
        .remainder()
        .iter()
        .any(|&byte| byte < 0x20 || byte == b'"' || byte == b'\\')
}

/// Appends `value` in decimal, left-padded with zeros to `min_width` digits.
pub(crate) fn push_decimal(buf: &mut String, mut value: u64, min_width: usize) {
    let mut digits = [b'0'; 20];
    let mut start = digits.len();
    loop {
        start -= 1;
        digits[start] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    start = start.min(digits.len().saturating_sub(min_width));
    // Only ASCII digits were written.
    buf.push_str(std::str::from_utf8(&digits[start..]).expect("ASCII digits"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_round_trip_through_a_json_parser() {
        let nasty = "quote \" backslash \\ newline \n tab \t nul \u{0} bell \u{7} é 🦀 </script>";
        let mut object = JsonObject::with_capacity(16);
        object.str("nasty", nasty).int("n", -42).bool("b", true);
        object.begin_object("nested").str("k", "v").end_object();
        object.int("after", 1).str_joined("joined", &["a\"", "b"]);
        let text = object.finish();
        let parsed: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
        assert_eq!(parsed["nasty"], nasty);
        assert_eq!(parsed["n"], -42);
        assert_eq!(parsed["b"], true);
        assert_eq!(parsed["nested"]["k"], "v");
        assert_eq!(parsed["after"], 1);
        assert_eq!(parsed["joined"], "a\"b");
    }

    #[test]
    fn extending_keeps_the_shared_properties() {
        let mut shared = JsonObject::with_capacity(8);
        shared.str("a", "1");
        let shared = shared.finish();
        let mut object = JsonObject::extending(&shared, 8);
        object.int("b", 2);
        assert_eq!(object.finish(), r#"{"a":"1","b":2}"#);
        let mut from_empty = JsonObject::extending("{}", 8);
        from_empty.int("b", 2);
        assert_eq!(from_empty.finish(), r#"{"b":2}"#);
    }

    #[test]
    fn needs_escape_finds_every_special_byte_at_every_position() {
        for length in 0..20 {
            assert!(!needs_escape("a".repeat(length).as_bytes()));
            for position in 0..length {
                for special in (0u8..0x20).chain([b'"', b'\\']) {
                    let mut bytes = vec![b'a'; length];
                    bytes[position] = special;
                    assert!(
                        needs_escape(&bytes),
                        "{special:#x} at {position} of {length}"
                    );
                }
            }
        }
        // Bytes of multi-byte UTF-8 characters are all at least 0x80: never escaped.
        assert!(!needs_escape("é🦀ü€".as_bytes()));
    }

    #[test]
    fn decimals_match_display() {
        for value in [0u64, 7, 10, 99, 1_000_000, u64::MAX] {
            let mut ours = String::new();
            push_decimal(&mut ours, value, 1);
            assert_eq!(ours, value.to_string());
        }
        let mut padded = String::new();
        push_decimal(&mut padded, 42, 6);
        assert_eq!(padded, "000042");
        let mut object = JsonObject::with_capacity(8);
        object.int("min", i64::MIN).int("zero", 0);
        assert_eq!(
            object.finish(),
            format!(r#"{{"min":{},"zero":0}}"#, i64::MIN)
        );
    }

    #[test]
    fn empty_objects_are_valid() {
        let mut object = JsonObject::with_capacity(4);
        object.begin_object("inner").end_object();
        assert_eq!(object.finish(), r#"{"inner":{}}"#);
        assert_eq!(JsonObject::with_capacity(0).finish(), "{}");
    }
}
