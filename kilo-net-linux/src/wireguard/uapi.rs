//! The WireGuard cross-platform configuration protocol ("UAPI") spoken on
//! `<dir>/<iface>.sock` by userspace implementations (wireguard-go, boringtun, gotatun), and a
//! small async client for it. This is how `wg show` and `wg set` talk to a userspace device.
//!
//! Requests are built one peer at a time: [`set_peer_request`] (create or update one peer,
//! replacing its allowed IPs), [`remove_peer_request`] and [`set_interface_request`]. Nothing here
//! ever sends `replace_peers`, so other peers and their sessions are left alone.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use kilo_core::wireguard::PeerConfig;
use kilo_core::{Cidr, Key, PresharedKey, PrivateKey};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use super::error::WireGuardError;
use super::state::{DeviceState, RawDevice, RawPeer, handshake_at};

/// How long one request may take before the client gives up.
const TIMEOUT: Duration = Duration::from_secs(10);

/// How long the client waits, after the `errno=` line, for the blank line that ends a reply.
const END_GRACE: Duration = Duration::from_secs(1);

/// The UAPI socket of interface `name` in directory `dir`: `<dir>/<name>.sock`.
pub fn socket_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.sock"))
}

/// The `set=1` request that sets the private key and listen port (`wg set IFACE private-key F
/// listen-port P`).
pub fn set_interface_request(private_key: &PrivateKey, listen_port: u16) -> String {
    interface_request(Some(private_key), Some(listen_port))
}

/// The `set=1` request that sets the given interface fields only (an all-zero private key
/// removes the key).
pub fn interface_request(private_key: Option<&PrivateKey>, listen_port: Option<u16>) -> String {
    let mut s = String::from("set=1\n");
    if let Some(k) = private_key {
        s.push_str(&format!("private_key={}\n", hex::encode(k.expose_bytes())));
    }
    if let Some(p) = listen_port {
        s.push_str(&format!("listen_port={p}\n"));
    }
    s.push('\n');
    s
}

/// The `set=1` request that creates or updates ONE peer (`wg set IFACE peer K endpoint E
/// persistent-keepalive N allowed-ips A,B preshared-key F`), replacing its allowed IPs with the
/// masked networks of `peer.allowed_ips`. The pre-shared key is set, or cleared when `None`. A
/// missing endpoint leaves the device's (possibly roamed) endpoint as it is.
///
/// A DNS endpoint must have been resolved first ([`kilo_core::Endpoint::with_resolved`]).
pub fn set_peer_request(peer: &PeerConfig) -> Result<String, WireGuardError> {
    peer_request(peer, false)
}

/// Like [`set_peer_request`] with `update_only=true`: the device ignores it when it does not
/// have the peer (an update never re-creates a peer removed in the meantime).
pub fn update_peer_request(peer: &PeerConfig) -> Result<String, WireGuardError> {
    peer_request(peer, true)
}

fn peer_request(peer: &PeerConfig, update_only: bool) -> Result<String, WireGuardError> {
    let mut s = format!("set=1\npublic_key={}\n", hex::encode(peer.public_key.as_bytes()));
    if update_only {
        s.push_str("update_only=true\n");
    }
    s.push_str("replace_allowed_ips=true\n");
    let psk = peer.preshared_key.unwrap_or(PresharedKey::ZERO);
    s.push_str(&format!("preshared_key={}\n", hex::encode(psk.expose_bytes())));
    if let Some(addr) = endpoint_addr(peer)? {
        s.push_str(&format!("endpoint={addr}\n"));
    }
    s.push_str(&format!("persistent_keepalive_interval={}\n", peer.persistent_keepalive));
    for cidr in &peer.allowed_ips {
        s.push_str(&format!("allowed_ip={}\n", cidr.network()));
    }
    s.push('\n');
    Ok(s)
}

/// The resolved address of a peer's endpoint; an error for an unresolved DNS endpoint.
pub(crate) fn endpoint_addr(peer: &PeerConfig) -> Result<Option<SocketAddr>, WireGuardError> {
    match &peer.endpoint {
        None => Ok(None),
        Some(e) => match e.addr() {
            Some(a) => Ok(Some(a)),
            None => Err(WireGuardError::UnresolvedEndpoint {
                key: peer.public_key,
                endpoint: e.to_string(),
            }),
        },
    }
}

