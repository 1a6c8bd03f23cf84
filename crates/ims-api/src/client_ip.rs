//! Which address a request comes from: one rule, used by the rate limits and by the IP
//! recorded on sessions.
//!
//! Behind proxies that append to `X-Forwarded-For` (nginx, load balancers), only the
//! entries those proxies added can be trusted; everything to their left was written by the
//! client, who can put anything there. So the client is found from the **right**:
//!
//! - `TRUST_PROXY=false` (default): the header is ignored, the client is the socket's peer;
//! - `TRUST_PROXY=true` (one proxy) or `TRUST_PROXY=<n>` (n proxies): the n-th entry from
//!   the right, the address the outermost trusted proxy saw;
//! - `TRUSTED_PROXIES=<CIDR list>`: from the right, starting with the peer, every address in
//!   those networks is a proxy and skipped; the first one outside them is the client (if the
//!   peer is not a known proxy, the header is ignored). Takes precedence over `TRUST_PROXY`.
//!
//! An entry that is not an IP address (an empty one included: `1.1.1.1, ` has two) never
//! becomes the client, and neither does anything to its left: with `TRUST_PROXY` the rule
//! falls back to the peer, with `TRUSTED_PROXIES` to the last address it could trust (the
//! proxy to the entry's right), so a garbled header costs its sender the proxy's shared
//! limit instead of a fresh one. (Empty entries used to be skipped, which made the
//! client-written entry to their left the key; found by a probe.)
//! (`axum-client-ip` offers the rightmost entry, but neither n hops nor CIDR skipping, so
//! this is written by hand; `ipnet` parses the networks.)

use std::net::{IpAddr, SocketAddr};

use axum::http::{HeaderMap, HeaderName};
use ipnet::IpNet;

/// A name made once: looking a header up by `&str` parses the name on every call.
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// How far `X-Forwarded-For` is trusted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProxyTrust {
    /// Proxies in front (`TRUST_PROXY`); 0: the header is ignored.
    pub hops: usize,
    /// Known proxy networks (`TRUSTED_PROXIES`); when set, they decide.
    pub networks: Vec<IpNet>,
}

/// An `X-Forwarded-For` entry as an address: `1.2.3.4`, `1.2.3.4:80`, `::1`, `[::1]`,
/// `[::1]:80`; an IPv4-mapped IPv6 address (`::ffff:1.2.3.4`) is its IPv4 address.
fn parse(entry: &str) -> Option<IpAddr> {
    // Header text is ASCII (`to_str` refuses anything else): no Unicode whitespace rules.
    let entry = entry.trim_ascii();
    entry
        .parse::<IpAddr>()
        .ok()
        .or_else(|| entry.parse::<SocketAddr>().ok().map(|s| s.ip()))
        .or_else(|| {
            entry
                .strip_prefix('[')?
                .strip_suffix(']')?
                .parse::<std::net::Ipv6Addr>()
                .ok()
                .map(IpAddr::V6)
        })
        .map(|ip| ip.to_canonical())
}

impl ProxyTrust {
    /// The client address of a request that came from `peer` with `headers`. One client,
    /// one address: `::ffff:1.2.3.4` (a dual-stack socket's view of an IPv4 peer, or a
    /// proxy's spelling) is `1.2.3.4`, so it does not get a rate limit of its own.
    pub fn client(&self, peer: Option<IpAddr>, headers: &HeaderMap) -> Option<IpAddr> {
        let peer = peer.map(|ip| ip.to_canonical());
        if self.hops == 0 && self.networks.is_empty() {
            return peer;
        }
        // Every X-Forwarded-For header, in order, as one list, read from the right (on every
        // limited request: no list is collected).
        // A line that is not text is one entry that is not an address; an empty entry is
        // kept as one too, not skipped.
        let mut from_right = headers
            .get_all(&X_FORWARDED_FOR)
            .iter()
            .rev()
            .map(|v| v.to_str().unwrap_or_default())
            .flat_map(|v| v.rsplit(','))
            .map(str::trim_ascii);
        if !self.networks.is_empty() {
            let mut client = peer?;
            while self.networks.iter().any(|net| net.contains(&client)) {
                match from_right.next() {
                    Some(entry) => match parse(entry) {
                        Some(address) => client = address,
                        None => return Some(client),
                    },
                    None => return Some(client),
                }
            }
            return Some(client);
        }
        from_right.nth(self.hops - 1).and_then(parse).or(peer)
    }
}

