//! The userspace WireGuard device: gotatun (Mullvad's maintained fork of boringtun) running
//! in-process on a TUN interface, configured and read through its UAPI socket
//! `<dir>/<iface>.sock` exactly as `wg` does. The same type can attach to a userspace
//! implementation that already serves the socket (a wireguard-go sidecar, say).
//!
//! Threads and namespaces: the in-process device runs on a dedicated thread that first enters
//! the requested network namespace (if any) and then builds its own multi-threaded tokio
//! runtime, so the TUN interface and the UDP sockets (including the ones gotatun re-binds when
//! the private key or port changes) all live in that namespace. The caller's runtime (the
//! agent's tokio main) only talks to it over the socket.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use gotatun::device::uapi::{UapiClient as ChannelClient, UapiServer};
use kilo_core::wireguard::PeerConfig;
use kilo_core::{Cidr, Key, PresharedKey, PrivateKey};
use tokio::net::UnixListener;
use tokio::sync::oneshot;

use super::apply::Operation;
use super::error::WireGuardError;
use super::netns;
use super::offload::{self, OffloadRecv, OffloadSend, TunCounters, TunOptions, TunStats};
use super::state::{DeviceState, RawDevice, RawPeer, handshake_at};
use super::uapi::{self, UapiClient};
use super::udp_gso::GsoSocketFactory;

/// How many worker threads an in-process device's runtime has: one core fewer than the machine
/// has (the kernel's network stack and the applications need the rest), at least 1, at most 4
/// (the device runs six tasks: TUN and UDP, each read and write, and encryption and decryption).
/// On 2 cores one worker moved 10-20 % more than two (`scripts/bench-datapath.sh`): the tasks
/// hand each packet on without waking another thread.
fn worker_threads() -> usize {
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    cores.saturating_sub(1).clamp(1, 4)
}

/// A userspace WireGuard device, in-process (gotatun) or attached to another implementation's
/// UAPI socket.
#[derive(Debug)]
pub struct UserspaceDevice {
    name: String,
    client: UapiClient,
    /// The in-process device's request channel (reads skip the socket's text protocol).
    channel: Option<Channel>,
    has_key: AtomicBool,
    runner: Option<Runner>,
    /// Whether [`UserspaceDevice::stop`] stopped the in-process device.
    stopped: bool,
}

/// The request channel of an in-process device, and its TUN interface's counters.
struct Channel(ChannelClient, Arc<TunStats>);

impl std::fmt::Debug for Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Channel")
    }
}

/// The thread running an in-process device; dropping it stops the device.
#[derive(Debug)]
struct Runner {
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Runner {
    fn stop(&mut self) -> Option<std::thread::JoinHandle<()>> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.thread.take()
    }
}

impl Drop for Runner {
    fn drop(&mut self) {
        self.stop();
    }
}

impl UserspaceDevice {
    /// Attaches to the implementation serving `<uapi_dir>/<name>.sock` if one answers there;
    /// otherwise starts gotatun in-process on a new TUN interface `name` with `mtu` (created
    /// down, without addresses), inside network namespace `netns` when given, serving that socket
    /// (the directory is created if missing; a stale socket file is replaced), its TUN interface
    /// opened as `tun` says.
    pub async fn open_or_create(
        name: &str,
        mtu: u16,
        uapi_dir: &Path,
        netns: Option<&Path>,
        tun: TunOptions,
    ) -> Result<Self, WireGuardError> {
        let socket = uapi::socket_path(uapi_dir, name);
        let client = UapiClient::new(&socket);
        if client.is_alive().await {
            tracing::info!(interface = name, socket = %socket.display(), "attaching to a running userspace WireGuard");
            return Ok(UserspaceDevice {
                name: name.to_string(),
                client,
                channel: None,
                has_key: AtomicBool::new(false),
                runner: None,
                stopped: false,
            });
        }
        std::fs::create_dir_all(uapi_dir).map_err(|e| WireGuardError::UapiIo {
            path: uapi_dir.to_path_buf(),
            action: "create the socket directory",
            source: e,
        })?;
        let (runner, channel, stats) =
            spawn(name.to_string(), mtu, socket, netns.map(Path::to_path_buf), tun).await?;
        tracing::info!(interface = name, "started in-process userspace WireGuard (gotatun)");
        Ok(UserspaceDevice {
            name: name.to_string(),
            client,
            channel: Some(Channel(channel, stats)),
            has_key: AtomicBool::new(false),
            runner: Some(runner),
            stopped: false,
        })
    }

