//! Cache key parts: the query hash of contract §5 and the key layout.

use md5::{Digest, Md5};

/// MD5 hex of the query parameters sorted by name, then value, and re-encoded as
/// `a=1&b=2`, so parameter order never changes the key. No query hashes the empty string.
pub fn query_hash(query: Option<&str>) -> String {
    let mut hash = String::with_capacity(32);
    push_query_hash(&mut hash, query);
    hash
}

/// Appends [`query_hash`] to `out` (a key being built: no string of its own).
pub fn push_query_hash(out: &mut String, query: Option<&str>) {
    let query = query.unwrap_or("");
    // The hash of no query, the commonest by far (a plain list read), is a constant.
    if query.is_empty() {
        return out.push_str(EMPTY_MD5_HEX);
    }
    if query.len() <= MEMO_MAX_QUERY {
        if let Some(hex) = RECENT.with_borrow(|recent| recent.get(query).copied()) {
            // Hex digits are ASCII; the check is a formality.
            return out.push_str(std::str::from_utf8(&hex).unwrap_or(EMPTY_MD5_HEX));
        }
        let start = out.len();
        hash_query(out, query);
        if let Ok(hex) = <[u8; 32]>::try_from(&out.as_bytes()[start..]) {
            RECENT.with_borrow_mut(|recent| recent.insert(query.into(), hex));
        }
        return;
    }
    hash_query(out, query);
}

/// Queries longer than this are hashed every time (a long query is rarely repeated, and
/// would take room from the common short ones).
const MEMO_MAX_QUERY: usize = 256;

/// Distinct queries whose hash each runtime thread keeps.
const MEMO_QUERIES: usize = 256;

thread_local! {
    /// The hashes of the queries this thread saw last. A cache hit is a repeated request
    /// by definition, so its query usually is here, and the hit is spared the canonical
    /// form's check and the MD5 (about 850 instructions less, lookup included, counted
    /// with callgrind). One per thread: no lock, no sharing between the runtime's threads.
    static RECENT: std::cell::RefCell<quick_cache::unsync::Cache<Box<str>, [u8; 32]>> =
        std::cell::RefCell::new(quick_cache::unsync::Cache::new(MEMO_QUERIES));
}

/// [`push_query_hash`] without the memo: canonical form, then MD5.
fn hash_query(out: &mut String, query: &str) {
    if is_canonical(query) {
        return push_md5_hex(out, query.as_bytes());
    }
    // Borrowed where nothing was percent-decoded: no copy of each name and value.
    let mut pairs: Vec<_> = form_urlencoded::parse(query.as_bytes()).collect();
    pairs.sort();
    let canonical = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish();
    push_md5_hex(out, canonical.as_bytes());
}

/// MD5 of the empty string, in hex.
const EMPTY_MD5_HEX: &str = "d41d8cd98f00b204e9800998ecf8427e";

/// Appends the MD5 hex of `bytes`, encoded in one pass (`hex::encode` collects it character
/// by character into a string of its own).
fn push_md5_hex(out: &mut String, bytes: &[u8]) {
    let mut text = [0; 32];
    // Hex digits are ASCII: the check is a formality (`from_utf8_lossy` cost 250
    // instructions a hit walking its chunks).
    match hex::encode_to_slice(Md5::digest(bytes), &mut text)
        .ok()
        .and_then(|()| std::str::from_utf8(&text).ok())
    {
        Some(hex) => out.push_str(hex),
        None => out.push_str(&hex::encode(Md5::digest(bytes))),
    }
}

/// Whether `query` already is its canonical form: `name=value` pairs in order, of bytes the
/// form encoding leaves as they are. The usual query of a cached read (`limit=100`,
/// `page=2&status=open`) then costs no parse, sort or re-encoding on every hit.
fn is_canonical(query: &str) -> bool {
    let plain = |text: &str| {
        text.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'*' | b'-' | b'.' | b'_'))
    };
    let mut previous = None;
    query.split('&').all(|pair| {
        let Some((name, value)) = pair.split_once('=') else {
            return false;
        };
        let in_order = previous.is_none_or(|before| before <= (name, value));
        previous = Some((name, value));
        in_order && plain(name) && plain(value)
    })
}

/// MD5 hex of a response body, used as its strong `ETag`.
pub fn body_tag(body: &[u8]) -> String {
    format!("\"{}\"", hex::encode(Md5::digest(body)))
}

/// The group a key prefix invalidates with: its first segment (`posts:list` → `posts`).
pub fn group_of(key_prefix: &str) -> &str {
    key_prefix.split(':').next().unwrap_or(key_prefix)
}

