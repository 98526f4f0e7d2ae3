//! lz-string `compressToBase64` decoding with an output cap.
//!
//! posthog-js sends `compression=lz64` payloads made by pieroxy's lz-string.
//! The `lz-str` crate decodes the format but has no output limit, and its
//! dictionary copies every entry: a few kilobytes of input can expand to
//! gigabytes. This decoder keeps the dictionary as a trie of parent links
//! (memory linear in the input) and stops as soon as the output would pass
//! the cap, so the work is bounded by `input + cap`. The tests check it
//! against `lz-str` on the same data.

/// Why an lz-string payload could not be decoded.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum LzError {
    /// Not valid lz-string base64, or not valid UTF-16 once decoded.
    Invalid,
    /// The decoded text would be longer than the cap.
    TooLarge,
}

/// Bits per base64 character.
const BITS_PER_CHAR: u32 = 6;
/// No parent: a one-character dictionary entry.
const ROOT: u32 = u32::MAX;

/// The 6-bit value of one character of lz-string's base64 alphabet. `=` is
/// index 64 there and so contributes no bits; a space is a `+` that a form
/// decoder turned into a space.
fn sextet(byte: u8) -> Option<u32> {
    Some(match byte {
        b'A'..=b'Z' => u32::from(byte - b'A'),
        b'a'..=b'z' => u32::from(byte - b'a') + 26,
        b'0'..=b'9' => u32::from(byte - b'0') + 52,
        b'+' | b' ' => 62,
        b'/' => 63,
        b'=' => 0,
        _ => return None,
    })
}

/// Reads bits the way lz-string writes them: each character most
/// significant bit first, each value least significant bit first.
struct BitReader<'a> {
    input: &'a [u8],
    next_index: usize,
    /// The character being read; `None` past the end (lz-string reads one
    /// character ahead, so running out only matters when a bit is needed).
    current: Option<u32>,
    mask: u32,
}

impl<'a> BitReader<'a> {
    fn new(input: &'a [u8]) -> Result<Self, LzError> {
        let mut reader = BitReader {
            input,
            next_index: 0,
            current: None,
            mask: 1 << (BITS_PER_CHAR - 1),
        };
        reader.current = reader.load()?;
        Ok(reader)
    }

    fn load(&mut self) -> Result<Option<u32>, LzError> {
        let value = match self.input.get(self.next_index) {
            Some(&byte) => Some(sextet(byte).ok_or(LzError::Invalid)?),
            None => None,
        };
        self.next_index += 1;
        Ok(value)
    }

    fn read_bits(&mut self, count: u32) -> Result<u32, LzError> {
        let mut bits = 0;
        for shift in 0..count {
            let current = self.current.ok_or(LzError::Invalid)?;
            if current & self.mask != 0 {
                bits |= 1 << shift;
            }
            self.mask >>= 1;
            if self.mask == 0 {
                self.mask = 1 << (BITS_PER_CHAR - 1);
                self.current = self.load()?;
            }
        }
        Ok(bits)
    }
}

/// One dictionary entry: its parent entry plus one last UTF-16 unit.
#[derive(Clone, Copy)]
struct Entry {
    parent: u32,
    last: u16,
    first: u16,
    len: u32,
}

struct Dictionary {
    entries: Vec<Entry>,
}

impl Dictionary {
    fn new() -> Self {
        // Codes 0, 1 and 2 are control codes; they never name an entry.
        let placeholder = Entry {
            parent: ROOT,
            last: 0,
            first: 0,
            len: 0,
        };
        Dictionary {
            entries: vec![placeholder; 3],
        }
    }

    fn len(&self) -> usize {
        self.entries.len()
    }

    fn push_literal(&mut self, unit: u16) -> usize {
        self.entries.push(Entry {
            parent: ROOT,
            last: unit,
            first: unit,
            len: 1,
        });
        self.entries.len() - 1
    }

    /// Adds the entry `prefix` followed by `unit`.
    fn push_extension(&mut self, prefix: usize, unit: u16) -> Result<(), LzError> {
        let parent = self.entries[prefix];
        self.entries.push(Entry {
            parent: u32::try_from(prefix).map_err(|_| LzError::Invalid)?,
            last: unit,
            first: parent.first,
            len: parent.len + 1,
        });
        Ok(())
    }

    /// Appends the units of entry `code` to `out`, refusing to pass `cap` units.
    fn write(&self, code: usize, out: &mut Vec<u16>, cap: usize) -> Result<(), LzError> {
        let len = self.entries[code].len as usize;
        if out.len() + len > cap {
            return Err(LzError::TooLarge);
        }
        let start = out.len();
        out.resize(start + len, 0);
        let mut position = start + len;
        let mut node = code;
        while position > start {
            position -= 1;
            let entry = self.entries[node];
            out[position] = entry.last;
            node = entry.parent as usize;
        }
        Ok(())
    }
}

