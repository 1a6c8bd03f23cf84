//! A cache entry as Redis holds it: a few header lines, then the body's bytes as they are.
//!
//! A hit reads one value and must answer from it without parsing the body (JSON escaping
//! would cost in proportion to it) and without a second command for the remaining time to
//! live, so the entry carries its own expiry; and where Redis may evict, the epochs it was
//! stored under, which the hit compares with the current ones. Kept apart from the engine
//! so that the format and its tests can be read in one place.

use bytes::Bytes;
use http::HeaderValue;

use super::body_tag;

/// A cached response body with the headers needed to replay it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cached {
    /// `Content-Type` of the response. Header values, not text: a hit replays them as they
    /// are (read from Redis, they are slices of the entry's bytes), with no copy.
    pub content_type: HeaderValue,
    /// Strong `ETag` (quoted MD5 of the body).
    pub etag: HeaderValue,
    /// The body bytes.
    pub body: Bytes,
    /// Every other header the handler set (names lower-case), replayed on a hit.
    pub headers: Vec<(String, String)>,
}

impl Cached {
    /// Builds an entry for `body`, computing its `ETag`.
    pub fn new(content_type: String, body: Bytes) -> Self {
        Self {
            // Hex in quotes: always a valid value.
            etag: HeaderValue::try_from(body_tag(&body)).unwrap_or(HeaderValue::from_static("")),
            content_type: HeaderValue::try_from(content_type)
                .unwrap_or(HeaderValue::from_static("application/octet-stream")),
            body,
            headers: Vec::new(),
        }
    }

    /// The entry with the handler's other headers.
    pub fn with_headers(mut self, headers: Vec<(String, String)>) -> Self {
        self.headers = headers;
        self
    }

    // One line of content type, one of ETag, one of the expiry (milliseconds since the
    // Unix epoch), one of the other headers (a JSON array of pairs; JSON escapes any line
    // break), then the raw body: no escaping, no parsing cost proportional to the body on
    // a hit. The expiry in the value spares a hit the `PTTL` it would need for
    // `X-Cache-TTL`. (Instances' clocks differ by their NTP error at most, which is all the
    // header can be off by.) The store script puts one more line in front: `@` and the
    // epochs the entry was stored under, comma-separated, which only the script knows.
    pub(super) fn encode(&self, stamp: Stamp) -> Vec<u8> {
        let expires = format!("{}:{}", stamp.expires, stamp.stored);
        let headers = serde_json::to_string(&self.headers).unwrap_or_else(|_| "[]".into());
        let mut out = Vec::with_capacity(
            self.content_type.len()
                + self.etag.len()
                + expires.len()
                + headers.len()
                + 4
                + self.body.len(),
        );
        for line in [
            self.content_type.as_bytes(),
            self.etag.as_bytes(),
            expires.as_bytes(),
            headers.as_bytes(),
        ] {
            out.extend_from_slice(line);
            out.push(b'\n');
        }
        out.extend_from_slice(&self.body);
        out
    }

    /// The entry, its expiry and the epochs it was stored under (the `@` line, without
    /// the `@`); `None` for anything else (an entry of an older format included: it counts
    /// as a miss and is replaced).
    pub(super) fn decode(raw: Vec<u8>) -> Option<(Self, Stamp, Bytes)> {
        let raw = Bytes::from(raw);
        if raw.first() != Some(&b'@') {
            return None;
        }
        // The first five line ends, found with SIMD: the header lines are short, but this
        // runs on every hit. Line breaks in the body after them are never looked at.
        let mut ends = memchr::memchr_iter(b'\n', &raw);
        let (epochs, first, second, third, fourth) = (
            ends.next()?,
            ends.next()?,
            ends.next()?,
            ends.next()?,
            ends.next()?,
        );
        let stamp_line = &raw[second + 1..third];
        let colon = memchr::memchr(b':', stamp_line)?;
        // Digits read as they are: `from_utf8` then `str::parse` cost a hit 300 instructions
        // for these two numbers. All of the bytes must be digits.
        let number = |digits: &[u8]| match atoi::FromRadix10Checked::from_radix_10_checked(digits) {
            (Some(n), used) if used == digits.len() && used > 0 => Some(n),
            _ => None,
        };
        let stamp = Stamp {
            expires: number(&stamp_line[..colon])?,
            stored: number(&stamp_line[colon + 1..])?,
        };
        let headers: Vec<(String, String)> = match &raw[third + 1..fourth] {
            // Most entries keep no header of their handler's: no parser for them.
            b"[]" => Vec::new(),
            line => serde_json::from_slice(line).ok()?,
        };
        Some((
            Self {
                content_type: HeaderValue::from_maybe_shared(raw.slice(epochs + 1..first)).ok()?,
                etag: HeaderValue::from_maybe_shared(raw.slice(first + 1..second)).ok()?,
                body: raw.slice(fourth + 1..),
                headers,
            },
            stamp,
            raw.slice(1..epochs),
        ))
    }
}