/// `ip` as text, as its `Display` writes it. An IPv4 address is written octet by octet:
/// `Display` formats it through a padded buffer, which showed in the profile of a limited
/// request (the rate-limit key is made from this text on every one).
pub fn text(ip: IpAddr) -> String {
    let IpAddr::V4(v4) = ip else {
        return ip.to_string();
    };
    let mut out = String::with_capacity(15);
    for (i, octet) in v4.octets().into_iter().enumerate() {
        if i > 0 {
            out.push('.');
        }
        out.push_str(itoa::Buffer::new().format(octet));
    }
    out
}

/// The client a request's per-address rate limits count it under: an IPv4 address itself,
/// an IPv6 address's /64 network (`2001:db8:1:2::/64`). One IPv6 host is usually given a
/// whole /64 and may send from any address in it; counted by the full address, it could
/// take a new one for every request and escape every per-address limit, the login limit
/// included (found by a code review). An IPv4 address mapped into IPv6 (`::ffff:a.b.c.d`,
/// a dual-stack socket's view of an IPv4 client) counts as that IPv4 address. Sessions
/// record the full address.
pub fn rate_limit_client(ip: IpAddr) -> String {
    match ip.to_canonical() {
        IpAddr::V4(v4) => text(IpAddr::V4(v4)),
        IpAddr::V6(v6) => {
            let [a, b, c, d, ..] = v6.segments();
            format!("{}/64", std::net::Ipv6Addr::new(a, b, c, d, 0, 0, 0, 0))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use axum::http::HeaderValue;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for v in values {
            map.append("x-forwarded-for", HeaderValue::from_str(v).expect("header"));
        }
        map
    }

    fn ip(s: &str) -> Option<IpAddr> {
        s.parse().ok()
    }

    #[test]
    fn without_trust_the_header_is_ignored() {
        let trust = ProxyTrust::default();
        assert_eq!(
            trust.client(ip("10.0.0.1"), &headers(&["1.1.1.1"])),
            ip("10.0.0.1")
        );
    }

    #[test]
    fn one_proxy_means_the_rightmost_entry_whatever_the_client_wrote() {
        let trust = ProxyTrust {
            hops: 1,
            networks: vec![],
        };
        let peer = ip("10.0.0.9");
        assert_eq!(
            trust.client(peer, &headers(&["6.6.6.6, 203.0.113.5"])),
            ip("203.0.113.5")
        );
        assert_eq!(
            trust.client(peer, &headers(&["7.7.7.7", "203.0.113.5"])),
            ip("203.0.113.5")
        );
        assert_eq!(
            trust.client(peer, &headers(&["203.0.113.5:4711"])),
            ip("203.0.113.5")
        );
        assert_eq!(
            trust.client(peer, &headers(&["[2001:db8::1]:80"])),
            ip("2001:db8::1")
        );
        // Garbage, or no header: the proxy's own address.
        assert_eq!(trust.client(peer, &headers(&["1.1.1.1, nonsense"])), peer);
        assert_eq!(trust.client(peer, &headers(&[])), peer);
        // An empty entry is not an address either: what the client wrote to its left
        // never becomes the key.
        for written in [
            &["1.1.1.1, "][..],
            &["1.1.1.1,"],
            &["1.1.1.1", ""],
            &["1.1.1.1, ,"],
        ] {
            assert_eq!(trust.client(peer, &headers(written)), peer, "{written:?}");
        }
        assert_eq!(
            trust.client(peer, &headers(&["[2001:db8::1]"])),
            ip("2001:db8::1")
        );
    }

    #[test]
    fn n_hops_take_the_nth_entry_from_the_right() {
        let trust = ProxyTrust {
            hops: 2,
            networks: vec![],
        };
        let peer = ip("10.0.0.9");
        let chain = headers(&["6.6.6.6, 203.0.113.5, 10.0.0.2"]);
        assert_eq!(trust.client(peer, &chain), ip("203.0.113.5"));
        assert_eq!(
            trust.client(peer, &headers(&["10.0.0.2"])),
            peer,
            "too short"
        );
        assert_eq!(
            trust.client(peer, &headers(&["1.1.1.1, , 10.0.0.2"])),
            peer,
            "an empty entry"
        );
    }

    #[test]
    fn known_proxy_networks_are_skipped_from_the_right() {
        let trust = ProxyTrust {
            hops: 0,
            networks: vec![
                "10.0.0.0/8".parse().expect("net"),
                "127.0.0.1/32".parse().expect("net"),
            ],
        };
        let chain = headers(&["6.6.6.6, 203.0.113.5, 10.1.2.3"]);
        assert_eq!(trust.client(ip("127.0.0.1"), &chain), ip("203.0.113.5"));
        // A peer outside the networks is the client: its header is not trusted.
        assert_eq!(trust.client(ip("198.51.100.1"), &chain), ip("198.51.100.1"));
        // Garbage right behind a proxy: that proxy.
        assert_eq!(
            trust.client(ip("127.0.0.1"), &headers(&["x, 10.1.2.3"])),
            ip("10.1.2.3")
        );
        // All proxies: the leftmost of them.
        assert_eq!(
            trust.client(ip("127.0.0.1"), &headers(&["10.9.9.9"])),
            ip("10.9.9.9")
        );
    }

    #[test]
    fn an_ipv4_mapped_address_is_its_ipv4_address() {
        let one = ProxyTrust {
            hops: 1,
            networks: vec![],
        };
        let v4 = ip("5.5.5.5");
        assert_eq!(
            one.client(ip("10.0.0.1"), &headers(&["::ffff:5.5.5.5"])),
            v4
        );
        assert_eq!(
            one.client(ip("10.0.0.1"), &headers(&["[::ffff:5.5.5.5]:80"])),
            v4
        );
        assert_eq!(
            ProxyTrust::default().client(ip("::ffff:5.5.5.5"), &headers(&[])),
            v4
        );
        let known = ProxyTrust {
            hops: 0,
            networks: vec!["10.0.0.0/8".parse().expect("net")],
        };
        assert_eq!(
            known.client(ip("::ffff:10.0.0.1"), &headers(&["5.5.5.5"])),
            v4
        );
    }

    #[test]
    fn text_is_what_display_writes() {
        for written in [
            "0.0.0.0",
            "10.0.0.1",
            "198.51.100.255",
            "255.255.255.255",
            "::1",
            "2001:db8::8:1",
            "::ffff:1.2.3.4",
        ] {
            let address: IpAddr = written.parse().expect("address");
            assert_eq!(text(address), written);
        }
    }

    #[test]
    fn ipv6_clients_are_limited_by_their_64_network() {
        let key = |s: &str| rate_limit_client(s.parse().expect("address"));
        assert_eq!(key("2001:db8:1:2:aaaa::1"), "2001:db8:1:2::/64");
        assert_eq!(key("2001:db8:1:2:ffff:ffff:ffff:ffff"), "2001:db8:1:2::/64");
        assert_eq!(key("2001:db8:1:3::1"), "2001:db8:1:3::/64");
        assert_eq!(key("::ffff:192.0.2.7"), "192.0.2.7");
        assert_eq!(key("192.0.2.7"), "192.0.2.7");
        assert_eq!(key("::1"), "::/64");
    }
}