/// Decodes lz-string `compressToBase64` output into text of at most
/// `max_units` UTF-16 units (so at most that many characters).
pub(crate) fn decompress_from_base64(input: &str, max_units: usize) -> Result<String, LzError> {
    let input = input.trim_matches(['\n', '\r']).as_bytes();
    if input.is_empty() {
        return Ok(String::new());
    }
    let mut reader = BitReader::new(input)?;
    let mut dictionary = Dictionary::new();
    let mut out: Vec<u16> = Vec::new();

    let first = match reader.read_bits(2)? {
        0 => reader.read_bits(8)?,
        1 => reader.read_bits(16)?,
        2 => return Ok(String::new()),
        _ => return Err(LzError::Invalid),
    };
    let mut previous = dictionary.push_literal(first as u16);
    dictionary.write(previous, &mut out, max_units)?;

    let mut code_bits: u32 = 3;
    let mut enlarge_in: u64 = 4;
    loop {
        let mut code = reader.read_bits(code_bits)? as usize;
        match code {
            0 | 1 => {
                let unit = reader.read_bits(if code == 0 { 8 } else { 16 })?;
                code = dictionary.push_literal(unit as u16);
                enlarge_in -= 1;
            }
            2 => return String::from_utf16(&out).map_err(|_| LzError::Invalid),
            _ => {}
        }
        if enlarge_in == 0 {
            enlarge_in = 1 << code_bits;
            code_bits += 1;
        }

        let previous_first = dictionary.entries[previous].first;
        if code == dictionary.len() {
            // The code names the entry being defined right now: previous
            // entry plus its own first unit.
            dictionary.push_extension(previous, previous_first)?;
            dictionary.write(code, &mut out, max_units)?;
        } else if code < dictionary.len() {
            dictionary.write(code, &mut out, max_units)?;
            let entry_first = dictionary.entries[code].first;
            dictionary.push_extension(previous, entry_first)?;
        } else {
            return Err(LzError::Invalid);
        }
        enlarge_in -= 1;
        previous = code;

        if enlarge_in == 0 {
            enlarge_in = 1 << code_bits;
            code_bits += 1;
        }
        // A dictionary can never grow this large from an input under the
        // size limits; refuse rather than shift past the integer width.
        if code_bits > 31 {
            return Err(LzError::Invalid);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_what_lz_str_encodes() {
        let samples = [
            "",
            "a",
            r#"{"event":"$pageview","properties":{"distinct_id":"u1","$current_url":"https://example.com/é"}}"#,
            "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            "emoji 😀 and CJK 漢字 mixed with ascii, repeated: 漢字漢字漢字😀😀",
        ];
        for sample in samples {
            let encoded = lz_str::compress_to_base64(sample);
            assert_eq!(
                decompress_from_base64(&encoded, 1 << 20).as_deref(),
                Ok(sample),
                "sample {sample:?} encoded as {encoded:?}"
            );
        }
    }

    #[test]
    fn agrees_with_lz_str_on_a_long_varied_text() {
        let text: String = (0..5000)
            .map(|i| format!("{{\"i\":{i},\"k\":\"v{}\"}},", i % 37))
            .collect();
        let encoded = lz_str::compress_to_base64(text.as_str());
        let reference =
            String::from_utf16(&lz_str::decompress_from_base64(&encoded).unwrap()).unwrap();
        assert_eq!(reference, text);
        assert_eq!(decompress_from_base64(&encoded, text.len()).unwrap(), text);
    }

    #[test]
    fn stops_at_the_cap() {
        let text = "x".repeat(100_000);
        let encoded = lz_str::compress_to_base64(text.as_str());
        assert!(
            encoded.len() < 2_000,
            "lz-string should compress a run well"
        );
        assert_eq!(
            decompress_from_base64(&encoded, 99_999),
            Err(LzError::TooLarge)
        );
        assert_eq!(
            decompress_from_base64(&encoded, 100_000).unwrap().len(),
            100_000
        );
    }

    #[test]
    fn a_space_stands_for_a_plus() {
        // Find a sample whose encoding contains '+', as a form decoder would mangle it.
        let sample = (0..200)
            .map(|i| format!("{{\"n\":{i}}}"))
            .find(|s| lz_str::compress_to_base64(s.as_str()).contains('+'))
            .expect("some sample encodes with a '+'");
        let mangled = lz_str::compress_to_base64(sample.as_str()).replace('+', " ");
        assert_eq!(decompress_from_base64(&mangled, 1 << 16).unwrap(), sample);
    }

    #[test]
    fn rejects_garbage() {
        assert_eq!(
            decompress_from_base64("!!!!", 1 << 16),
            Err(LzError::Invalid)
        );
        // Valid alphabet, truncated stream.
        let encoded = lz_str::compress_to_base64("hello world, hello world");
        assert_eq!(
            decompress_from_base64(&encoded[..encoded.len() / 2], 1 << 16),
            Err(LzError::Invalid)
        );
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn round_trips_any_text_through_lz_str(text in any::<String>()) {
            let encoded = lz_str::compress_to_base64(text.as_str());
            prop_assert_eq!(decompress_from_base64(&encoded, text.len()), Ok(text));
        }

        #[test]
        fn never_panics_on_arbitrary_input(input in "[A-Za-z0-9+/= ]{0,300}", cap in 0usize..10_000) {
            let _ = decompress_from_base64(&input, cap);
        }
    }
}
