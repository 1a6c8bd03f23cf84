//! Numeric header values (`X-Cache-TTL`, `RateLimit-*`) without an allocation per response.
//! `HeaderValue::from(u64)` allocates its bytes every time, and a limited cache hit wrote
//! four of them: in the profile of that hit, allocation was the largest single cost of the
//! layers. Values up to [`TABLE`] are made once and cloned (a reference-count increment);
//! larger ones are made as before. Shared by the cache and rate-limit layers, which do not
//! depend on each other.

use std::sync::LazyLock;

use http::HeaderValue;

/// The largest value kept ready: an hour of seconds (the longest usual window or TTL) and
/// any remaining count up to it.
const TABLE: u64 = 3600;

static VALUES: LazyLock<Vec<HeaderValue>> =
    LazyLock::new(|| (0..=TABLE).map(HeaderValue::from).collect());

/// `n` as a header value.
pub(crate) fn header_value(n: u64) -> HeaderValue {
    usize::try_from(n)
        .ok()
        .and_then(|i| VALUES.get(i))
        .cloned()
        .unwrap_or_else(|| HeaderValue::from(n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_read_as_their_numbers() {
        for n in [0, 1, 42, TABLE, TABLE + 1, u64::MAX] {
            assert_eq!(header_value(n), n.to_string().as_str());
        }
    }
}