    /// Attaches to the implementation serving `<uapi_dir>/<name>.sock` (`--create-interface=false`
    /// with a wireguard-go sidecar, say); an error when nothing answers there.
    pub async fn open(name: &str, uapi_dir: &Path) -> Result<Self, WireGuardError> {
        let client = UapiClient::new(uapi::socket_path(uapi_dir, name));
        if let Err(source) = tokio::net::UnixStream::connect(client.path()).await {
            return Err(WireGuardError::UapiIo {
                path: client.path().to_path_buf(),
                action: "connect",
                source,
            });
        }
        Ok(UserspaceDevice {
            name: name.to_string(),
            client,
            channel: None,
            has_key: AtomicBool::new(false),
            runner: None,
            stopped: false,
        })
    }

    /// The interface name.
    /// The counters of the in-process device's TUN interface (`None` when attached to another
    /// implementation).
    pub fn tun_counters(&self) -> Option<TunCounters> {
        self.channel.as_ref().map(|c| c.1.snapshot())
    }

    /// The interface name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The UAPI socket path.
    pub fn socket_path(&self) -> &Path {
        self.client.path()
    }

    /// Whether the device runs in this process (false: attached to another implementation, or
    /// stopped).
    pub fn is_in_process(&self) -> bool {
        self.runner.is_some()
    }

    /// Whether an in-process device is still running: false once its thread ended (its TUN
    /// interface was deleted, say) or it was stopped. A device attached to another
    /// implementation is taken to run.
    pub fn is_running(&self) -> bool {
        match &self.runner {
            Some(runner) => runner.thread.as_ref().is_some_and(|t| !t.is_finished()),
            None => !self.stopped,
        }
    }

