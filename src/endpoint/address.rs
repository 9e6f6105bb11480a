//! Which addresses an endpoint may point at under `[delivery] block_private_targets`: the
//! judgement of an IP address, shared by the configuration's check of literal addresses and
//! the delivery guard's check of resolved ones.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Why an address is not a public one, or `None` when it is.
pub fn non_public(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => non_public_v4(v4),
        IpAddr::V6(v6) => non_public_v6(v6),
    }
}

fn non_public_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    match (a, b, c) {
        _ if ip.is_loopback() => Some("a loopback address"),
        _ if ip.is_private() => Some("a private address"),
        _ if ip.is_link_local() => Some("a link-local address"),
        _ if ip.is_unspecified() || a == 0 => Some("an unspecified (\"this network\") address"),
        _ if ip.is_broadcast() => Some("the broadcast address"),
        _ if ip.is_multicast() => Some("a multicast address"),
        // 100.64.0.0/10, carrier-grade NAT: private in practice.
        (100, 64..=127, _) => Some("a shared (carrier-grade NAT) address"),
        // 192.0.0.0/24 (IETF protocol assignments), 198.18.0.0/15 (benchmarking),
        // 240.0.0.0/4 (reserved).
        (192, 0, 0) | (198, 18..=19, _) | (240..=255, _, _) => Some("a reserved address"),
        _ => None,
    }
}

fn non_public_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let seg = ip.segments();
    // Addresses that carry an IPv4 address are judged by it: IPv4-mapped (::ffff:a.b.c.d),
    // the NAT64 well-known prefix (64:ff9b::/96) and 6to4 (2002:AABB:CCDD::/48).
    if let Some(v4) = ip.to_ipv4_mapped() {
        return non_public_v4(v4);
    }
    if seg[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return non_public_v4(Ipv4Addr::from(
            (u32::from(seg[6]) << 16) | u32::from(seg[7]),
        ));
    }
    if seg[0] == 0x2002 {
        return non_public_v4(Ipv4Addr::from(
            (u32::from(seg[1]) << 16) | u32::from(seg[2]),
        ));
    }
    if ip.is_loopback() {
        Some("a loopback address")
    } else if ip.is_unspecified() || seg[..6] == [0; 6] {
        // :: and the deprecated IPv4-compatible ::a.b.c.d.
        Some("an unspecified or IPv4-compatible address")
    } else if seg[0] & 0xfe00 == 0xfc00 {
        Some("a private (unique local) address")
    } else if seg[0] & 0xffc0 == 0xfe80 {
        Some("a link-local address")
    } else if seg[0] & 0xffc0 == 0xfec0 {
        Some("a site-local address")
    } else if ip.is_multicast() {
        Some("a multicast address")
    } else {
        None
    }
}

/// Refuses a URL whose host is a literal non-public IP (names are left to the resolver of
/// `delivery::guard`, at connect time).
pub fn check_public_literal(url: &reqwest::Url) -> Result<(), String> {
    // The URL parser has already normalised the host: an IPv4 address in dotted decimal, an
    // IPv6 one in brackets, anything else a domain name.
    let host = url.host_str().unwrap_or("");
    let literal = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let Ok(ip) = literal.parse::<IpAddr>() else {
        return Ok(());
    };
    match non_public(ip) {
        Some(why) => Err(format!("refused by block_private_targets: {ip} is {why}")),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn judge(s: &str) -> Option<&'static str> {
        non_public(s.parse().unwrap())
    }

    #[test]
    fn private_loopback_link_local_and_reserved_addresses_are_not_public() {
        for ip in [
            "127.0.0.1",
            "127.255.0.9",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "0.1.2.3",
            "100.64.0.1",
            "100.127.255.254",
            "192.0.0.8",
            "198.18.0.1",
            "224.0.0.1",
            "240.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "fec0::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::127.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "2002:7f00:1::",
            "2002:c0a8:0101::1",
        ] {
            assert!(judge(ip).is_some(), "{ip} passed as public");
        }
    }

    #[test]
    fn public_addresses_pass() {
        for ip in [
            "1.1.1.1",
            "8.8.8.8",
            "93.184.216.34",
            "172.32.0.1",
            "100.128.0.1",
            "192.0.2.1",
            "2606:4700:4700::1111",
            "2001:db8::1",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:0808:0808::1",
        ] {
            assert_eq!(judge(ip), None, "{ip} refused");
        }
    }

    #[test]
    fn literal_ip_urls_are_checked_and_names_left_to_the_resolver() {
        let url = |s: &str| reqwest::Url::parse(s).unwrap();
        assert!(check_public_literal(&url("http://127.0.0.1:9000/notify"))
            .unwrap_err()
            .contains("loopback"));
        assert!(check_public_literal(&url("http://[::1]/")).is_err());
        assert!(check_public_literal(&url("https://169.254.169.254/latest")).is_err());
        // The URL parser normalises odd spellings of an IPv4 address first.
        assert!(check_public_literal(&url("http://2130706433/")).is_err());
        assert!(check_public_literal(&url("http://0x7f.1/")).is_err());
        assert!(check_public_literal(&url("https://8.8.8.8/")).is_ok());
        assert!(check_public_literal(&url("https://example.com/")).is_ok());
    }
}
