//! Real-kernel tests of the WireGuard devices, inside network namespaces that each test creates
//! and deletes (even when it fails). They need root (CI runs as root); without it they skip,
//! saying so. No packet leaves the namespaces: the only links are a veth pair between two of them.
//!
//! Each userspace device runs in its namespace on a thread that entered it before creating the
//! TUN interface and the UDP sockets (`DeviceOptions::netns`), and serves its UAPI socket from its
//! own temporary directory, since `/run/wireguard` is shared by all namespaces.

mod root_support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use kilo_core::wireguard::{Config, InterfaceConfig, PeerConfig, diff};
use kilo_core::{Key, PrivateKey};
use kilo_net_linux::wireguard::uapi::UapiClient;
use kilo_net_linux::wireguard::{
    Device, DeviceOptions, PeerState, WireGuardChoice, WireGuardError, WireGuardKind, select,
};

fn run(cmd: &str, args: &[&str]) -> Result<Output> {
    Command::new(cmd).args(args).output().with_context(|| format!("cannot run {cmd}"))
}

fn sh(cmd: &str, args: &[&str]) -> Result<String> {
    let out = run(cmd, args)?;
    ensure!(
        out.status.success(),
        "{cmd} {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A network namespace deleted on drop.
struct Netns {
    name: String,
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

impl Netns {
    fn new(tag: &str) -> Result<Netns> {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("kwg-{tag}-{}-{n}", std::process::id());
        sh("ip", &["netns", "add", &name])?;
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    fn path(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.name)
    }

    fn ip(&self, args: &[&str]) -> Result<String> {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        sh("ip", &all)
    }

    fn exec(&self, args: &[&str]) -> Result<Output> {
        let mut all = vec!["netns", "exec", self.name.as_str()];
        all.extend_from_slice(args);
        run("ip", &all)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = run("ip", &["netns", "del", &self.name]);
    }
}

/// Two namespaces joined by a veth pair: `a` has 192.168.50.1/24, `b` 192.168.50.2/24.
fn pair(tag: &str) -> Result<(Netns, Netns)> {
    let a = Netns::new(&format!("{tag}a"))?;
    let b = Netns::new(&format!("{tag}b"))?;
    a.ip(&["link", "add", "veth0", "type", "veth", "peer", "name", "veth1", "netns", &b.name])?;
    a.ip(&["addr", "add", "192.168.50.1/24", "dev", "veth0"])?;
    b.ip(&["addr", "add", "192.168.50.2/24", "dev", "veth1"])?;
    a.ip(&["link", "set", "veth0", "up"])?;
    b.ip(&["link", "set", "veth1", "up"])?;
    Ok((a, b))
}

fn key_pair(seed: u8) -> (PrivateKey, Key) {
    let private = PrivateKey::from_random_bytes([seed; 32]);
    let public = private.public_key();
    (private, public)
}

fn peer(key: Key, endpoint: Option<&str>, allowed: &[&str]) -> PeerConfig {
    PeerConfig {
        public_key: key,
        preshared_key: None,
        endpoint: endpoint.map(|e| e.parse().unwrap()),
        allowed_ips: allowed.iter().map(|a| a.parse().unwrap()).collect(),
        persistent_keepalive: 0,
    }
}

fn options(ns: &Netns, dir: &tempfile::TempDir) -> DeviceOptions {
    let mut options = DeviceOptions::default();
    options.uapi_dir = dir.path().to_path_buf();
    options.netns = Some(ns.path());
    options
}

/// Brings up `wg0` in `ns` with `addr` (the link manager's job, done here with `ip`).
fn address(ns: &Netns, addr: &str) -> Result<()> {
    ns.ip(&["addr", "add", addr, "dev", "wg0"])?;
    ns.ip(&["link", "set", "wg0", "up"])?;
    Ok(())
}

fn ping(ns: &Netns, ip: &str) -> Result<()> {
    let mut last = String::new();
    for _ in 0..3 {
        let out = ns.exec(&["ping", "-c1", "-W2", ip])?;
        if out.status.success() {
            return Ok(());
        }
        last = String::from_utf8_lossy(&out.stdout).into_owned();
    }
    bail!("ping {ip} from {} failed: {last}", ns.name)
}

/// `wg ARGS` against the sockets in `dir`: `wg` only looks in /run/wireguard, so it runs in a
/// private mount namespace where `dir` is mounted there.
fn wg(dir: &Path, args: &str) -> Result<String> {
    std::fs::create_dir_all("/run/wireguard")?;
    let script = format!("mount --bind '{}' /run/wireguard && wg {args}", dir.display());
    sh("unshare", &["-m", "sh", "-c", &script])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_userspace_devices_in_namespaces_handshake_and_carry_pings() -> Result<()> {
    if root_support::skip_unless_root() {
        return Ok(());
    }
    let (nsa, nsb) = pair("ping")?;
    let (dira, dirb) = (tempfile::tempdir()?, tempfile::tempdir()?);
    let (ka, pa) = key_pair(1);
    let (kb, pb) = key_pair(2);
    let a = Device::open_or_create(WireGuardKind::Userspace, "wg0", 1420, &options(&nsa, &dira))
        .await?;
    let b = Device::open_or_create(WireGuardKind::Userspace, "wg0", 1420, &options(&nsb, &dirb))
        .await?;
    assert_eq!(a.kind(), WireGuardKind::Userspace);
    // The TUN interface exists in the namespace, with the MTU asked for, and not on the host.
    let link = nsa.ip(&["link", "show", "wg0"])?;
    assert!(link.contains("mtu 1420"), "{link}");
    assert!(dira.path().join("wg0.sock").exists());

    a.set_interface(&ka, 51820).await?;
    b.set_interface(&kb, 51820).await?;
    a.set_peer(&peer(pb, Some("192.168.50.2:51820"), &["10.9.0.2/32", "fd00:9::2/128"])).await?;
    b.set_peer(&peer(pa, Some("192.168.50.1:51820"), &["10.9.0.1/32", "fd00:9::1/128"])).await?;
    address(&nsa, "10.9.0.1/24")?;
    address(&nsb, "10.9.0.2/24")?;
    nsa.ip(&["addr", "add", "fd00:9::1/64", "dev", "wg0", "nodad"])?;
    nsb.ip(&["addr", "add", "fd00:9::2/64", "dev", "wg0", "nodad"])?;

    ping(&nsa, "10.9.0.2")?;
    ping(&nsb, "10.9.0.1")?;
    ping(&nsa, "fd00:9::2")?;

    let state = a.read().await?;
    assert_eq!(state.public_key, Some(pa));
    assert_eq!(state.listen_port, Some(51820));
    let to_b = state.peer(&pb).context("peer b on device a")?;
    assert!(to_b.last_handshake.is_some(), "{to_b:?}");
    assert!(to_b.rx_bytes > 0 && to_b.tx_bytes > 0, "{to_b:?}");
    assert_eq!(
        to_b.config.allowed_ips,
        vec!["10.9.0.2/32".parse().unwrap(), "fd00:9::2/128".parse().unwrap()]
    );
    assert_eq!(
        to_b.config.endpoint.as_ref().map(|e| e.to_string()).as_deref(),
        Some("192.168.50.2:51820")
    );
    let config = state.to_config();
    assert_eq!(config.interface.and_then(|i| i.private_key), Some(ka));
    assert_eq!(config.peers.len(), 1);

    // The agent reads its in-process device through the device's own request channel; that
    // reading says what the socket (`wg show`) says, for every field.
    let (_, pc) = key_pair(3);
    let mut c = peer(pc, None, &["10.9.3.0/24", "fd00:9:3::/64"]);
    c.preshared_key = Some(kilo_core::PresharedKey::from_bytes([7; 32]));
    c.persistent_keepalive = 25;
    a.set_peer(&c).await?;
    let typed = a.read().await?;
    let socket = UapiClient::new(dira.path().join("wg0.sock")).get("wg0").await?;
    assert_eq!(typed.to_config().normalized(), socket.to_config().normalized());
    assert_eq!(
        (&typed.name, typed.private_key, typed.public_key, typed.listen_port, typed.fwmark),
        (&socket.name, socket.private_key, socket.public_key, socket.listen_port, socket.fwmark)
    );
    assert_eq!(typed.peers.len(), 2);
    for (t, s) in typed.peers.iter().zip(&socket.peers) {
        assert_eq!(t.config, s.config);
        assert_eq!((t.rx_bytes, t.tx_bytes), (s.rx_bytes, s.tx_bytes));
        if t.config.public_key == pb {
            assert_same_handshake(t, s);
        } else {
            assert_eq!((t.last_handshake, s.last_handshake), (None, None));
        }
    }
    a.remove_peer(&pc).await?;

    // `wg` sees the device through the same socket.
    let shown = wg(dira.path(), "show wg0")?;
    assert!(shown.contains(&format!("peer: {pb}")), "{shown}");
    assert!(shown.contains("latest handshake"), "{shown}");
    assert!(shown.contains("allowed ips: 10.9.0.2/32"), "{shown}");

    a.delete().await?;
    b.delete().await?;
    // The TUN interface and the socket are gone with the device.
    assert!(nsa.ip(&["link", "show", "wg0"]).is_err());
    assert!(!dira.path().join("wg0.sock").exists());
    Ok(())
}

/// The two readings show the same handshake (within the device's reporting jitter).
fn assert_same_handshake(now: &PeerState, before: &PeerState) {
    let (Some(a), Some(b)) = (now.last_handshake, before.last_handshake) else {
        panic!("no handshake: {now:?} / {before:?}");
    };
    let gap = a.duration_since(b).or_else(|e| Ok::<_, ()>(e.duration())).unwrap_or_default();
    assert!(
        gap < Duration::from_millis(200),
        "peer's session was reset: handshake moved by {gap:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changing_one_peer_leaves_the_other_peers_session_alone() -> Result<()> {
    if root_support::skip_unless_root() {
        return Ok(());
    }
    let (nsa, nsb) = pair("peer")?;
    let (dira, dirb) = (tempfile::tempdir()?, tempfile::tempdir()?);
    let (ka, pa) = key_pair(3);
    let (kb, pb) = key_pair(4);
    let (_, pc) = key_pair(5);
    let a = Device::open_or_create(WireGuardKind::Userspace, "wg0", 1420, &options(&nsa, &dira))
        .await?;
    let b = Device::open_or_create(WireGuardKind::Userspace, "wg0", 1420, &options(&nsb, &dirb))
        .await?;
    a.set_interface(&ka, 51820).await?;
    b.set_interface(&kb, 51820).await?;
    a.set_peer(&peer(pb, Some("192.168.50.2:51820"), &["10.9.0.2/32"])).await?;
    a.set_peer(&peer(pc, None, &["10.9.0.3/32"])).await?;
    b.set_peer(&peer(pa, Some("192.168.50.1:51820"), &["10.9.0.1/32"])).await?;
    address(&nsa, "10.9.0.1/24")?;
    address(&nsb, "10.9.0.2/24")?;
    ping(&nsa, "10.9.0.2")?;
    let before = a.read().await?;
    let session = before.peer(&pb).context("peer b")?.clone();
    assert!(session.last_handshake.is_some());
    // gotatun reports the handshake time as "now minus age", which jitters by microseconds; a new
    // handshake after this pause would be more than a second later.
    tokio::time::sleep(Duration::from_millis(1500)).await;

    // Change peer c's allowed IPs (host bits are masked away, a network given twice is listed
    // once, IPv4 comes first, then by address), then remove it.
    let given = ["fd09::7/64", "10.9.1.7/24", "10.9.0.3/32", "10.9.1.0/24", "10.8.0.0/16"];
    a.set_peer(&peer(pc, None, &given)).await?;
    let after = a.read().await?;
    let c = after.peer(&pc).context("peer c")?;
    let listed: Vec<kilo_core::Cidr> = ["10.8.0.0/16", "10.9.0.3/32", "10.9.1.0/24", "fd09::/64"]
        .map(|n| n.parse().unwrap())
        .into();
    assert_eq!(c.config.allowed_ips, listed);
    // The UAPI socket (`wg show`) lists the same.
    let Device::Userspace(device) = &a else { bail!("not a userspace device") };
    let socket = device.read_socket().await?;
    assert_eq!(socket.peer(&pc).context("peer c over the socket")?.config.allowed_ips, listed);
    ping(&nsa, "10.9.0.2")?;
    let b_after = a.read().await?.peer(&pb).context("peer b")?.clone();
    assert_same_handshake(&b_after, &session);
    assert_eq!(b_after.config, session.config);
    assert!(b_after.rx_bytes > session.rx_bytes && b_after.tx_bytes > session.tx_bytes);

    // `wg set` through the socket is seen by read(), and removing one peer keeps the other.
    wg(dira.path(), &format!("set wg0 peer {pc} allowed-ips 10.9.2.0/24"))?;
    let c = a.read().await?.peer(&pc).context("peer c")?.config.allowed_ips.clone();
    assert_eq!(c, vec!["10.9.2.0/24".parse().unwrap()]);
    a.remove_peer(&pc).await?;
    // An update of a peer the device no longer has does not bring it back.
    a.update_peer(&peer(pc, None, &["10.9.3.0/24"])).await?;
    let last = a.read().await?;
    assert_eq!(last.peers.len(), 1);
    assert_same_handshake(last.peer(&pb).context("peer b")?, &session);
    ping(&nsa, "10.9.0.2")?;

    a.delete().await?;
    b.delete().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opening_a_served_socket_attaches_instead_of_starting_a_second_device() -> Result<()> {
    if root_support::skip_unless_root() {
        return Ok(());
    }
    let ns = Netns::new("attach")?;
    let dir = tempfile::tempdir()?;
    let (k, _) = key_pair(6);
    let owner =
        Device::open_or_create(WireGuardKind::Userspace, "wg0", 1420, &options(&ns, &dir)).await?;
    let Device::Userspace(inner) = &owner else { bail!("not userspace") };
    assert!(inner.is_in_process());
    let attached = Device::open(WireGuardKind::Userspace, "wg0", &options(&ns, &dir)).await?;
    let reopened =
        Device::open_or_create(WireGuardKind::Userspace, "wg0", 1420, &options(&ns, &dir)).await?;
    let Device::Userspace(inner) = &reopened else { bail!("not userspace") };
    assert!(!inner.is_in_process());
    let Device::Userspace(inner) = &attached else { bail!("not userspace") };
    assert!(!inner.is_in_process());
    // A peer before a private key is refused, not a crash of the device.
    let (_, p) = key_pair(7);
    let err = attached.set_peer(&peer(p, None, &[])).await.unwrap_err();
    assert!(matches!(err, WireGuardError::NoPrivateKey { .. }), "{err}");
    attached.set_interface(&k, 51999).await?;
    attached.set_peer(&peer(p, None, &["10.1.0.0/16"])).await?;
    assert_eq!(owner.read().await?.listen_port, Some(51999));
    assert_eq!(owner.read().await?.peers.len(), 1);
    assert!(attached.delete().await.is_err(), "an attached device cannot delete its owner");
    owner.delete().await?;
    assert!(ns.ip(&["link", "show", "wg0"]).is_err());
    // Opening without creating fails once nothing serves the socket, naming it.
    let err = Device::open(WireGuardKind::Userspace, "wg0", &options(&ns, &dir)).await.unwrap_err();
    assert!(err.to_string().contains("wg0.sock"), "{err}");
    let err = Device::open(WireGuardKind::Kernel, "wg0", &options(&ns, &dir)).await.unwrap_err();
    assert!(matches!(&err, WireGuardError::Kernel { name, .. } if name == "wg0"), "{err}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_selects_the_kernel_exactly_when_it_can_create_a_wireguard_link() -> Result<()> {
    if root_support::skip_unless_root() {
        return Ok(());
    }
    let ns = Netns::new("auto")?;
    let kernel_has_wireguard = ns.ip(&["link", "add", "probe0", "type", "wireguard"]).is_ok();
    let mut opts = DeviceOptions::default();
    opts.uapi_dir = tempfile::tempdir()?.path().into();
    opts.netns = Some(ns.path());
    let kind = select(WireGuardChoice::Auto, &opts).await;
    let expected =
        if kernel_has_wireguard { WireGuardKind::Kernel } else { WireGuardKind::Userspace };
    assert_eq!(kind, expected);
    // The probe leaves no link behind.
    let links = ns.ip(&["link", "show"])?;
    assert!(!links.contains("kgprobe"), "{links}");

    // The kernel device works where the kernel can, and otherwise fails naming the interface.
    match Device::open_or_create(WireGuardKind::Kernel, "wgk0", 1380, &opts).await {
        Ok(dev) => {
            ensure!(kernel_has_wireguard, "kernel device created without kernel WireGuard");
            let (k, pk) = key_pair(8);
            let (_, p) = key_pair(9);
            dev.set_interface(&k, 51820).await?;
            dev.set_peer(&peer(p, Some("192.168.1.1:51820"), &["10.5.0.0/16"])).await?;
            let state = dev.read().await?;
            assert_eq!(state.public_key, Some(pk));
            assert_eq!(state.peers.len(), 1);
            dev.remove_peer(&p).await?;
            assert!(dev.read().await?.peers.is_empty());
            dev.delete().await?;
            assert!(ns.ip(&["link", "show", "wgk0"]).is_err());
        }
        Err(e) => {
            ensure!(!kernel_has_wireguard, "kernel device failed: {e}");
            assert!(matches!(&e, WireGuardError::Kernel { name, .. } if name == "wgk0"), "{e}");
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn applying_a_diff_configures_the_device_and_a_resync_without_changes_touches_nothing()
-> Result<()> {
    if root_support::skip_unless_root() {
        return Ok(());
    }
    let (nsa, nsb) = pair("diff")?;
    let (dira, dirb) = (tempfile::tempdir()?, tempfile::tempdir()?);
    let (ka, pa) = key_pair(10);
    let (kb, pb) = key_pair(11);
    let (_, pc) = key_pair(12);
    let desired = |k: &PrivateKey, peers: Vec<PeerConfig>| Config {
        interface: Some(InterfaceConfig { private_key: Some(k.clone()), listen_port: Some(51820) }),
        peers,
    };
    let want_a = desired(
        &ka,
        vec![
            peer(pb, Some("192.168.50.2:51820"), &["10.9.0.2/32"]),
            peer(pc, None, &["10.9.0.3/32"]),
        ],
    );
    let want_b = desired(&kb, vec![peer(pa, Some("192.168.50.1:51820"), &["10.9.0.1/32"])]);
    let a = Device::open_or_create(WireGuardKind::Userspace, "wg0", 1420, &options(&nsa, &dira))
        .await?;
    let b = Device::open_or_create(WireGuardKind::Userspace, "wg0", 1420, &options(&nsb, &dirb))
        .await?;
    assert_eq!(a.apply(&diff(&a.read().await?.to_config(), &want_a)).await?, 3);
    assert_eq!(b.apply(&diff(&b.read().await?.to_config(), &want_b)).await?, 2);
    address(&nsa, "10.9.0.1/24")?;
    address(&nsb, "10.9.0.2/24")?;
    ping(&nsa, "10.9.0.2")?;
    let before = a.read().await?;
    tokio::time::sleep(Duration::from_millis(1500)).await;

    // A resync with the same desired state finds nothing to change and sends nothing.
    let again = diff(&a.read().await?.to_config(), &want_a);
    assert!(again.is_empty(), "{again}");
    assert_eq!(a.apply(&again).await?, 0);
    let still = a.read().await?;
    assert_same_handshake(still.peer(&pb).context("peer b")?, before.peer(&pb).context("peer b")?);

    // Dropping peer c and widening peer b's allowed IPs: b is updated, its endpoint is kept.
    let mut next = want_a.clone();
    next.peers.truncate(1);
    next.peers[0].allowed_ips.push("10.9.5.0/24".parse()?);
    let changes = diff(&a.read().await?.to_config(), &next);
    assert_eq!(a.apply(&changes).await?, 2);
    let after = a.read().await?;
    assert_eq!(after.peers.len(), 1);
    let b_now = after.peer(&pb).context("peer b")?;
    assert_eq!(b_now.config.allowed_ips.len(), 2);
    assert_eq!(
        b_now.config.endpoint.as_ref().map(ToString::to_string).as_deref(),
        Some("192.168.50.2:51820")
    );
    assert!(diff(&after.to_config(), &next).is_empty());
    ping(&nsa, "10.9.0.2")?;

    a.delete().await?;
    b.delete().await?;
    Ok(())
}

/// A 600-peer diff goes to the device in a few calls of up to 256 peers; one peer that cannot be
/// sent (a DNS endpoint nobody resolved) fails its call, whose other peers are then made one by
/// one: the device ends with every peer but that one, exactly as desired.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_peers_are_set_in_batches_and_one_bad_peer_fails_alone() -> Result<()> {
    if root_support::skip_unless_root() {
        return Ok(());
    }
    let ns = Netns::new("batch")?;
    let dir = tempfile::tempdir()?;
    let (key, _) = key_pair(40);
    let peers: Vec<PeerConfig> = (0..600u32)
        .map(|i| {
            let (_, public) = key_pair(0);
            let mut bytes = *public.as_bytes();
            bytes[..4].copy_from_slice(&i.to_be_bytes());
            let endpoint = format!("192.168.{}.{}:51820", 60 + i / 250, 1 + i % 250);
            let allowed = format!("10.{}.{}.0/24", 20 + i / 256, i % 256);
            peer(Key::from_bytes(bytes), Some(&endpoint), &[&allowed])
        })
        .collect();
    let mut desired = Config {
        interface: Some(InterfaceConfig { private_key: Some(key), listen_port: Some(51820) }),
        peers,
    };
    let device =
        Device::open_or_create(WireGuardKind::Userspace, "wg0", 1420, &options(&ns, &dir)).await?;
    let bad = 300;
    desired.peers[bad].endpoint = Some("nowhere.invalid:51820".parse()?);
    let result = device.apply(&diff(&device.read().await?.to_config(), &desired)).await;
    let Err(WireGuardError::Apply { failed, total, .. }) = result else {
        panic!("one peer cannot be sent: {result:?}");
    };
    assert_eq!((failed, total), (1, 601));
    let mut applied = desired.clone();
    let left_out = applied.peers.remove(bad).public_key;
    let now = device.read().await?.to_config();
    assert!(now.peers.iter().all(|p| p.public_key != left_out));
    assert!(diff(&now, &applied).is_empty(), "{}", diff(&now, &applied));

    // Nothing to change: nothing sent. Then every peer gets a second allowed IP: 599 updates.
    let unchanged = diff(&device.read().await?.to_config(), &applied);
    assert_eq!(device.apply(&unchanged).await?, 0);
    for p in &mut applied.peers {
        let more = p.allowed_ips[0].to_string().replacen("10.", "10.1", 1);
        p.allowed_ips.push(more.parse()?);
    }
    let widen = diff(&device.read().await?.to_config(), &applied);
    assert_eq!(device.apply(&widen).await?, 599);
    assert!(diff(&device.read().await?.to_config(), &applied).is_empty());
    device.delete().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_behind_nat_dials_in_with_keepalive_and_is_reached_at_its_roamed_endpoint()
-> Result<()> {
    if root_support::skip_unless_root() {
        return Ok(());
    }
    let (nsa, nsb) = pair("nat")?;
    let (dira, dirb) = (tempfile::tempdir()?, tempfile::tempdir()?);
    let (ka, pa) = key_pair(13);
    let (kb, pb) = key_pair(14);
    let psk = kilo_core::PresharedKey::from_bytes([42; 32]);
    let a = Device::open_or_create(WireGuardKind::Userspace, "wg0", 1420, &options(&nsa, &dira))
        .await?;
    let b = Device::open_or_create(WireGuardKind::Userspace, "wg0", 1420, &options(&nsb, &dirb))
        .await?;
    // a does not know where b is; b keeps the path open with a 1 s keepalive.
    let want_a = Config {
        interface: Some(InterfaceConfig { private_key: Some(ka), listen_port: Some(51820) }),
        peers: vec![PeerConfig { preshared_key: Some(psk), ..peer(pb, None, &["10.9.0.2/32"]) }],
    };
    a.apply(&diff(&a.read().await?.to_config(), &want_a)).await?;
    b.set_interface(&kb, 51821).await?;
    b.set_peer(&PeerConfig {
        preshared_key: Some(psk),
        persistent_keepalive: 1,
        ..peer(pa, Some("192.168.50.1:51820"), &["10.9.0.1/32"])
    })
    .await?;
    address(&nsa, "10.9.0.1/24")?;
    address(&nsb, "10.9.0.2/24")?;

    let mut seen = None;
    for _ in 0..50 {
        let state = a.read().await?;
        let p = state.peer(&pb).context("peer b")?;
        if p.last_handshake.is_some() && p.config.endpoint.is_some() {
            seen = Some(p.clone());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let seen = seen.context("b never dialled in with its keepalive")?;
    assert_eq!(
        seen.config.endpoint.as_ref().map(ToString::to_string).as_deref(),
        Some("192.168.50.2:51821")
    );
    assert!(seen.has_preshared_key());
    // a reaches b at the address b dialled in from.
    ping(&nsa, "10.9.0.2")?;
    // The roamed endpoint is not a difference from the desired "no endpoint".
    let resync = diff(&a.read().await?.to_config(), &want_a);
    assert!(resync.is_empty(), "{resync}");
    let b_state = b.read().await?;
    assert_eq!(b_state.peer(&pa).context("peer a")?.config.persistent_keepalive, 1);

    a.delete().await?;
    b.delete().await?;
    Ok(())
}

/// The bytes a transfer sends: a fixed pseudo-random stream (xorshift), so the receiver checks
/// every byte without keeping a copy.
struct Stream(u64);

impl Stream {
    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            chunk.copy_from_slice(&self.0.to_le_bytes()[..chunk.len()]);
        }
    }
}

/// Sends `len` bytes of [`Stream`] over TCP from namespace `from` to `to_ip:port` in namespace
/// `to`, through whatever routes them there; the receiver checks every byte and the length.
fn tcp_transfer(from: &Netns, to: &Netns, to_ip: &str, port: u16, len: usize) -> Result<()> {
    use kilo_net_linux::wireguard::netns;
    use std::io::{Read, Write};
    let seed = 0x9e37_79b9_7f4a_7c15 ^ len as u64;
    let (to_path, from_path) = (to.path(), from.path());
    let addr: std::net::SocketAddr = format!("{to_ip}:{port}").parse()?;
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let server = std::thread::spawn(move || -> Result<usize> {
        netns::enter(&to_path)?;
        let listener = std::net::TcpListener::bind(addr)?;
        ready_tx.send(())?;
        // Accept with a deadline: a sender that never connects must fail the test, not hang it.
        listener.set_nonblocking(true)?;
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let mut conn = loop {
            match listener.accept() {
                Ok((conn, _)) => break conn,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    ensure!(std::time::Instant::now() < deadline, "nobody connected");
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => return Err(e.into()),
            }
        };
        conn.set_nonblocking(false)?;
        conn.set_read_timeout(Some(Duration::from_secs(20)))?;
        let (mut expected, mut got) = (Stream(seed), 0usize);
        let mut buf = vec![0u8; 1 << 16];
        // Generated but not yet compared bytes of the expected stream.
        let mut ahead: Vec<u8> = Vec::new();
        loop {
            let n = conn.read(&mut buf)?;
            if n == 0 {
                return Ok(got);
            }
            while ahead.len() < n {
                let mut more = vec![0u8; 1 << 16];
                expected.fill(&mut more);
                ahead.extend_from_slice(&more);
            }
            ensure!(buf[..n] == ahead[..n], "from byte {got} on the data differ");
            ahead.drain(..n);
            got += n;
        }
    });
    ready_rx.recv_timeout(Duration::from_secs(10)).context("the receiver did not listen")?;
    let client = std::thread::spawn(move || -> Result<()> {
        netns::enter(&from_path)?;
        let mut conn = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(10))?;
        conn.set_write_timeout(Some(Duration::from_secs(20)))?;
        let mut stream = Stream(seed);
        let mut buf = vec![0u8; 1 << 16];
        let mut sent = 0;
        while sent < len {
            // The stream in 64 KiB blocks, as the receiver generates it.
            stream.fill(&mut buf);
            let n = (len - sent).min(buf.len());
            conn.write_all(&buf[..n])?;
            sent += n;
        }
        Ok(())
    });
    client.join().map_err(|_| anyhow::anyhow!("the sender panicked"))??;
    let got = server.join().map_err(|_| anyhow::anyhow!("the receiver panicked"))??;
    ensure!(got == len, "received {got} bytes of {len}");
    Ok(())
}

/// Two in-process devices, `a` and `b`, each with offloads as given, peered and addressed
/// (10.9.0.1 and 10.9.0.2, fd00:9::1 and fd00:9::2).
async fn offload_pair(
    tag: &str,
    offloads: (bool, bool),
) -> Result<(Netns, Netns, tempfile::TempDir, tempfile::TempDir, Device, Device)> {
    let (nsa, nsb) = pair(tag)?;
    let (dira, dirb) = (tempfile::tempdir()?, tempfile::tempdir()?);
    let (ka, pa) = key_pair(1);
    let (kb, pb) = key_pair(2);
    let (mut oa, mut ob) = (options(&nsa, &dira), options(&nsb, &dirb));
    (oa.offloads, ob.offloads) = offloads;
    let a = Device::open_or_create(WireGuardKind::Userspace, "wg0", 1420, &oa).await?;
    let b = Device::open_or_create(WireGuardKind::Userspace, "wg0", 1420, &ob).await?;
    a.set_interface(&ka, 51820).await?;
    b.set_interface(&kb, 51820).await?;
    a.set_peer(&peer(pb, Some("192.168.50.2:51820"), &["10.9.0.2/32", "fd00:9::2/128"])).await?;
    b.set_peer(&peer(pa, Some("192.168.50.1:51820"), &["10.9.0.1/32", "fd00:9::1/128"])).await?;
    address(&nsa, "10.9.0.1/24")?;
    address(&nsb, "10.9.0.2/24")?;
    nsa.ip(&["addr", "add", "fd00:9::1/64", "dev", "wg0", "nodad"])?;
    nsb.ip(&["addr", "add", "fd00:9::2/64", "dev", "wg0", "nodad"])?;
    Ok((nsa, nsb, dira, dirb, a, b))
}

fn tun_counters(device: &Device) -> kilo_net_linux::wireguard::offload::TunCounters {
    match device {
        Device::Userspace(d) => d.tun_counters().expect("an in-process device"),
        _ => panic!("not a userspace device"),
    }
}

/// The counters once they stop moving (the same twice 100 ms apart, at most 3 s): a sample taken
/// while the writer is between counting a packet and writing it would be off by that packet.
async fn settled_counters(device: &Device) -> kilo_net_linux::wireguard::offload::TunCounters {
    let mut last = tun_counters(device);
    for _ in 0..30 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = tun_counters(device);
        if now == last {
            break;
        }
        last = now;
    }
    last
}

/// Large TCP transfers (both directions, IPv4 and IPv6) arrive byte for byte whether the TUN
/// interfaces have segmentation offloads or not, and whether the two ends agree on them. With
/// offloads the sender's reads carry super-packets (more packets than reads) and the receiver's
/// writes merge segments (fewer bytes written than the packets had: their headers); without,
/// one packet per read and per write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_tcp_transfers_arrive_intact_with_offloads_on_off_and_mixed() -> Result<()> {
    if root_support::skip_unless_root() {
        return Ok(());
    }
    const LEN: usize = 24 << 20;
    for (i, offloads) in [(true, true), (false, false), (true, false)].into_iter().enumerate() {
        let (nsa, nsb, _da, _db, a, b) = offload_pair(&format!("tso{i}"), offloads).await?;
        ping(&nsb, "10.9.0.1")?;
        let before = (settled_counters(&a).await, settled_counters(&b).await);
        tcp_transfer(&nsb, &nsa, "10.9.0.1", 5201, LEN).with_context(|| format!("{offloads:?}"))?;
        tcp_transfer(&nsa, &nsb, "10.9.0.2", 5202, LEN).with_context(|| format!("{offloads:?}"))?;
        tcp_transfer(&nsb, &nsa, "[fd00:9::1]", 5203, LEN)
            .with_context(|| format!("{offloads:?} over IPv6"))?;
        let (ca, cb) = (settled_counters(&a).await, settled_counters(&b).await);
        for (name, on, now, then) in
            [("a", offloads.0, ca, before.0), ("b", offloads.1, cb, before.1)]
        {
            let (reads, packets) = (now.reads - then.reads, now.packets_in - then.packets_in);
            assert_eq!(now.rejected, 0, "{name} {offloads:?}: {now:?}");
            assert!(now.packets_out > then.packets_out, "{name} {offloads:?}: {now:?}");
            let written = now.bytes_written - then.bytes_written;
            let packet_bytes = now.packet_bytes_out - then.packet_bytes_out;
            if on {
                // 24 MiB sent by each side: thousands of segments, far fewer reads; and
                // received segments merged before they were written (their headers saved).
                assert!(
                    packets > 2 * reads,
                    "{name} {offloads:?}: {reads} reads, {packets} packets"
                );
                assert!(
                    written < packet_bytes * 99 / 100,
                    "{name} {offloads:?}: {written} bytes written for {packet_bytes} of packets"
                );
            } else {
                assert_eq!(packets, reads, "{name} {offloads:?}: one packet per read");
                assert_eq!(written, packet_bytes, "{name} {offloads:?}: written one by one");
            }
        }
        a.delete().await?;
        b.delete().await?;
    }
    Ok(())
}

/// Where the kernel refuses a UDP segmentation offload send, the device falls back to one
/// datagram per message and a large transfer still arrives intact. Here the underlay's MTU
/// (1400) is below the tunnel's datagrams (1452 bytes for MTU 1420): the kernel refuses segments
/// larger than the path (EMSGSIZE) but fragments single datagrams.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_segmentation_falls_back_when_the_kernel_refuses_it() -> Result<()> {
    if root_support::skip_unless_root() {
        return Ok(());
    }
    let (nsa, nsb, _da, _db, a, b) = offload_pair("nogso", (true, true)).await?;
    nsa.ip(&["link", "set", "veth0", "mtu", "1400"])?;
    nsb.ip(&["link", "set", "veth1", "mtu", "1400"])?;
    ping(&nsb, "10.9.0.1")?;
    tcp_transfer(&nsb, &nsa, "10.9.0.1", 5201, 16 << 20)?;
    let counters = tun_counters(&b);
    assert!(counters.packets_in > counters.reads, "{counters:?}");
    a.delete().await?;
    b.delete().await?;
    Ok(())
}

/// A userspace WireGuard of another implementation in `ns`, serving its socket in `dir` (a
/// private mount namespace puts `/run/wireguard` there), killed on drop.
struct Daemon(std::process::Child);

impl Daemon {
    /// Starts `kind` (`wireguard-go` or `boringtun-cli`, from PATH; scripts/setup.sh installs
    /// both) with interface `wg0` and waits for its socket.
    async fn start(kind: &str, ns: &Netns, dir: &Path) -> Result<Daemon> {
        let command = match kind {
            "wireguard-go" => "exec wireguard-go -f wg0".to_string(),
            _ => format!("exec {kind} -f --disable-drop-privileges wg0"),
        };
        std::fs::create_dir_all("/run/wireguard")?;
        let script = format!("mount --bind '{}' /run/wireguard && {command}", dir.display());
        let child = Command::new("ip")
            .args(["netns", "exec", &ns.name, "unshare", "-m", "sh", "-c", &script])
            .env("WG_PROCESS_FOREGROUND", "1")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .with_context(|| format!("cannot start {kind} (scripts/setup.sh installs it)"))?;
        let daemon = Daemon(child);
        let socket = dir.join("wg0.sock");
        for _ in 0..100 {
            if socket.exists() {
                return Ok(daemon);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!("{kind} did not open its socket (is it installed? scripts/setup.sh installs it)")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The in-process device `a` (offloads on, in `nsa`) and another implementation (`kind`, in
/// `nsb`), peered over the veth pair and addressed 10.9.0.1 and 10.9.0.2.
struct Mixed {
    _daemon: Daemon,
    a: Device,
    pa: Key,
    pb: Key,
    dirb: tempfile::TempDir,
    _dira: tempfile::TempDir,
    nsa: Netns,
    nsb: Netns,
}

async fn mixed_pair(tag: &str, kind: &str) -> Result<Mixed> {
    let (nsa, nsb) = pair(tag)?;
    let (dira, dirb) = (tempfile::tempdir()?, tempfile::tempdir()?);
    let (ka, pa) = key_pair(1);
    let (kb, pb) = key_pair(2);
    let a = Device::open_or_create(WireGuardKind::Userspace, "wg0", 1420, &options(&nsa, &dira))
        .await?;
    a.set_interface(&ka, 51820).await?;
    a.set_peer(&peer(pb, Some("192.168.50.2:51820"), &["10.9.0.2/32"])).await?;
    address(&nsa, "10.9.0.1/24")?;
    let daemon = Daemon::start(kind, &nsb, dirb.path()).await?;
    let key_file = dirb.path().join("key");
    std::fs::write(&key_file, format!("{}\n", kb.expose_base64()))?;
    wg(
        dirb.path(),
        &format!(
            "set wg0 private-key {} listen-port 51820 peer {pa} endpoint 192.168.50.1:51820 \
             allowed-ips 10.9.0.1/32",
            key_file.display()
        ),
    )?;
    nsb.ip(&["link", "set", "wg0", "mtu", "1420"])?;
    address(&nsb, "10.9.0.2/24")?;
    Ok(Mixed { _daemon: daemon, a, pa, pb, dirb, _dira: dira, nsa, nsb })
}

/// An in-process device with offloads (in `a`) and another implementation (in `b`): handshake,
/// pings, 16 MiB both ways checked byte for byte, then `b` moves to a new port and `a` follows
/// it (roaming: `a` answers where the authenticated packets came from).
async fn interoperate_with(kind: &str) -> Result<()> {
    let Mixed { _daemon, a, pa, pb, dirb, _dira, nsa, nsb } = mixed_pair(&kind[..4], kind).await?;
    ping(&nsa, "10.9.0.2").with_context(|| kind.to_string())?;
    tcp_transfer(&nsa, &nsb, "10.9.0.2", 5201, 16 << 20).with_context(|| kind.to_string())?;
    tcp_transfer(&nsb, &nsa, "10.9.0.1", 5202, 16 << 20).with_context(|| kind.to_string())?;
    let counters = tun_counters(&a);
    assert!(counters.packets_in > counters.reads, "{kind}: {counters:?}");
    assert!(counters.bytes_written < counters.packet_bytes_out, "{kind}: {counters:?}");
    let shown = wg(dirb.path(), "show wg0")?;
    assert!(
        shown.contains(&format!("peer: {pa}")) && shown.contains("latest handshake"),
        "{shown}"
    );

    // b moves to a new port (its socket re-bound, as after a NAT rebinding); its next packets
    // come from there, and a answers there.
    wg(dirb.path(), "set wg0 listen-port 51822")?;
    ping(&nsb, "10.9.0.1").with_context(|| format!("{kind} after roaming"))?;
    ping(&nsa, "10.9.0.2").with_context(|| format!("{kind} after roaming"))?;
    let state = a.read().await?;
    let endpoint = state.peer(&pb).and_then(|p| p.config.endpoint.as_ref()).map(|e| e.to_string());
    assert_eq!(endpoint.as_deref(), Some("192.168.50.2:51822"), "{kind}");
    tcp_transfer(&nsb, &nsa, "10.9.0.1", 5203, 4 << 20).with_context(|| kind.to_string())?;
    a.delete().await?;
    Ok(())
}

/// Interoperability with wireguard-go (Debian's: what upstream's userspace sidecars run).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offloaded_device_interoperates_with_wireguard_go() -> Result<()> {
    if root_support::skip_unless_root() {
        return Ok(());
    }
    interoperate_with("wireguard-go").await
}

/// Interoperability with boringtun-cli (the other sidecar upstream documents).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offloaded_device_interoperates_with_boringtun() -> Result<()> {
    if root_support::skip_unless_root() {
        return Ok(());
    }
    interoperate_with("boringtun-cli").await
}

/// A session older than two minutes (WireGuard's rekey time, which neither side lets a test
/// shorten) is renewed by a new handshake while traffic goes on: the in-process device with
/// wireguard-go, pinging every two seconds for 135 s, then a transfer on the new session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_is_rekeyed_after_two_minutes_while_traffic_flows() -> Result<()> {
    if root_support::skip_unless_root() {
        return Ok(());
    }
    // Every field bound: one left to `..` would be dropped here (the socket directories).
    let Mixed { _daemon, a, pb, nsa, nsb, dirb: _dirb, _dira, .. } =
        mixed_pair("rekey", "wireguard-go").await?;
    ping(&nsa, "10.9.0.2")?;
    let handshake = |state: &kilo_net_linux::wireguard::DeviceState| {
        state.peer(&pb).and_then(|p| p.last_handshake)
    };
    let first = handshake(&a.read().await?).context("no first handshake")?;
    let start = std::time::Instant::now();
    while start.elapsed() < Duration::from_secs(135) {
        ping(&nsa, "10.9.0.2").context("a ping during the session's life")?;
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let last = handshake(&a.read().await?).context("the handshake is gone")?;
    let renewed = last.duration_since(first).unwrap_or_default();
    assert!(renewed >= Duration::from_secs(100), "handshakes at {first:?} and {last:?}");
    tcp_transfer(&nsa, &nsb, "10.9.0.2", 5201, 8 << 20)?;
    a.delete().await?;
    Ok(())
}

/// The in-process device's timers sleep while no peer has one running (the gotatun patch in
/// `vendor/gotatun`): whatever starts a timer must wake them. A handshake initiation lost on the
/// way is retransmitted after REKEY_TIMEOUT (5 s), well before the sleeping timers' own 10 s; a
/// persistent keepalive set on an idle device starts a handshake at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_device_wakes_its_timers_for_a_lost_handshake_and_a_new_keepalive() -> Result<()> {
    if root_support::skip_unless_root() {
        return Ok(());
    }
    let (nsa, nsb, _da, _db, a, b) = offload_pair("idle", (true, true)).await?;
    let (_, pa) = key_pair(1);
    let (_, pb) = key_pair(2);
    // Both idle: no session, nothing in flight, so both timer tasks are asleep. A configuration
    // write wakes a's for one walk: its next idle wake-up is 10 s away.
    tokio::time::sleep(Duration::from_secs(1)).await;
    a.set_peer(&peer(pb, Some("192.168.50.2:51820"), &["10.9.0.2/32", "fd00:9::2/128"])).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;

    // b drops a's first initiation; a's retransmission, 5 s later, gets through.
    let drop_rule = ["-p", "udp", "--dport", "51820", "-j", "DROP"];
    let mut insert = vec!["iptables", "-I", "INPUT"];
    insert.extend(drop_rule);
    ensure!(nsb.exec(&insert)?.status.success(), "iptables -I in {}", nsb.name);
    let started = std::time::Instant::now();
    let pinger = {
        let name = nsa.name.clone();
        std::thread::spawn(move || {
            run("ip", &["netns", "exec", &name, "ping", "-c1", "-W15", "10.9.0.2"])
        })
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut delete = vec!["iptables", "-D", "INPUT"];
    delete.extend(drop_rule);
    ensure!(nsb.exec(&delete)?.status.success(), "iptables -D in {}", nsb.name);
    let out = pinger.join().map_err(|_| anyhow::anyhow!("the pinger panicked"))??;
    let took = started.elapsed();
    ensure!(out.status.success(), "ping failed: {}", String::from_utf8_lossy(&out.stdout));
    ensure!(took < Duration::from_secs(8), "the lost initiation was retransmitted after {took:?}");

    // A fresh pair of peers on b and a, idle again; a keepalive set on a starts a handshake.
    b.remove_peer(&pa).await?;
    a.remove_peer(&pb).await?;
    b.set_peer(&peer(pa, Some("192.168.50.1:51820"), &["10.9.0.1/32"])).await?;
    a.set_peer(&peer(pb, Some("192.168.50.2:51820"), &["10.9.0.2/32"])).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    ensure!(b.read().await?.peer(&pa).context("a on b")?.last_handshake.is_none());
    let mut keepalive = peer(pb, Some("192.168.50.2:51820"), &["10.9.0.2/32"]);
    keepalive.persistent_keepalive = 25;
    let set = std::time::Instant::now();
    a.set_peer(&keepalive).await?;
    loop {
        if b.read().await?.peer(&pa).context("a on b")?.last_handshake.is_some() {
            break;
        }
        ensure!(set.elapsed() < Duration::from_secs(5), "no handshake 5 s after the keepalive");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    a.delete().await?;
    b.delete().await?;
    Ok(())
}