    /// Stops an in-process device and waits for its thread (its TUN interface and socket go
    /// away); the value stays, not running. Nothing happens to an attached device.
    pub async fn stop(&mut self) {
        let Some(mut runner) = self.runner.take() else { return };
        self.stopped = true;
        if let Some(thread) = runner.stop() {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }

    /// Reads the device (`wg show IFACE dump`): an in-process device through its request channel
    /// (typed, no text protocol, no system call per line: a read of 1,000 peers costs about a
    /// millisecond), another one through its socket.
    pub async fn read(&self) -> Result<DeviceState, WireGuardError> {
        let state = match &self.channel {
            Some(Channel(channel, _)) => self.read_channel(channel).await?,
            None => self.client.get(&self.name).await?,
        };
        if state.private_key.is_some() {
            self.has_key.store(true, Ordering::Relaxed);
        }
        Ok(state)
    }

    /// Reads the device through its socket, as `wg show` does, even when it runs in process.
    pub async fn read_socket(&self) -> Result<DeviceState, WireGuardError> {
        self.client.get(&self.name).await
    }

    async fn read_channel(&self, channel: &ChannelClient) -> Result<DeviceState, WireGuardError> {
        let response = channel
            .send(gotatun::device::uapi::command::Get::default())
            .await
            .map_err(|e| failure(&self.name, format!("the device stopped answering: {e}")))?;
        let gotatun::device::uapi::command::Response::Get(response) = response else {
            return Err(failure(&self.name, "the device answered a read with a write's response"));
        };
        if response.errno != 0 {
            return Err(WireGuardError::UapiErrno {
                path: self.client.path().to_path_buf(),
                request: "get",
                errno: i64::from(response.errno),
            });
        }
        Ok(device_state(&self.name, response))
    }

    /// Sets the private key and listen port (`wg set IFACE private-key F listen-port P`); peers
    /// are untouched.
    pub async fn set_interface(
        &self,
        private_key: &PrivateKey,
        listen_port: u16,
    ) -> Result<(), WireGuardError> {
        self.configure_interface(Some(private_key), Some(listen_port)).await
    }

    /// Sets only the given interface fields; an all-zero private key removes the key.
    pub async fn configure_interface(
        &self,
        private_key: Option<&PrivateKey>,
        listen_port: Option<u16>,
    ) -> Result<(), WireGuardError> {
        if private_key.is_none() && listen_port.is_none() {
            return Ok(());
        }
        self.client.set(&uapi::interface_request(private_key, listen_port)).await?;
        if let Some(k) = private_key {
            self.has_key.store(!k.is_zero(), Ordering::Relaxed);
        }
        Ok(())
    }

    /// Creates or updates one peer (see [`uapi::set_peer_request`]); other peers are untouched.
    /// The device must have a private key first (gotatun cannot hold peers without one).
    pub async fn set_peer(&self, peer: &PeerConfig) -> Result<(), WireGuardError> {
        let request = uapi::set_peer_request(peer)?;
        self.require_key().await?;
        self.client.set(&request).await
    }

    /// Makes several peer operations in one `set=1` request, in order; interface operations are
    /// not among them. Like [`UserspaceDevice::set_peer`], adding peers needs a private key.
    pub(crate) async fn set_peers(&self, ops: &[Operation]) -> Result<(), WireGuardError> {
        let mut sections = Vec::with_capacity(ops.len());
        let mut adds = false;
        for op in ops {
            sections.push(match op {
                Operation::SetPeer(peer) => {
                    adds = true;
                    uapi::set_peer_request(peer)?
                }
                Operation::UpdatePeer(peer) => uapi::update_peer_request(peer)?,
                Operation::RemovePeer(key) => uapi::remove_peer_request(key),
                Operation::Interface { .. } => continue,
            });
        }
        if adds {
            self.require_key().await?;
        }
        self.client.set(&uapi::join_requests(&sections)).await
    }

    /// An error unless the device has a private key (gotatun cannot hold peers without one).
    async fn require_key(&self) -> Result<(), WireGuardError> {
        if !self.has_key.load(Ordering::Relaxed) && self.read().await?.private_key.is_none() {
            return Err(WireGuardError::NoPrivateKey { name: self.name.clone() });
        }
        Ok(())
    }

    /// Updates one peer only if the device has it (`update_only`); other peers are untouched.
    pub async fn update_peer(&self, peer: &PeerConfig) -> Result<(), WireGuardError> {
        self.client.set(&uapi::update_peer_request(peer)?).await
    }

    /// Removes one peer (`wg set IFACE peer K remove`); other peers are untouched.
    pub async fn remove_peer(&self, key: &Key) -> Result<(), WireGuardError> {
        self.client.set(&uapi::remove_peer_request(key)).await
    }

    /// Stops the in-process device: its TUN interface and socket disappear. A device attached to
    /// another implementation cannot be deleted from here.
    pub async fn delete(mut self) -> Result<(), WireGuardError> {
        let Some(mut runner) = self.runner.take() else {
            return Err(WireGuardError::Userspace {
                name: self.name.clone(),
                message: format!(
                    "attached to another implementation's socket {}: stop that process to delete the interface",
                    self.client.path().display()
                ),
            });
        };
        if let Some(thread) = runner.stop() {
            let joined = tokio::task::spawn_blocking(move || thread.join()).await;
            if !matches!(joined, Ok(Ok(()))) {
                return Err(WireGuardError::Userspace {
                    name: self.name.clone(),
                    message: "device thread panicked while stopping".into(),
                });
            }
        }
        Ok(())
    }
}

fn failure(name: &str, message: impl std::fmt::Display) -> WireGuardError {
    WireGuardError::Userspace { name: name.to_string(), message: message.to_string() }
}

/// Starts the device thread and waits until the TUN interface, the device and the socket exist.
async fn spawn(
    name: String,
    mtu: u16,
    socket: PathBuf,
    netns: Option<PathBuf>,
    tun: TunOptions,
) -> Result<(Runner, ChannelClient, Arc<TunStats>), WireGuardError> {
    let (ready_tx, ready_rx) = oneshot::channel();
    let (shutdown_tx, shutdown_rx) = oneshot::channel();
    let thread_name = format!("wg-{name}");
    let n = name.clone();
    let thread = std::thread::Builder::new()
        .name(thread_name.clone())
        .spawn(move || {
            let runtime = netns.as_deref().map(netns::enter).transpose().and_then(|_| {
                tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(worker_threads())
                    .thread_name(thread_name)
                    .enable_all()
                    .build()
                    .map_err(|e| failure(&n, format!("cannot build a tokio runtime: {e}")))
            });
            let runtime = match runtime {
                Ok(r) => r,
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            runtime.block_on(serve(n, mtu, socket, tun, ready_tx, shutdown_rx));
            runtime.shutdown_timeout(Duration::from_secs(2));
        })
        .map_err(|e| failure(&name, format!("cannot spawn the device thread: {e}")))?;
    let mut runner = Runner { shutdown: Some(shutdown_tx), thread: Some(thread) };
    match ready_rx.await {
        Ok(Ok((channel, stats))) => Ok((runner, channel, stats)),
        Ok(Err(e)) => {
            if let Some(t) = runner.stop() {
                let _ = tokio::task::spawn_blocking(move || t.join()).await;
            }
            Err(e)
        }
        Err(_) => Err(failure(&name, "device thread ended during start-up")),
    }
}

/// What the device's typed answer to a read says, as [`super::uapi::parse_get_response`] reads
/// the same answer in text: a zero private key, pre-shared key, fwmark or handshake time is none
/// ([`RawDevice::into_state`]).
fn device_state(name: &str, response: gotatun::device::uapi::command::GetResponse) -> DeviceState {
    use gotatun::device::uapi::command::SetUnset;
    let peers = response
        .peers
        .into_iter()
        .map(|p| RawPeer {
            public_key: Key::from_bytes(p.peer.public_key.0),
            preshared_key: match p.peer.preshared_key {
                Some(SetUnset::Set(k)) => Some(PresharedKey::from_bytes(k.0)),
                _ => None,
            },
            endpoint: p.peer.endpoint,
            allowed_ips: p
                .peer
                .allowed_ip
                .iter()
                .filter_map(|net| Cidr::new(net.ip(), net.prefix()))
                .collect(),
            persistent_keepalive: p.peer.persistent_keepalive_interval,
            last_handshake: Some(handshake_at(
                p.last_handshake_time_sec.unwrap_or(0),
                p.last_handshake_time_nsec.unwrap_or(0),
            )),
            rx_bytes: p.rx_bytes.unwrap_or(0),
            tx_bytes: p.tx_bytes.unwrap_or(0),
        })
        .collect();
    RawDevice {
        private_key: response.private_key.map(|k| PrivateKey::from_bytes(k.0)),
        listen_port: response.listen_port,
        fwmark: response.fwmark,
        peers,
    }
    .into_state(name)
}

/// The in-process device's transports: gotatun's UDP sockets (batched, with UDP GRO), sending
/// with UDP GSO ([`super::udp_gso`]), and a TUN interface with offloads ([`offload`]).
type Transports = (GsoSocketFactory, OffloadSend, OffloadRecv);

async fn start(
    name: &str,
    mtu: u16,
    socket: &Path,
    tun: TunOptions,
) -> Result<
    (gotatun::device::Device<Transports>, UnixListener, ChannelClient, Arc<TunStats>),
    WireGuardError,
> {
    let (tun_tx, tun_rx, offloads, stats) = offload::open(name, mtu, tun)
        .map_err(|e| failure(name, format!("cannot create TUN interface: {e}")))?;
    tracing::debug!(
        interface = name,
        asked = tun.offloads,
        tcp = offloads.tcp,
        udp = offloads.udp,
        "TUN segmentation offloads"
    );
    let (client, server) = UapiServer::new();
    let device = gotatun::device::build()
        .with_udp(GsoSocketFactory::default())
        .with_ip_pair(tun_tx, tun_rx)
        .with_uapi(server)
        .build()
        .await
        .map_err(|e| failure(name, e))?;
    let listener = bind_private_socket(socket)?;
    let listener =
        listener.set_nonblocking(true).and_then(|()| UnixListener::from_std(listener)).map_err(
            |e| WireGuardError::UapiIo { path: socket.to_path_buf(), action: "listen", source: e },
        )?;
    Ok((device, listener, client, stats))
}

/// Binds a Unix socket at `path` that is mode 0600 from the moment it appears there: whoever can
/// connect can reconfigure the device, so owner only, as wireguard-go does. The socket is bound
/// inside a fresh 0700 directory next to `path` (so nobody else can reach it while it still has
/// the umask's permissions), chmod'ed to 0600, then renamed into place, replacing a stale socket
/// atomically. The process umask is left alone.
pub fn bind_private_socket(
    path: &Path,
) -> Result<std::os::unix::net::UnixListener, WireGuardError> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    use std::sync::atomic::AtomicU64;
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let io = |action: &'static str, source: std::io::Error| WireGuardError::UapiIo {
        path: path.to_path_buf(),
        action,
        source,
    };
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let file = path.file_name().ok_or_else(|| {
        io("bind", std::io::Error::new(std::io::ErrorKind::InvalidInput, "no file name"))
    })?;
    let private = dir.join(format!(
        ".{}.{}.{}",
        file.to_string_lossy(),
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&private)
        .map_err(|e| io("create a private directory for", e))?;
    let staged = private.join("uapi.sock");
    let bound = std::os::unix::net::UnixListener::bind(&staged)
        .map_err(|e| io("bind", e))
        .and_then(|listener| {
            std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(0o600))
                .map_err(|e| io("chmod 0600", e))?;
            std::fs::rename(&staged, path).map_err(|e| io("rename into place", e))?;
            Ok(listener)
        });
    let _ = std::fs::remove_file(&staged);
    let _ = std::fs::remove_dir(&private);
    bound
}

/// The device thread's main task: start, report readiness, serve the socket until shutdown.
async fn serve(
    name: String,
    mtu: u16,
    socket: PathBuf,
    tun: TunOptions,
    ready: oneshot::Sender<Result<(ChannelClient, Arc<TunStats>), WireGuardError>>,
    mut shutdown: oneshot::Receiver<()>,
) {
    let (mut device, listener, client, stats) = match start(&name, mtu, &socket, tun).await {
        Ok(started) => started,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let _ = ready.send(Ok((client.clone(), Arc::clone(&stats))));
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            _ = device.wait() => {
                tracing::error!(interface = %name, "userspace WireGuard device failed");
                break;
            }
            accepted = listener.accept() => match accepted.and_then(|(s, _)| {
                let s = s.into_std()?;
                s.set_nonblocking(false)?;
                Ok(s)
            }) {
                // gotatun answers each connection on its own thread, speaking the text protocol.
                Ok(stream) => client.clone().wrap_read_write(stream),
                Err(e) => tracing::warn!(interface = %name, error = %e, "UAPI accept failed"),
            },
        }
    }
    device.stop().await;
    let _ = std::fs::remove_file(&socket);
    tracing::info!(interface = %name, "stopped in-process userspace WireGuard");
}
