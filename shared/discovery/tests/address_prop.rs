//! Properties of the address parsers (`HostPort`, `UpstreamAddress`): whatever
//! text an operator or a routes file gives, parsing never panics, and what
//! parses displays as it was written and parses again to the same value.
//!
//! Cases per property: `PROPTEST_CASES` (10,000, set in `.cargo/config.toml`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use proptest::prelude::*;
use suite_discovery::{HostPort, UpstreamAddress};

/// A DNS name: one to four labels of letters, digits and inner hyphens.
fn dns_name() -> impl Strategy<Value = String> {
    prop::collection::vec("[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?", 1..4).prop_map(|labels| labels.join("."))
}

/// A host as it is written in an address: a DNS name, IPv4, or IPv6 in brackets.
fn host() -> impl Strategy<Value = String> {
    prop_oneof![
        dns_name(),
        any::<[u8; 4]>().prop_map(|octets| Ipv4Addr::from(octets).to_string()),
        any::<[u16; 8]>().prop_map(|segments| format!("[{}]", Ipv6Addr::from(segments))),
    ]
}

/// A port as text: valid ones, 0, out of range, signed, padded, huge, empty.
fn port_text() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => (1..=u16::MAX).prop_map(|port| port.to_string()),
        1 => Just("0".to_owned()),
        1 => (65_536..u64::MAX).prop_map(|port| port.to_string()),
        1 => "[+-]?[0-9]{0,6}",
        1 => "0{1,4}[1-9][0-9]{0,3}",
        1 => "[0-9a-z%+ ]{0,6}",
    ]
}

/// Text that looks like an address, with the characters that matter to its syntax.
fn address_like() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => (host(), port_text()).prop_map(|(host, port)| format!("{host}:{port}")),
        2 => "[a-z0-9.:\\[\\]@/%?#,+ -]{0,30}",
        1 => any::<String>(),
        1 => (host(), port_text(), "[@/?#%\\[\\] ]", 0..20_usize).prop_map(|(host, port, junk, at)| {
            let mut text = format!("{host}:{port}");
            let at = text.char_indices().map(|(index, _)| index).nth(at).unwrap_or(text.len());
            text.insert_str(at, &junk);
            text
        }),
    ]
}

/// The port a `host:port` text names, when its port is all digits and in range.
fn written_port(text: &str) -> Option<u16> {
    let (_, port) = text.rsplit_once(':')?;
    (!port.is_empty() && port.bytes().all(|byte| byte.is_ascii_digit()))
        .then(|| port.parse().ok())
        .flatten()
}

proptest! {
    #[test]
    fn host_port_never_panics_and_what_parses_displays_as_written(text in address_like()) {
        if let Ok(parsed) = text.parse::<HostPort>() {
            prop_assert_eq!(parsed.to_string(), text.as_str());
            prop_assert_eq!(parsed.to_string().parse::<HostPort>(), Ok(parsed.clone()));
            prop_assert!(!parsed.host().is_empty());
            prop_assert!(!text.contains('@'), "credentials accepted in {:?}", text);
            prop_assert_eq!(written_port(&text), Some(parsed.port()), "port of {:?}", text);
            prop_assert_ne!(parsed.port(), 0);
            prop_assert_eq!(format!("{}:{}", parsed.host(), text.rsplit_once(':').map_or("", |(_, port)| port)), text.as_str());
            if let Some(bracketed) = parsed.host().strip_prefix('[') {
                let ip = bracketed.strip_suffix(']').and_then(|inner| inner.parse::<Ipv6Addr>().ok());
                prop_assert!(ip.is_some(), "{:?} is not IPv6 in brackets", parsed.host());
                prop_assert_eq!(parsed.ip_literal(), ip.map(|ip| SocketAddr::new(IpAddr::V6(ip), parsed.port())));
            } else if let Ok(ip) = parsed.host().parse::<Ipv4Addr>() {
                prop_assert_eq!(parsed.ip_literal(), Some(SocketAddr::new(IpAddr::V4(ip), parsed.port())));
            }
        }
    }

    #[test]
    fn well_formed_host_ports_parse_to_their_parts(host in host(), port in 1..=u16::MAX) {
        let text = format!("{host}:{port}");
        let parsed = text.parse::<HostPort>();
        prop_assert!(parsed.is_ok(), "{:?}: {:?}", text, parsed);
        let parsed = parsed.unwrap_or_else(|_| unreachable!());
        prop_assert_eq!(parsed.host(), host.as_str());
        prop_assert_eq!(parsed.port(), port);
        prop_assert_eq!(parsed.to_string(), text);
        let literal = host.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>().ok();
        prop_assert_eq!(parsed.ip_literal(), literal.map(|ip| SocketAddr::new(ip, port)));
    }

    #[test]
    fn upstream_address_never_panics_and_what_parses_displays_normalised(
        parts in prop::collection::vec((address_like(), "[ \t]{0,2}", "[ \t]{0,2}"), 0..4),
        separator in prop_oneof![Just(","), Just(", "), Just(" ,")],
    ) {
        let text = parts.iter().map(|(part, before, after)| format!("{before}{part}{after}")).collect::<Vec<_>>().join(separator);
        let pieces: Vec<&str> = text.split(',').map(str::trim).filter(|piece| !piece.is_empty()).collect();
        match text.parse::<UpstreamAddress>() {
            Ok(parsed) => {
                prop_assert_eq!(parsed.to_string(), pieces.join(","));
                prop_assert_eq!(parsed.to_string().parse::<UpstreamAddress>(), Ok(parsed.clone()));
                prop_assert_eq!(parsed.hosts().len(), pieces.len());
                for (host, piece) in parsed.hosts().iter().zip(&pieces) {
                    prop_assert_eq!(host.to_string(), *piece);
                }
            }
            Err(_) => prop_assert!(
                pieces.is_empty() || pieces.iter().any(|piece| piece.parse::<HostPort>().is_err()),
                "{:?} refused though every piece parses", text
            ),
        }
    }

    #[test]
    fn lists_of_well_formed_host_ports_parse_in_order(hosts in prop::collection::vec((host(), 1..=u16::MAX), 1..5)) {
        let written: Vec<String> = hosts.iter().map(|(host, port)| format!("{host}:{port}")).collect();
        let parsed = written.join(" , ").parse::<UpstreamAddress>();
        prop_assert!(parsed.is_ok(), "{:?}", written);
        let parsed = parsed.unwrap_or_else(|_| unreachable!());
        prop_assert_eq!(parsed.to_string(), written.join(","));
        for (host, (name, port)) in parsed.hosts().iter().zip(&hosts) {
            prop_assert_eq!(host.host(), name.as_str());
            prop_assert_eq!(host.port(), *port);
        }
    }
}
