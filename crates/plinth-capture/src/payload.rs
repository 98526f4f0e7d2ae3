//! Turning request bytes into JSON text: gzip (found by its magic bytes,
//! whatever the headers say), lz-string, base64, form bodies and query
//! `data=`. Every step is capped by the request size limit.

use std::io::Read;

use base64::Engine;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use flate2::read::MultiGzDecoder;

use crate::error::CaptureError;
use crate::lzstring::{self, LzError};

/// The first two bytes of every gzip stream.
pub(crate) const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// A compression named by `?compression=` or a form field. Unknown names
/// count as none: PostHog too ignores values it does not know.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Compression {
    #[default]
    None,
    Gzip,
    LzString,
    Base64,
}

impl Compression {
    pub(crate) fn parse(name: &str) -> Compression {
        match name.trim().to_ascii_lowercase().as_str() {
            "gzip" | "gzip-js" => Compression::Gzip,
            "lz64" | "lz-string" => Compression::LzString,
            "base64" | "b64" => Compression::Base64,
            _ => Compression::None,
        }
    }
}

/// Base64 that tolerates both alphabets and missing or extra padding, as
/// clients send it in every variant.
const STANDARD_LENIENT: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);
const URL_SAFE_LENIENT: GeneralPurpose = GeneralPurpose::new(
    &alphabet::URL_SAFE,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

/// Decodes base64 of either alphabet. Spaces are read as `+`, because a
/// `+` that was not percent-encoded in a form or query becomes a space.
pub(crate) fn decode_base64(text: &str) -> Option<Vec<u8>> {
    let cleaned: String = text
        .chars()
        .filter(|c| !matches!(c, '\n' | '\r' | '\t'))
        .map(|c| if c == ' ' { '+' } else { c })
        .collect();
    STANDARD_LENIENT
        .decode(&cleaned)
        .or_else(|_| URL_SAFE_LENIENT.decode(&cleaned))
        .ok()
}

/// Gunzips `compressed`, streaming, and fails as soon as the output passes `limit`.
pub(crate) fn gunzip_capped(compressed: &[u8], limit: usize) -> Result<Vec<u8>, CaptureError> {
    let mut decoder = MultiGzDecoder::new(compressed);
    let mut out = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        let read = decoder
            .read(&mut chunk)
            .map_err(|e| CaptureError::BadRequest(format!("invalid gzip data: {e}")))?;
        if read == 0 {
            return Ok(out);
        }
        if out.len() + read > limit {
            return Err(CaptureError::PayloadTooLarge { limit });
        }
        out.extend_from_slice(&chunk[..read]);
    }
}

/// Decodes lz-string base64 text into at most `limit` bytes of UTF-8.
pub(crate) fn decode_lz64(text: &str, limit: usize) -> Result<Vec<u8>, CaptureError> {
    match lzstring::decompress_from_base64(text, limit) {
        Ok(decoded) if decoded.len() <= limit => Ok(decoded.into_bytes()),
        Ok(_) | Err(LzError::TooLarge) => Err(CaptureError::PayloadTooLarge { limit }),
        Err(LzError::Invalid) => Err(CaptureError::BadRequest("invalid lz-string data".into())),
    }
}

/// True when the first non-blank byte opens a JSON object or array.
pub(crate) fn looks_like_json(bytes: &[u8]) -> bool {
    matches!(
        bytes.iter().find(|b| !b.is_ascii_whitespace()),
        Some(b'{' | b'[')
    )
}

/// Decodes the value of a `data=` field (form body or GET query): lz-string
/// when so named, otherwise base64 (posthog-js' default for these), and
/// plain JSON passes through.
pub(crate) fn decode_data_field(
    data: &str,
    compression: Compression,
    limit: usize,
) -> Result<Vec<u8>, CaptureError> {
    if data.len() > limit {
        return Err(CaptureError::PayloadTooLarge { limit });
    }
    if compression == Compression::LzString {
        return decode_lz64(data, limit);
    }
    if looks_like_json(data.as_bytes()) {
        return Ok(data.as_bytes().to_vec());
    }
    let decoded = decode_base64(data)
        .ok_or_else(|| CaptureError::BadRequest("data field is not valid base64".into()))?;
    if decoded.starts_with(&GZIP_MAGIC) {
        gunzip_capped(&decoded, limit)
    } else {
        Ok(decoded)
    }
}

/// Old clients base64-encode the JSON body without saying so: if the text is
/// not JSON but its base64 decoding is, use that.
pub(crate) fn unwrap_undeclared_base64(payload: Vec<u8>) -> Vec<u8> {
    if looks_like_json(&payload) {
        return payload;
    }
    match std::str::from_utf8(&payload).ok().and_then(decode_base64) {
        Some(decoded) if looks_like_json(&decoded) => decoded,
        _ => payload,
    }
}

/// The fields of a query string or form body that capture reads.
#[derive(Debug, Default)]
pub(crate) struct FormFields {
    pub(crate) compression: Option<Compression>,
    pub(crate) data: Option<String>,
    pub(crate) beacon: bool,
    /// `_` or `sent_at`: the client's send time in epoch milliseconds.
    pub(crate) sent_at_millis: Option<i64>,
}

impl FormFields {
    pub(crate) fn parse(encoded: &[u8]) -> FormFields {
        let encoded = encoded.strip_prefix(b"?").unwrap_or(encoded);
        let mut fields = FormFields::default();
        for (key, value) in form_urlencoded::parse(encoded) {
            match key.as_ref() {
                "compression" => fields.compression = Some(Compression::parse(&value)),
                "data" => fields.data = Some(value.into_owned()),
                "beacon" => fields.beacon = matches!(value.as_ref(), "1" | "true"),
                "_" | "sent_at" => fields.sent_at_millis = value.trim().parse().ok(),
                _ => {}
            }
        }
        fields
    }
}

/// True for `application/x-www-form-urlencoded`, with or without parameters.
pub(crate) fn is_form_content_type(content_type: Option<&str>) -> bool {
    content_type.is_some_and(|ct| {
        ct.split(';').next().is_some_and(|mime| {
            mime.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        })
    })
}