/// Where a cache's keys live. On one server they follow contract §5
/// (`cache:<scope>:<keyPrefix>:…`). On a cluster, every key of a scope carries the scope as
/// its hash tag (`cache:{<scope>}:…`), so the entry, its group's epoch and index, which the
/// store and invalidation scripts touch together, share one slot.
#[derive(Debug, Clone, Copy, Default)]
pub struct Layout {
    /// Keys for Redis Cluster.
    pub cluster: bool,
}

impl Layout {
    fn scope(self, scope: &str) -> String {
        if self.cluster {
            format!("{{{scope}}}")
        } else {
            scope.to_string()
        }
    }

    /// The entry key, after the service prefix: `cache:{scope}:{keyPrefix}:{rest}`.
    pub fn entry(self, scope: &str, key_prefix: &str, rest: &str) -> String {
        self.entry_parts(scope, key_prefix, rest).concat()
    }

    /// The parts of [`entry`](Self::entry), for making the whole key (service prefix
    /// included) in one allocation on every lookup.
    pub fn entry_parts<'a>(
        self,
        scope: &'a str,
        key_prefix: &'a str,
        rest: &'a str,
    ) -> [&'a str; 8] {
        let (open, close) = if self.cluster { ("{", "}") } else { ("", "") };
        ["cache:", open, scope, close, ":", key_prefix, ":", rest]
    }

    /// The epoch counter of a (scope, group): bumped by every invalidation of the group.
    pub fn epoch(self, scope: &str, group: &str) -> String {
        format!("cacheepoch:{}:{group}", self.scope(scope))
    }

    /// The parts of [`epoch`](Self::epoch) for a name given in two parts (`["#", tag]` for
    /// a tag, `["", group]` otherwise), for making the whole key in one allocation on every
    /// lookup.
    pub fn epoch_parts<'a>(self, scope: &'a str, name: [&'a str; 2]) -> [&'a str; 7] {
        let (open, close) = if self.cluster { ("{", "}") } else { ("", "") };
        ["cacheepoch:", open, scope, close, ":", name[0], name[1]]
    }

    /// The index of a (scope, group): a sorted set of its entry keys scored by expiry time.
    pub fn index(self, scope: &str, group: &str) -> String {
        format!("cacheidx:{}:{group}", self.scope(scope))
    }

    /// The generation that guards `full_entry` (the entry's whole key, prefix included),
    /// bumped when the cache is flushed after a Redis outage. One global key on a server; on
    /// a cluster one per slot, in the entry's slot, because a script may only touch keys of
    /// one slot. Per slot rather than per scope: the flush must bump every generation, and
    /// the slots are a fixed, known set (16,384 keys) where scopes are not.
    pub fn generation(self, full_entry: &str) -> String {
        if self.cluster {
            format!(
                "cachegen:{{{}}}",
                slot_tags()[usize::from(slot(full_entry))]
            )
        } else {
            GENERATION.to_string()
        }
    }

    /// Every generation key (see [`generation`](Self::generation)).
    pub fn generations(self) -> Vec<String> {
        if self.cluster {
            slot_tags()
                .iter()
                .map(|tag| format!("cachegen:{{{tag}}}"))
                .collect()
        } else {
            vec![GENERATION.to_string()]
        }
    }
}

/// The global generation of a single server.
const GENERATION: &str = "cachegen";

/// Slots of a Redis Cluster.
const SLOTS: u16 = 16_384;

/// The slot of `key` by Redis Cluster's rule: CRC16 of the hash tag (the text between the
/// first `{` and the next `}`, when not empty), or of the whole key.
pub fn slot(key: &str) -> u16 {
    let bytes = key.as_bytes();
    let tagged = bytes.iter().position(|b| *b == b'{').and_then(|open| {
        let close = bytes[open + 1..].iter().position(|b| *b == b'}')?;
        (close > 0).then(|| &bytes[open + 1..open + 1 + close])
    });
    crc16::State::<crc16::XMODEM>::calculate(tagged.unwrap_or(bytes)) % SLOTS
}

