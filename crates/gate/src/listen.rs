//! Listen addresses of the app-facing API (`--dapr-listen-addresses`) and the exposure rule: an API reachable
//! from beyond this machine without an API token is a warning in development and a start-up error in production.
//!
//! Owned here: parsing the CSV into IPs and the exposure decision. Not owned here: binding sockets, ports, the
//! default (the caller picks one; ward's secure default is `[::1],127.0.0.1`, unlike daprd's all-interfaces `""`).

use std::net::IpAddr;

/// Why a listen-address list or its exposure was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ListenError {
    /// The list is empty; listening everywhere must be asked for explicitly (`0.0.0.0,::`).
    #[error("listen address list is empty")]
    Empty,
    /// An entry between commas is empty (`127.0.0.1,,::1`).
    #[error("listen address list has an empty entry at position {position}")]
    EmptyEntry { position: usize },
    /// An entry is not an IP address (host names are refused: what they resolve to can change).
    #[error("listen address {entry:?} is not an IP address")]
    InvalidAddress {
        entry: String,
        #[source]
        source: std::net::AddrParseError,
    },
    /// Production mode refuses to expose the API beyond loopback without an API token.
    #[error(
        "refusing to listen on non-loopback address(es) {addresses} without an API token in production mode: set \
         DAPR_API_TOKEN / --dapr-api-token-file, or listen on 127.0.0.1 / [::1]"
    )]
    ExposedWithoutToken { addresses: String },
}

/// Parses `--dapr-listen-addresses`: comma-separated IPs, whitespace trimmed, IPv6 optionally in brackets.
/// `position` in errors is 1-based.
pub fn parse_listen_addresses(csv: &str) -> Result<Vec<IpAddr>, ListenError> {
    if csv.trim().is_empty() {
        return Err(ListenError::Empty);
    }
    csv.split(',')
        .enumerate()
        .map(|(index, entry)| {
            let entry = entry.trim();
            if entry.is_empty() {
                return Err(ListenError::EmptyEntry { position: index + 1 });
            }
            let bare = entry.strip_prefix('[').and_then(|e| e.strip_suffix(']')).unwrap_or(entry);
            bare.parse::<IpAddr>().map_err(|source| ListenError::InvalidAddress { entry: entry.to_owned(), source })
        })
        .collect()
}

/// Decides whether the addresses expose the API: `Ok(None)` if fine, `Ok(Some(warning))` in development when a
/// non-loopback address is used without a token (print it prominently), `Err` in production.
///
/// The unspecified addresses (`0.0.0.0`, `::`) count as exposed; IPv4-mapped loopback (`::ffff:127.0.0.1`) does not.
pub fn exposure_check(
    addrs: &[IpAddr],
    token_configured: bool,
    production: bool,
) -> Result<Option<String>, ListenError> {
    if token_configured {
        return Ok(None);
    }
    let exposed: Vec<String> =
        addrs.iter().filter(|ip| !ip.to_canonical().is_loopback()).map(IpAddr::to_string).collect();
    if exposed.is_empty() {
        return Ok(None);
    }
    let addresses = exposed.join(", ");
    if production {
        return Err(ListenError::ExposedWithoutToken { addresses });
    }
    Ok(Some(format!(
        "WARNING: the Dapr API listens on non-loopback address(es) {addresses} WITHOUT an API token: anyone who can \
         reach them can call every API of this sidecar (state, secrets, invocation as this app). Set DAPR_API_TOKEN \
         or --dapr-api-token-file, or listen on 127.0.0.1 / [::1]. Production mode refuses this."
    )))
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;

    #[test]
    fn parse_table() {
        let ok = [
            ("127.0.0.1", vec![IpAddr::V4(Ipv4Addr::LOCALHOST)]),
            (" [::1] , 127.0.0.1 ", vec![IpAddr::V6(Ipv6Addr::LOCALHOST), IpAddr::V4(Ipv4Addr::LOCALHOST)]),
            ("::1", vec![IpAddr::V6(Ipv6Addr::LOCALHOST)]),
            ("0.0.0.0,::", vec![IpAddr::V4(Ipv4Addr::UNSPECIFIED), IpAddr::V6(Ipv6Addr::UNSPECIFIED)]),
        ];
        for (input, expected) in ok {
            assert_eq!(parse_listen_addresses(input).unwrap(), expected, "{input}");
        }
        assert_eq!(parse_listen_addresses(""), Err(ListenError::Empty));
        assert_eq!(parse_listen_addresses("  "), Err(ListenError::Empty));
        assert_eq!(parse_listen_addresses("127.0.0.1,,::1"), Err(ListenError::EmptyEntry { position: 2 }));
        assert_eq!(parse_listen_addresses("127.0.0.1,"), Err(ListenError::EmptyEntry { position: 2 }));
        for bad in ["localhost", "[127.0.0.1", "::1]", "127.0.0.1:3500", "[[::1]]", "1.2.3", "[]"] {
            assert!(
                matches!(parse_listen_addresses(bad), Err(ListenError::InvalidAddress { .. })),
                "{bad} must be refused"
            );
        }
    }

    #[test]
    fn exposure_table() {
        let loopback = parse_listen_addresses("[::1],127.0.0.1,::ffff:127.0.0.1").unwrap();
        let all = parse_listen_addresses("0.0.0.0").unwrap();
        let lan = parse_listen_addresses("127.0.0.1,192.168.1.5").unwrap();
        assert_eq!(exposure_check(&loopback, false, true), Ok(None));
        assert_eq!(exposure_check(&all, true, true), Ok(None));
        assert!(matches!(exposure_check(&all, false, true), Err(ListenError::ExposedWithoutToken { .. })));
        let warning = exposure_check(&lan, false, false).unwrap().unwrap();
        assert!(warning.contains("192.168.1.5") && !warning.contains("127.0.0.1,"), "{warning}");
        let refused = exposure_check(&lan, false, true);
        assert_eq!(refused, Err(ListenError::ExposedWithoutToken { addresses: "192.168.1.5".into() }));
    }
}