/// The `set=1` request that removes ONE peer (`wg set IFACE peer K remove`).
pub fn remove_peer_request(key: &Key) -> String {
    format!("set=1\npublic_key={}\nremove=true\n\n", hex::encode(key.as_bytes()))
}

/// One `set=1` request made of the peer sections of several requests of [`set_peer_request`],
/// [`update_peer_request`] and [`remove_peer_request`]: the protocol takes any number of peers in
/// one request and applies them in order.
pub fn join_requests(requests: &[String]) -> String {
    let mut joined = String::with_capacity(requests.iter().map(String::len).sum::<usize>() + 8);
    joined.push_str("set=1\n");
    for request in requests {
        let section = request.strip_prefix("set=1\n").unwrap_or(request);
        joined.push_str(section.strip_suffix('\n').unwrap_or(section));
    }
    joined.push('\n');
    joined
}

fn parse_err(line: &str, reason: impl Into<String>) -> WireGuardError {
    WireGuardError::UapiParse { line: line.to_string(), reason: reason.into() }
}

fn hex_key(line: &str, v: &str) -> Result<[u8; 32], WireGuardError> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(v, &mut out).map_err(|e| parse_err(line, e.to_string()))?;
    Ok(out)
}

fn number<T: std::str::FromStr>(line: &str, v: &str) -> Result<T, WireGuardError> {
    v.parse().map_err(|_| parse_err(line, "not a number"))
}

/// Parses the answer to `get=1` into a [`DeviceState`] named `name`. Returns the `errno` value as
/// well (0 on success). Unknown keys are ignored (implementations add their own).
pub fn parse_get_response(name: &str, text: &str) -> Result<(DeviceState, i64), WireGuardError> {
    let mut device = RawDevice::default();
    let mut errno = None;
    let mut handshake: Option<(u64, u32)> = None;
    fn finish(device: &mut RawDevice, handshake: &mut Option<(u64, u32)>) {
        if let (Some(peer), Some((sec, nsec))) = (device.peers.last_mut(), handshake.take()) {
            peer.last_handshake = Some(handshake_at(sec, nsec));
        }
    }
    for line in text.lines() {
        if line.is_empty() {
            continue;
        }
        let (k, v) = line.split_once('=').ok_or_else(|| parse_err(line, "missing '='"))?;
        if k == "public_key" {
            finish(&mut device, &mut handshake);
            let key = Key::from_bytes(hex_key(line, v)?);
            device.peers.push(RawPeer { public_key: key, ..Default::default() });
            continue;
        }
        if k == "errno" {
            errno = Some(number(line, v)?);
            continue;
        }
        match device.peers.last_mut() {
            None => match k {
                "private_key" => {
                    device.private_key = Some(PrivateKey::from_bytes(hex_key(line, v)?));
                }
                "listen_port" => device.listen_port = Some(number(line, v)?),
                "fwmark" => device.fwmark = Some(number(line, v)?),
                _ => {}
            },
            Some(peer) => match k {
                "preshared_key" => {
                    peer.preshared_key = Some(PresharedKey::from_bytes(hex_key(line, v)?));
                }
                "endpoint" => {
                    let addr: SocketAddr =
                        v.parse().map_err(|_| parse_err(line, "not an address:port"))?;
                    peer.endpoint = Some(addr);
                }
                "persistent_keepalive_interval" => {
                    peer.persistent_keepalive = Some(number(line, v)?);
                }
                "allowed_ip" => {
                    let cidr: Cidr = v.parse().map_err(|e| parse_err(line, format!("{e}")))?;
                    peer.allowed_ips.push(cidr);
                }
                "last_handshake_time_sec" => handshake.get_or_insert((0, 0)).0 = number(line, v)?,
                "last_handshake_time_nsec" => {
                    handshake.get_or_insert((0, 0)).1 = number(line, v)?;
                }
                "rx_bytes" => peer.rx_bytes = number(line, v)?,
                "tx_bytes" => peer.tx_bytes = number(line, v)?,
                _ => {}
            },
        }
    }
    finish(&mut device, &mut handshake);
    let errno = errno.ok_or_else(|| parse_err("", "response has no errno line"))?;
    Ok((device.into_state(name), errno))
}

