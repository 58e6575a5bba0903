//! The `kilo.squat.ai/discovered-endpoints` value: Go's `json.Marshal` of a
//! `map[string]*net.UDPAddr`, e.g. `{"<base64 key>":{"IP":"1.2.3.4","Port":51820,"Zone":""}}`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr, SocketAddrV6};

use serde_json::Value;

use super::go;
use crate::Key;
use crate::cidr::canonical;

/// Writes the map byte-identical to Go's `json.Marshal`: keys sorted as strings (base64 text),
/// IPv4-mapped addresses printed as IPv4, a non-zero IPv6 scope id as the `Zone`.
pub(crate) fn encode(map: &Map) -> String {
    let mut entries: Vec<(String, &SocketAddr)> =
        map.iter().map(|(k, a)| (k.to_base64(), a)).collect();
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    let mut out = String::from("{");
    for (i, (key, addr)) in entries.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let zone = match addr {
            SocketAddr::V6(v6) if v6.scope_id() != 0 && canonical(addr.ip()).is_ipv6() => {
                v6.scope_id().to_string()
            }
            _ => String::new(),
        };
        // Base64 text, IP text and digits need no JSON escaping.
        let _ = write!(
            out,
            "\"{key}\":{{\"IP\":\"{}\",\"Port\":{},\"Zone\":\"{zone}\"}}",
            canonical(addr.ip()),
            addr.port()
        );
    }
    out.push('}');
    out
}

/// Discovered endpoints by public key.
pub(crate) type Map = BTreeMap<Key, SocketAddr>;

/// One `net.UDPAddr` as Go's decoder fills it (fields matched case-insensitively).
#[derive(Default)]
struct GoUdpAddr {
    ip: Option<IpAddr>,
    port: i64,
    zone: String,
}

/// Decodes the value as Go's `json.Unmarshal` into `map[string]*net.UDPAddr` would.
///
/// `Err` means Go's decoder fails and upstream ignores the whole annotation. `Ok` carries the map
/// (`None` for JSON `null`) and the entries that were left out because our model cannot hold them
/// (a key that is not a WireGuard key, a null address, a missing IP, a port out of range) or were
/// changed (a named IPv6 zone, which is dropped).
pub(crate) fn decode(text: &str) -> Result<(Option<Map>, Vec<String>), String> {
    let value: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    let object = match value {
        Value::Null => return Ok((None, Vec::new())),
        Value::Object(object) => object,
        _ => return Err("not a JSON object of public keys to UDP addresses".to_string()),
    };
    let mut parsed = Vec::with_capacity(object.len());
    for (key, entry) in object {
        let addr = match entry {
            Value::Null => None,
            Value::Object(fields) => Some(udp_addr(&key, fields)?),
            _ => {
                return Err(format!("entry {} is not a UDP address object", go::quote_short(&key)));
            }
        };
        parsed.push((key, addr));
    }
    let mut map = BTreeMap::new();
    let mut problems = Vec::new();
    for (key_text, addr) in parsed {
        let quoted = go::quote_short(&key_text);
        let key = match go::base64_decode(&key_text).map(<[u8; 32]>::try_from) {
            Ok(Ok(bytes)) => Key::from_bytes(bytes),
            _ => {
                problems.push(format!("key {quoted} is not a WireGuard public key"));
                continue;
            }
        };
        let Some(addr) = addr else {
            problems.push(format!("entry {quoted} is null"));
            continue;
        };
        let Some(ip) = addr.ip else {
            problems.push(format!("entry {quoted} has no IP"));
            continue;
        };
        let Ok(port) = u16::try_from(addr.port) else {
            problems.push(format!("entry {quoted} has port {} out of range", addr.port));
            continue;
        };
        let ip = canonical(ip);
        let socket = match ip {
            IpAddr::V6(v6) if !addr.zone.is_empty() => match addr.zone.parse::<u32>() {
                Ok(scope) => SocketAddr::V6(SocketAddrV6::new(v6, port, 0, scope)),
                Err(_) => {
                    problems.push(format!(
                        "entry {quoted} has zone {} which is not a numeric scope id; zone dropped",
                        go::quote_short(&addr.zone)
                    ));
                    SocketAddr::new(ip, port)
                }
            },
            _ => SocketAddr::new(ip, port),
        };
        map.insert(key, socket);
    }
    Ok((Some(map), problems))
}

fn udp_addr(key: &str, fields: serde_json::Map<String, Value>) -> Result<GoUdpAddr, String> {
    let mut addr = GoUdpAddr::default();
    let bad =
        |field: &str| format!("entry {}: field {field} has the wrong type", go::quote_short(key));
    for (name, value) in fields {
        if name.eq_ignore_ascii_case("ip") {
            match value {
                Value::Null => {}
                Value::String(s) if s.is_empty() => addr.ip = None,
                Value::String(s) => {
                    addr.ip = Some(s.parse().map_err(|_| {
                        format!(
                            "entry {}: {} is not an IP address",
                            go::quote_short(key),
                            go::quote_short(&s)
                        )
                    })?);
                }
                _ => return Err(bad("IP")),
            }
        } else if name.eq_ignore_ascii_case("port") {
            match value {
                Value::Null => {}
                Value::Number(n) => addr.port = n.as_i64().ok_or_else(|| bad("Port"))?,
                _ => return Err(bad("Port")),
            }
        } else if name.eq_ignore_ascii_case("zone") {
            match value {
                Value::Null => {}
                Value::String(s) => addr.zone = s,
                _ => return Err(bad("Zone")),
            }
        }
    }
    Ok(addr)
}
