//! Reading an exposure's flag and variant from its JSON properties in one
//! pass.
//!
//! SQL reads them with `properties->>'key'` (`json_as_text` of
//! datafusion-functions-json), one parse per key. This reader finds both
//! keys in one pass for the texts it can decide exactly: a top-level object
//! whose strings have no escapes or control characters, whose numbers are
//! short and plain, and whose wanted keys hold strings. For those, it
//! answers what `->>` answers: the first occurrence of a key counts, parsing
//! stops once both keys are found (as `->>` stops at its key), and a missing
//! key is SQL NULL. For any other text it answers `None`, and the caller
//! asks `json_as_text` itself; so the two never disagree.

/// Per key, its string value (`None`: SQL NULL, the key is missing), or
/// `None` when the text is outside what this reader decides.
pub fn top_level_strings<'a>(json: &'a str, keys: [&str; 2]) -> Option<[Option<&'a str>; 2]> {
    let mut reader = Reader {
        text: json,
        bytes: json.as_bytes(),
        at: 0,
    };
    let mut found: [Option<&'a str>; 2] = [None, None];
    let mut decided = [false, false];
    reader.whitespace();
    reader.expect(b'{')?;
    reader.whitespace();
    if reader.peek()? == b'}' {
        return Some(found);
    }
    loop {
        if reader.peek()? != b'"' {
            return None;
        }
        let key = reader.string()?;
        reader.whitespace();
        reader.expect(b':')?;
        reader.whitespace();
        let wanted = [!decided[0] && key == keys[0], !decided[1] && key == keys[1]];
        if wanted[0] || wanted[1] {
            // A wanted key's non-string value (null, a number, ...) is left
            // to json_as_text.
            if reader.peek()? != b'"' {
                return None;
            }
            let value = reader.string()?;
            for k in 0..2 {
                if wanted[k] {
                    found[k] = Some(value);
                    decided[k] = true;
                }
            }
            if decided[0] && decided[1] {
                return Some(found);
            }
        } else {
            reader.value(1)?;
        }
        reader.whitespace();
        match reader.peek()? {
            b',' => {
                reader.at += 1;
                reader.whitespace();
            }
            b'}' => return Some(found),
            _ => return None,
        }
    }
}

/// Deeper values are left to json_as_text.
const MAX_DEPTH: usize = 32;
/// Longer digit runs are left to json_as_text.
const MAX_DIGITS: usize = 18;

struct Reader<'a> {
    text: &'a str,
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    fn whitespace(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.at += 1;
        }
    }

    fn expect(&mut self, byte: u8) -> Option<()> {
        if self.peek()? == byte {
            self.at += 1;
            Some(())
        } else {
            None
        }
    }

    /// A string without escapes or control characters, at its quote.
    fn string(&mut self) -> Option<&'a str> {
        self.at += 1;
        let start = self.at;
        let rest = self.bytes.get(start..)?;
        let end = rest
            .iter()
            .position(|&b| b == b'"' || b == b'\\' || b < 0x20)?;
        if rest[end] != b'"' {
            return None;
        }
        self.at = start + end + 1;
        // Quotes are ASCII, so both ends are character boundaries.
        Some(&self.text[start..start + end])
    }

    fn digits(&mut self) -> Option<()> {
        let start = self.at;
        while let Some(b'0'..=b'9') = self.peek() {
            self.at += 1;
        }
        let count = self.at - start;
        (1..=MAX_DIGITS).contains(&count).then_some(())
    }

    /// A JSON number: `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`.
    fn number(&mut self) -> Option<()> {
        if self.peek()? == b'-' {
            self.at += 1;
        }
        match self.peek()? {
            b'0' => self.at += 1,
            b'1'..=b'9' => self.digits()?,
            _ => return None,
        }
        if self.peek() == Some(b'.') {
            self.at += 1;
            self.digits()?;
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.at += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.at += 1;
            }
            self.digits()?;
        }
        Some(())
    }

    fn word(&mut self, word: &[u8]) -> Option<()> {
        if self.bytes.get(self.at..self.at + word.len())? == word {
            self.at += word.len();
            Some(())
        } else {
            None
        }
    }

    /// Skips one value, checking it is well formed.
    fn value(&mut self, depth: usize) -> Option<()> {
        if depth > MAX_DEPTH {
            return None;
        }
        match self.peek()? {
            b'"' => self.string().map(|_| ()),
            b'-' | b'0'..=b'9' => self.number(),
            b't' => self.word(b"true"),
            b'f' => self.word(b"false"),
            b'n' => self.word(b"null"),
            b'{' => self.container(depth, b'}', true),
            b'[' => self.container(depth, b']', false),
            _ => None,
        }
    }

    /// An object or array, at its opening bracket.
    fn container(&mut self, depth: usize, close: u8, object: bool) -> Option<()> {
        self.at += 1;
        self.whitespace();
        if self.peek()? == close {
            self.at += 1;
            return Some(());
        }
        loop {
            if object {
                if self.peek()? != b'"' {
                    return None;
                }
                self.string()?;
                self.whitespace();
                self.expect(b':')?;
                self.whitespace();
            }
            self.value(depth + 1)?;
            self.whitespace();
            match self.peek()? {
                b',' => {
                    self.at += 1;
                    self.whitespace();
                }
                b if b == close => {
                    self.at += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEYS: [&str; 2] = ["$feature_flag", "$feature_flag_response"];

    #[test]
    fn reads_both_keys_in_one_pass() {
        let read = |json| top_level_strings(json, KEYS);
        assert_eq!(
            read(r#"{"$feature_flag":"bench","$feature_flag_response":"test"}"#),
            Some([Some("bench"), Some("test")])
        );
        assert_eq!(
            read(
                r#" { "a" : [1, -2.5e+3, {"b": null}, true, false, []], "$feature_flag_response" : "c", "$feature_flag":"f", "$feature_flag": "ignored" } "#
            ),
            Some([Some("f"), Some("c")])
        );
        // Missing keys are NULL; an empty object too; the first occurrence
        // wins and nothing after both keys is read.
        assert_eq!(read(r#"{"$feature_flag":"f"}"#), Some([Some("f"), None]));
        assert_eq!(read("{}"), Some([None, None]));
        assert_eq!(
            read(r#"{"$feature_flag":"f","$feature_flag_response":"v","$feature_flag":"g", oops"#),
            Some([Some("f"), Some("v")])
        );
        assert_eq!(
            read(r#"{"x":"é","$feature_flag":"ü"}"#),
            Some([Some("ü"), None])
        );
    }

    #[test]
    fn leaves_what_it_cannot_decide_to_json_as_text() {
        for json in [
            r#"{"$feature_flag":"b\u0065nch"}"#,
            r#"{"x":"a\"b","$feature_flag":"f"}"#,
            r#"{"$feature_flag":null}"#,
            r#"{"$feature_flag":1}"#,
            r#"{"x":01}"#,
            r#"{"x":1.}"#,
            r#"{"x":NaN}"#,
            r#"{"x":1234567890123456789012}"#,
            r#"{"x":tru}"#,
            r#"{"x":1,}"#,
            r#"{"x" 1}"#,
            r#"[1]"#,
            "",
            "{",
            "{\"x\":\"tab\there\"}",
        ] {
            assert_eq!(top_level_strings(json, KEYS), None, "{json}");
        }
    }
}