/// An async client of one UAPI socket.
#[derive(Debug, Clone)]
pub struct UapiClient {
    path: PathBuf,
}

impl UapiClient {
    /// A client of the socket at `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        UapiClient { path: path.into() }
    }

    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether something answers on the socket.
    pub async fn is_alive(&self) -> bool {
        UnixStream::connect(&self.path).await.is_ok()
    }

    fn io(&self, action: &'static str, source: std::io::Error) -> WireGuardError {
        WireGuardError::UapiIo { path: self.path.clone(), action, source }
    }

    /// Sends one request and returns the response text up to and including its `errno=` line.
    ///
    /// The whole reply is read, up to the blank line that ends it, before the connection is
    /// closed: closing right after `errno=` makes the server's write of that blank line fail
    /// (gotatun logs every such `Broken pipe` as an error). A server that never sends the blank
    /// line costs at most [`END_GRACE`]; the answer is complete without it.
    async fn exchange(&self, request: &str) -> Result<String, WireGuardError> {
        let work = async {
            let mut stream =
                UnixStream::connect(&self.path).await.map_err(|e| self.io("connect", e))?;
            stream.write_all(request.as_bytes()).await.map_err(|e| self.io("write", e))?;
            let mut lines = BufReader::new(stream).lines();
            let mut response = String::new();
            while let Some(line) = lines.next_line().await.map_err(|e| self.io("read", e))? {
                response.push_str(&line);
                response.push('\n');
                if line.starts_with("errno=") {
                    // The terminating blank line (or the server closing): errors here do not
                    // change the answer.
                    let _ = tokio::time::timeout(END_GRACE, lines.next_line()).await;
                    return Ok(response);
                }
            }
            Err(self.io("read", std::io::ErrorKind::UnexpectedEof.into()))
        };
        tokio::time::timeout(TIMEOUT, work).await.unwrap_or_else(|_| {
            Err(self.io("wait for answer", std::io::ErrorKind::TimedOut.into()))
        })
    }

    /// `get=1`: reads the device (`wg show IFACE dump`).
    pub async fn get(&self, name: &str) -> Result<DeviceState, WireGuardError> {
        let text = self.exchange("get=1\n\n").await?;
        let (state, errno) = parse_get_response(name, &text)?;
        if errno != 0 {
            return Err(WireGuardError::UapiErrno {
                path: self.path.clone(),
                request: "get",
                errno,
            });
        }
        Ok(state)
    }

    /// `set=1`: applies one request built by this module's `*_request` functions.
    pub async fn set(&self, request: &str) -> Result<(), WireGuardError> {
        let text = self.exchange(request).await?;
        let (_, errno) = parse_get_response("", &text)?;
        if errno != 0 {
            return Err(super::error::uapi_set_error(&self.path, request, errno));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::SystemTime;

    fn key(b: u8) -> Key {
        Key::from_bytes([b; 32])
    }

    #[test]
    fn joined_requests_are_one_set_with_every_peer_section_in_order() {
        let one = PeerConfig {
            public_key: key(1),
            preshared_key: None,
            endpoint: Some("10.0.0.1:51820".parse().unwrap()),
            allowed_ips: vec!["10.4.0.1/32".parse().unwrap()],
            persistent_keepalive: 0,
        };
        let two = PeerConfig { public_key: key(2), endpoint: None, ..one.clone() };
        let joined = join_requests(&[
            remove_peer_request(&key(3)),
            set_peer_request(&one).unwrap(),
            update_peer_request(&two).unwrap(),
        ]);
        let zero = "0".repeat(64);
        assert_eq!(
            joined,
            format!(
                "set=1\n\
                 public_key={k3}\nremove=true\n\
                 public_key={k1}\nreplace_allowed_ips=true\npreshared_key={zero}\n\
                 endpoint=10.0.0.1:51820\npersistent_keepalive_interval=0\nallowed_ip=10.4.0.1/32\n\
                 public_key={k2}\nupdate_only=true\nreplace_allowed_ips=true\n\
                 preshared_key={zero}\npersistent_keepalive_interval=0\nallowed_ip=10.4.0.1/32\n\n",
                k1 = hex::encode(key(1).as_bytes()),
                k2 = hex::encode(key(2).as_bytes()),
                k3 = hex::encode(key(3).as_bytes()),
            )
        );
    }

    #[test]
    fn set_peer_request_replaces_allowed_ips_with_masked_networks_and_names_one_peer() {
        let peer = PeerConfig {
            public_key: key(1),
            preshared_key: None,
            endpoint: Some("10.0.0.1:51820".parse().unwrap()),
            allowed_ips: vec!["10.4.0.1/16".parse().unwrap(), "fd00::1/128".parse().unwrap()],
            persistent_keepalive: 25,
        };
        let text = set_peer_request(&peer).unwrap();
        let hex1 = "01".repeat(32);
        let zero = "00".repeat(32);
        assert_eq!(
            text,
            format!(
                "set=1\npublic_key={hex1}\nreplace_allowed_ips=true\npreshared_key={zero}\n\
                 endpoint=10.0.0.1:51820\npersistent_keepalive_interval=25\n\
                 allowed_ip=10.4.0.0/16\nallowed_ip=fd00::1/128\n\n"
            )
        );
        assert!(!text.contains("replace_peers"));
    }

    #[test]
    fn set_peer_request_refuses_an_unresolved_dns_endpoint() {
        let peer = PeerConfig {
            public_key: key(1),
            endpoint: Some("example.com:51820".parse().unwrap()),
            ..Default::default()
        };
        assert!(matches!(
            set_peer_request(&peer),
            Err(WireGuardError::UnresolvedEndpoint { endpoint, .. }) if endpoint == "example.com:51820"
        ));
        let resolved = PeerConfig {
            endpoint: peer
                .endpoint
                .as_ref()
                .map(|e| e.with_resolved("1.2.3.4:51820".parse().unwrap())),
            ..peer
        };
        assert!(set_peer_request(&resolved).unwrap().contains("endpoint=1.2.3.4:51820\n"));
    }

    #[test]
    fn update_peer_request_is_the_set_request_with_update_only() {
        let peer = PeerConfig { public_key: key(3), ..Default::default() };
        let set = set_peer_request(&peer).unwrap();
        let update = update_peer_request(&peer).unwrap();
        let hex3 = "03".repeat(32);
        assert_eq!(
            update,
            set.replace(
                &format!("public_key={hex3}\n"),
                &format!("public_key={hex3}\nupdate_only=true\n")
            )
        );
    }

    #[test]
    fn peer_without_endpoint_leaves_the_endpoint_alone() {
        let peer = PeerConfig { public_key: key(3), ..Default::default() };
        assert!(!set_peer_request(&peer).unwrap().contains("endpoint="));
    }

    #[test]
    fn remove_and_interface_requests_match_the_protocol() {
        assert_eq!(
            remove_peer_request(&key(2)),
            format!("set=1\npublic_key={}\nremove=true\n\n", "02".repeat(32))
        );
        let pk = PrivateKey::from_bytes([5; 32]);
        assert_eq!(
            set_interface_request(&pk, 51820),
            format!("set=1\nprivate_key={}\nlisten_port=51820\n\n", "05".repeat(32))
        );
    }

    #[test]
    fn get_response_of_wireguard_go_parses_into_device_state() {
        let pk = PrivateKey::from_bytes([5; 32]);
        let text = format!(
            "private_key={}\nlisten_port=51820\nfwmark=0\n\
             public_key={}\npreshared_key={}\nprotocol_version=1\nendpoint=[fd00::2]:51821\n\
             last_handshake_time_sec=1700000000\nlast_handshake_time_nsec=5\ntx_bytes=100\n\
             rx_bytes=200\npersistent_keepalive_interval=25\nallowed_ip=10.4.0.0/16\n\
             allowed_ip=10.2.1.0/24\n\
             public_key={}\npreshared_key={}\nlast_handshake_time_sec=0\n\
             last_handshake_time_nsec=0\ntx_bytes=0\nrx_bytes=0\n\
             persistent_keepalive_interval=0\nerrno=0\n\n",
            "05".repeat(32),
            "01".repeat(32),
            "09".repeat(32),
            "02".repeat(32),
            "00".repeat(32),
        );
        let (state, errno) = parse_get_response("kilo0", &text).unwrap();
        assert_eq!(errno, 0);
        assert_eq!(state.name, "kilo0");
        assert_eq!(state.private_key, Some(pk.clone()));
        assert_eq!(state.public_key, Some(pk.public_key()));
        assert_eq!(state.listen_port, Some(51820));
        assert_eq!(state.fwmark, None);
        assert_eq!(state.peers.len(), 2);
        let a = &state.peers[0];
        assert_eq!(a.config.public_key, key(1));
        assert_eq!(a.config.preshared_key, Some(PresharedKey::from_bytes([9; 32])));
        assert_eq!(a.config.endpoint.as_ref().unwrap().to_string(), "[fd00::2]:51821");
        assert_eq!(a.config.persistent_keepalive, 25);
        assert_eq!(a.config.allowed_ips.len(), 2);
        assert_eq!(a.rx_bytes, 200);
        assert_eq!(a.tx_bytes, 100);
        assert_eq!(
            a.last_handshake,
            Some(SystemTime::UNIX_EPOCH + Duration::new(1_700_000_000, 5))
        );
        let b = &state.peers[1];
        assert_eq!(b.config.preshared_key, None);
        assert!(!b.has_preshared_key());
        assert_eq!(b.last_handshake, None);
        assert_eq!(b.config.endpoint, None);
    }

    /// A server that answers every request as gotatun does (the `errno=` line, then the blank
    /// line in a second write) and reports whether each blank line reached the client.
    async fn serve_and_report(
        listener: tokio::net::UnixListener,
        requests: usize,
    ) -> Vec<std::io::Result<()>> {
        let mut results = Vec::new();
        for _ in 0..requests {
            let (stream, _) = listener.accept().await.unwrap();
            let (read, mut write) = stream.into_split();
            let mut lines = BufReader::new(read).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if line.is_empty() {
                    break;
                }
            }
            write.write_all(b"errno=0\n").await.unwrap();
            // The client has its answer now; give it time to hang up if it is going to.
            tokio::time::sleep(Duration::from_millis(20)).await;
            results.push(write.write_all(b"\n").await);
        }
        results
    }

    #[tokio::test]
    async fn the_client_reads_the_blank_line_that_ends_a_reply_before_closing() {
        let dir = tempfile::tempdir().unwrap();
        let path = socket_path(dir.path(), "wg0");
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        let server = tokio::spawn(serve_and_report(listener, 5));
        let client = UapiClient::new(&path);
        for _ in 0..5 {
            client.set(&remove_peer_request(&key(1))).await.unwrap();
        }
        let results = server.await.unwrap();
        let failed: Vec<String> =
            results.iter().filter_map(|r| r.as_ref().err()).map(|e| e.to_string()).collect();
        assert_eq!(failed, Vec::<String>::new());
    }

    #[tokio::test]
    async fn a_reply_without_the_blank_line_is_still_an_answer() {
        let dir = tempfile::tempdir().unwrap();
        let path = socket_path(dir.path(), "wg0");
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        let server = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            stream.write_all(b"listen_port=51820\nerrno=0\n").await.unwrap();
            // Held open without the blank line until the client gives up waiting for it.
            let mut rest = Vec::new();
            let _ = tokio::io::AsyncReadExt::read_to_end(&mut stream, &mut rest).await;
        });
        let state = UapiClient::new(&path).get("wg0").await.unwrap();
        assert_eq!(state.listen_port, Some(51820));
        server.await.unwrap();
    }

    #[test]
    fn get_response_errors_name_the_bad_line_and_never_panic() {
        for bad in [
            "private_key=zz\nerrno=0\n",
            "listen_port=abc\nerrno=0\n",
            "public_key=0101\nerrno=0\n",
            "garbage\nerrno=0\n",
        ] {
            let err = parse_get_response("x", bad).unwrap_err();
            assert!(matches!(err, WireGuardError::UapiParse { .. }), "{bad}: {err}");
        }
        assert!(parse_get_response("x", "listen_port=1\n").is_err());
        assert_eq!(parse_get_response("x", "errno=22\n\n").unwrap().1, 22);
    }
}