/// For each slot, a short hash tag that lands in it (the first decimal number that does).
/// Found once per process: about 160,000 CRC16s.
fn slot_tags() -> &'static [String] {
    static TAGS: std::sync::LazyLock<Vec<String>> = std::sync::LazyLock::new(|| {
        let mut tags = vec![String::new(); usize::from(SLOTS)];
        let mut missing = usize::from(SLOTS);
        let mut n: u64 = 0;
        while missing > 0 {
            let tag = n.to_string();
            let slot =
                usize::from(crc16::State::<crc16::XMODEM>::calculate(tag.as_bytes()) % SLOTS);
            if tags[slot].is_empty() {
                tags[slot] = tag;
                missing -= 1;
            }
            n += 1;
        }
        tags
    });
    &TAGS
}

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
    fn a_remembered_hash_is_the_hash() {
        let fresh = |query: &str| {
            let mut out = String::new();
            hash_query(&mut out, query);
            out
        };
        // More distinct queries than a thread keeps, each asked twice (hashed, then
        // remembered or evicted), and one too long to be kept.
        let long = format!("q={}", "x".repeat(MEMO_MAX_QUERY));
        let queries: Vec<String> = (0..MEMO_QUERIES * 2)
            .map(|i| format!("page={i}&b=2&a=1"))
            .chain([long])
            .collect();
        for _ in 0..2 {
            for query in &queries {
                assert_eq!(query_hash(Some(query)), fresh(query), "{query}");
            }
        }
        assert_eq!(
            query_hash(Some("b=2&a=1")),
            "ed04c91cf6f6ab5a01a31c0295c5da34"
        );
        assert_eq!(
            query_hash(Some("b=2&a=1")),
            "ed04c91cf6f6ab5a01a31c0295c5da34"
        );
    }

    #[test]
    fn queries_already_canonical_hash_as_their_canonical_form() {
        let slow = |query: &str| {
            let mut pairs: Vec<_> = form_urlencoded::parse(query.as_bytes()).collect();
            pairs.sort();
            let canonical = form_urlencoded::Serializer::new(String::new())
                .extend_pairs(pairs)
                .finish();
            hex::encode(Md5::digest(canonical.as_bytes()))
        };
        for query in [
            "limit=100",
            "a=1&b=2",
            "b=2&a=1",
            "a=2&a=1",
            "a=1&a=2",
            "a&b=1",
            "a=1&&b=2",
            "&a=1",
            "a=1&",
            "=1",
            "a=",
            "a=b=c",
            "q=a%20b",
            "q=a+b",
            "q=A,B",
            "q=\u{e9}",
            "page=2&status=open&to=2026-01-01",
            "x.y=1*2&x_y=-",
        ] {
            assert_eq!(query_hash(Some(query)), slow(query), "{query}");
        }
        assert!(is_canonical("page=2&status=open"));
        assert!(!is_canonical("status=open&page=2"));
        assert!(!is_canonical("q=a+b"));
    }

    #[test]
    fn slots_follow_the_cluster_rule() {
        // Values from the Redis Cluster specification and `CLUSTER KEYSLOT`.
        assert_eq!(slot("123456789"), 12739);
        assert_eq!(slot("foo"), 12182);
        assert_eq!(slot("{user1000}.following"), slot("user1000"));
        assert_eq!(slot("foo{}{bar}"), slot("foo{}{bar}"));
        assert_ne!(slot("foo{}{bar}"), slot("bar"));
    }

    #[test]
    fn cluster_keys_of_a_scope_share_a_slot_with_their_generation() {
        let layout = Layout { cluster: true };
        let entry = format!(
            "ims:{}",
            layout.entry("org-1", "posts:list", "GET:/posts:x")
        );
        assert_eq!(entry, "ims:cache:{org-1}:posts:list:GET:/posts:x");
        let slot_of = slot(&entry);
        assert_eq!(
            slot(&format!("ims:{}", layout.epoch("org-1", "posts"))),
            slot_of
        );
        assert_eq!(
            slot(&format!("ims:{}", layout.index("org-1", "posts"))),
            slot_of
        );
        assert_eq!(slot(&format!("ims:{}", layout.generation(&entry))), slot_of);
        let generations = layout.generations();
        assert_eq!(generations.len(), 16_384);
        let mut slots: Vec<u16> = generations.iter().map(|g| slot(g)).collect();
        slots.sort_unstable();
        slots.dedup();
        assert_eq!(slots.len(), 16_384, "one generation per slot");
        let single = Layout { cluster: false };
        assert_eq!(single.entry("o", "posts:list", "r"), "cache:o:posts:list:r");
        assert_eq!(single.generation("anything"), "cachegen");
    }

    #[test]
    fn groups_are_first_segments() {
        assert_eq!(group_of("posts:list"), "posts");
        assert_eq!(group_of("stats:by-author"), "stats");
        assert_eq!(group_of("authors"), "authors");
    }
}