/// Whether the epochs an entry was stored under (`stamped`, comma-separated) are its
/// memberships' epochs `now`, in order. A missing epoch matches nothing: it was evicted or
/// expired, and whatever invalidated the entry meanwhile cannot be known.
pub(super) fn epochs_match(stamped: &[u8], now: &[Option<Vec<u8>>]) -> bool {
    let mut stamps = stamped.split(|b| *b == b',');
    now.iter().all(|now| match (stamps.next(), now) {
        (Some(stamp), Some(now)) => stamp == now.as_slice(),
        _ => false,
    }) && stamps.next().is_none()
}

/// When an entry was stored and when it stops being fresh (milliseconds since the Unix
/// epoch, the storing instance's clock).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Stamp {
    pub(super) expires: u64,
    pub(super) stored: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_through_their_encoding() {
        let cached = Cached::new(
            "application/json".into(),
            Bytes::from_static(b"{\"a\":\"x\ny\"}"),
        );
        let cached = cached.with_headers(vec![("x-total".into(), "7".into())]);
        let stamp = Stamp {
            expires: 1234,
            stored: 1000,
        };
        // The store script puts the epochs in front.
        let mut stored = b"@17,1732900000000001\n".to_vec();
        stored.extend(cached.encode(stamp));
        let (decoded, decoded_stamp, epochs) = Cached::decode(stored).expect("decodes");
        assert_eq!(decoded_stamp, stamp);
        assert_eq!(decoded, cached);
        assert_eq!(&epochs[..], b"17,1732900000000001");
        assert!(Cached::decode(b"no newline".to_vec()).is_none());
        // Older formats (no epochs, no expiry line, no header line): a miss, not a garbled
        // hit.
        assert!(Cached::decode(cached.encode(stamp)).is_none());
        assert!(Cached::decode(b"application/json\n\"tag\"\n{\"a\":1}".to_vec()).is_none());
        assert!(Cached::decode(b"application/json\n\"tag\"\n99\n{\"a\":1}".to_vec()).is_none());
        // A stamp that is not all digits, or too large, is no entry.
        for stamp in [
            "12a:1000",
            ":1000",
            "1234:",
            "1234:99999999999999999999",
            "+1:2",
        ] {
            let mut damaged = b"@1\ntext/plain\n\"t\"\n".to_vec();
            damaged.extend_from_slice(stamp.as_bytes());
            damaged.extend_from_slice(b"\n[]\nbody");
            assert!(Cached::decode(damaged).is_none(), "{stamp}");
        }
    }

    #[test]
    fn an_entry_is_valid_only_under_the_epochs_it_was_stored_with() {
        let now = |epochs: &[Option<&str>]| -> Vec<Option<Vec<u8>>> {
            epochs
                .iter()
                .map(|epoch| epoch.map(|e| e.as_bytes().to_vec()))
                .collect()
        };
        assert!(epochs_match(b"3,17", &now(&[Some("3"), Some("17")])));
        // Bumped since.
        assert!(!epochs_match(b"3,17", &now(&[Some("4"), Some("17")])));
        // Evicted or expired: whatever happened to it meanwhile is unknown.
        assert!(!epochs_match(b"3,17", &now(&[Some("3"), None])));
        // Stored under other memberships (a tag more or less).
        assert!(!epochs_match(b"3,17", &now(&[Some("3")])));
        assert!(!epochs_match(b"3", &now(&[Some("3"), Some("17")])));
        assert!(!epochs_match(b"", &now(&[Some("3")])));
    }
}
