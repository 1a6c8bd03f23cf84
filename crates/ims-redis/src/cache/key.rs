//! Cache key parts: the query hash of contract §5 and the key layout.

use md5::{Digest, Md5};

/// MD5 hex of the query parameters sorted by name, then value, and re-encoded as
/// `a=1&b=2`, so parameter order never changes the key. No query hashes the empty string.
pub fn query_hash(query: Option<&str>) -> String {
    let mut pairs: Vec<(String, String)> = form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .into_owned()
        .collect();
    pairs.sort();
    let canonical = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish();
    hex::encode(Md5::digest(canonical.as_bytes()))
}

/// MD5 hex of a response body, used as its strong `ETag`.
pub fn body_tag(body: &[u8]) -> String {
    format!("\"{}\"", hex::encode(Md5::digest(body)))
}

/// The group a key prefix invalidates with: its first segment (`items:list` → `items`).
pub fn group_of(key_prefix: &str) -> &str {
    key_prefix.split(':').next().unwrap_or(key_prefix)
}

/// The entry key, after the service prefix: `cache:{scope}:{keyPrefix}:{rest}`.
pub fn entry(scope: &str, key_prefix: &str, rest: &str) -> String {
    format!("cache:{scope}:{key_prefix}:{rest}")
}

/// The epoch counter of a (scope, group): bumped by every invalidation of the group.
pub fn epoch(scope: &str, group: &str) -> String {
    format!("cacheepoch:{scope}:{group}")
}

/// The index of a (scope, group): a sorted set of its entry keys scored by expiry time.
pub fn index(scope: &str, group: &str) -> String {
    format!("cacheidx:{scope}:{group}")
}

/// The global generation, bumped when the cache is flushed after a Redis outage.
pub const GENERATION: &str = "cachegen";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_hash_ignores_order_and_matches_md5_of_canonical_form() {
        assert_eq!(query_hash(None), "d41d8cd98f00b204e9800998ecf8427e");
        assert_eq!(query_hash(Some("")), "d41d8cd98f00b204e9800998ecf8427e");
        assert_eq!(query_hash(Some("b=2&a=1")), query_hash(Some("a=1&b=2")));
        // md5("a=1&b=2"), computed independently.
        assert_eq!(
            query_hash(Some("b=2&a=1")),
            "ed04c91cf6f6ab5a01a31c0295c5da34"
        );
        assert_eq!(query_hash(Some("a=2&a=1")), query_hash(Some("a=1&a=2")));
        assert_ne!(query_hash(Some("a=1")), query_hash(Some("a=2")));
        // Encoding differences of the same value do not matter.
        assert_eq!(query_hash(Some("q=a%20b")), query_hash(Some("q=a+b")));
    }

    #[test]
    fn groups_are_first_segments() {
        assert_eq!(group_of("items:list"), "items");
        assert_eq!(group_of("reports:sales-by-item"), "reports");
        assert_eq!(group_of("tax"), "tax");
    }
}
