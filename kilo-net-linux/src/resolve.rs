//! DNS resolution of WireGuard endpoints and host names that never stalls the agent for long.
//!
//! The system resolver blocks for as long as the configured name servers take: with DNS
//! unreachable, about 10 s per name, and the agent resolved every DNS endpoint one after another
//! on every resync. A [`Resolver`] instead:
//!
//! - answers at once with the last good answer for a name it has resolved before, and refreshes
//!   that answer in the background (the next call sees the new one);
//! - waits at most its `wait` for a name it has never resolved (the lookup goes on in the
//!   background and its answer serves the next call);
//! - runs at most one lookup per name at a time, and resolves the names of one call
//!   concurrently;
//! - never forgets a good answer because a later lookup failed.
//!
//! The lookup function is injectable ([`Resolver::new`]), so tests can stand in for DNS.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use kilo_core::dns::Resolved;
use kilo_core::wireguard::Config;
use tokio::sync::Notify;

/// What a lookup returns: the addresses of one `host:port`.
pub type LookupFuture = Pin<Box<dyn Future<Output = std::io::Result<Vec<SocketAddr>>> + Send>>;

/// A lookup function: `host:port` to its addresses.
pub type Lookup = Arc<dyn Fn(String) -> LookupFuture + Send + Sync>;

/// How long the agent waits for a name it has never resolved.
pub const AGENT_WAIT: Duration = Duration::from_secs(2);

/// A lookup still unanswered after this long is abandoned (a new one may start).
pub const LOOKUP_LIMIT: Duration = Duration::from_secs(30);

#[derive(Debug, Default)]
struct Entry {
    last: Option<Vec<SocketAddr>>,
    in_flight: bool,
}

struct Inner {
    lookup: Lookup,
    wait: Duration,
    entries: Mutex<HashMap<String, Entry>>,
    done: Notify,
}

/// A running lookup; dropping it records its answer, if any, and lets the next call start
/// another.
struct InFlight {
    inner: Arc<Inner>,
    name: String,
    answer: Option<Vec<SocketAddr>>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        {
            let mut entries = self.inner.entries.lock().unwrap_or_else(|e| e.into_inner());
            let entry = entries.entry(std::mem::take(&mut self.name)).or_default();
            entry.in_flight = false;
            if let Some(addrs) = self.answer.take() {
                entry.last = Some(addrs);
            }
        }
        self.inner.done.notify_waiters();
    }
}

/// A caching, time-bounded resolver (see the module documentation). Clones share the cache.
#[derive(Clone)]
pub struct Resolver {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolver").field("wait", &self.inner.wait).finish_non_exhaustive()
    }
}

/// The system resolver (`getaddrinfo`, as `getent hosts NAME`).
pub fn system_lookup() -> Lookup {
    Arc::new(|name: String| {
        Box::pin(async move { tokio::net::lookup_host(name).await.map(Iterator::collect) })
    })
}

impl Resolver {
    /// A resolver over `lookup` that waits at most `wait` for a name it has no answer for.
    pub fn new(lookup: Lookup, wait: Duration) -> Resolver {
        Resolver {
            inner: Arc::new(Inner {
                lookup,
                wait,
                entries: Mutex::new(HashMap::new()),
                done: Notify::new(),
            }),
        }
    }

    /// The process's resolver for the agent: the system resolver, [`AGENT_WAIT`].
    pub fn agent() -> &'static Resolver {
        static AGENT: OnceLock<Resolver> = OnceLock::new();
        AGENT.get_or_init(|| Resolver::new(system_lookup(), AGENT_WAIT))
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.inner.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts a lookup of `name` unless one runs; returns the last good answer.
    fn refresh(&self, name: &str) -> Option<Vec<SocketAddr>> {
        let mut entries = self.entries();
        let entry = entries.entry(name.to_string()).or_default();
        if !entry.in_flight {
            entry.in_flight = true;
            let inner = self.inner.clone();
            let name = name.to_string();
            tokio::spawn(async move {
                // Also ends the lookup when the task is dropped unfinished (its runtime stopped).
                let mut lookup =
                    InFlight { inner: inner.clone(), name: name.clone(), answer: None };
                let answer = tokio::time::timeout(LOOKUP_LIMIT, (inner.lookup)(name)).await;
                if let Ok(Ok(addrs)) = answer
                    && !addrs.is_empty()
                {
                    lookup.answer = Some(addrs);
                }
            });
        }
        entry.last.clone()
    }

    /// The addresses of `name` (`host:port`): the last good answer at once if there is one
    /// (refreshed in the background), else whatever a lookup finds within the resolver's wait;
    /// `None` when nothing is known yet.
    pub async fn resolve(&self, name: &str) -> Option<Vec<SocketAddr>> {
        let done = self.inner.done.notified();
        tokio::pin!(done);
        done.as_mut().enable();
        if let Some(addrs) = self.refresh(name) {
            return Some(addrs);
        }
        let deadline = tokio::time::Instant::now() + self.inner.wait;
        loop {
            if tokio::time::timeout_at(deadline, done.as_mut()).await.is_err() {
                return None;
            }
            done.set(self.inner.done.notified());
            done.as_mut().enable();
            let entries = self.entries();
            match entries.get(name) {
                Some(entry) if entry.in_flight => {}
                Some(entry) => return entry.last.clone(),
                None => return None,
            }
        }
    }

    /// Resolves the DNS endpoints of `config` concurrently ([`Resolver::resolve`]) and applies
    /// [`kilo_core::dns`]'s rule: a name that does not resolve keeps its peer's last address
    /// (its endpoint's, else the one `current`, the device's configuration, has for the peer),
    /// else leaves the peer without an endpoint, and is reported in `unresolved`.
    pub async fn resolve_config(&self, config: &Config, current: &Config) -> Resolved {
        let names = kilo_core::dns::names(config);
        // The port does not matter: each endpoint keeps its own.
        let lookups = names.iter().map(|name| async move {
            self.resolve(&format!("{name}:0")).await?.first().map(|a| a.ip())
        });
        let answers = futures::future::join_all(lookups).await;
        let answers: BTreeMap<String, Option<IpAddr>> = names.into_iter().zip(answers).collect();
        kilo_core::dns::resolve_endpoints(config, &answers, current)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Instant;

    const WAIT: Duration = Duration::from_millis(200);

    /// A lookup that never answers, counting its calls.
    fn never(calls: Arc<AtomicUsize>) -> Lookup {
        Arc::new(move |_| {
            calls.fetch_add(1, Ordering::SeqCst);
            Box::pin(std::future::pending())
        })
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[tokio::test]
    async fn a_name_that_never_resolves_costs_the_wait_once_and_nothing_after() {
        let calls = Arc::new(AtomicUsize::new(0));
        let resolver = Resolver::new(never(calls.clone()), WAIT);
        let started = Instant::now();
        assert_eq!(resolver.resolve("stuck.example:51820").await, None);
        let first = started.elapsed();
        // Generous bound: it did not hang.
        assert!(first < Duration::from_secs(5), "{first:?}");
        // Later calls wait again, but never start a second lookup while one runs.
        for _ in 0..3 {
            assert_eq!(resolver.resolve("stuck.example:51820").await, None);
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn the_last_good_answer_is_used_at_once_while_dns_hangs() {
        let calls = Arc::new(AtomicUsize::new(0));
        let counter = calls.clone();
        // The first lookup answers; every later one hangs (DNS became unreachable).
        let lookup: Lookup = Arc::new(move |_| {
            if counter.fetch_add(1, Ordering::SeqCst) == 0 {
                Box::pin(async { Ok(vec![addr("192.0.2.7:51820")]) })
            } else {
                Box::pin(std::future::pending())
            }
        });
        let resolver = Resolver::new(lookup, Duration::from_secs(3600));
        assert_eq!(resolver.resolve("a.example:51820").await, Some(vec![addr("192.0.2.7:51820")]));
        for _ in 0..5 {
            // With a one-hour wait, only the cache can answer these.
            assert_eq!(
                resolver.resolve("a.example:51820").await,
                Some(vec![addr("192.0.2.7:51820")])
            );
        }
        // One refresh runs (and hangs); no more are started.
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn a_lookup_whose_runtime_stopped_does_not_block_later_lookups() {
        let calls = Arc::new(AtomicUsize::new(0));
        let resolver = Resolver::new(never(calls.clone()), WAIT);
        for _ in 0..2 {
            let runtime =
                tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            assert_eq!(runtime.block_on(resolver.resolve("c.example:1")), None);
            // Dropping the runtime drops its unfinished lookup.
        }
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_failed_lookup_keeps_the_last_good_answer() {
        let calls = Arc::new(AtomicUsize::new(0));
        let counter = calls.clone();
        let lookup: Lookup = Arc::new(move |_| {
            let n = counter.fetch_add(1, Ordering::SeqCst);
            Box::pin(async move {
                if n == 0 {
                    Ok(vec![addr("192.0.2.8:1")])
                } else {
                    Err(std::io::Error::other("SERVFAIL"))
                }
            })
        });
        let resolver = Resolver::new(lookup, WAIT);
        for _ in 0..4 {
            assert_eq!(resolver.resolve("b.example:1").await, Some(vec![addr("192.0.2.8:1")]));
            tokio::task::yield_now().await;
        }
        assert!(calls.load(Ordering::SeqCst) >= 2);
    }

    #[tokio::test]
    async fn the_names_of_a_config_are_resolved_concurrently() {
        use kilo_core::Key;
        use kilo_core::wireguard::PeerConfig;
        // Each lookup answers only once all five have started: resolved one after another, the
        // first four would give up before the fifth began.
        let barrier = Arc::new(tokio::sync::Barrier::new(5));
        let lookup: Lookup = Arc::new(move |name: String| {
            let barrier = barrier.clone();
            Box::pin(async move {
                barrier.wait().await;
                let n: u8 = name[1..2].parse().unwrap();
                Ok(vec![SocketAddr::from(([192, 0, 2, n], 51820))])
            })
        });
        let resolver = Resolver::new(lookup, Duration::from_secs(10));
        let peer = |i: u8, endpoint: &str| PeerConfig {
            public_key: Key::from_bytes([i; 32]),
            endpoint: Some(endpoint.parse().unwrap()),
            ..Default::default()
        };
        let config = Config {
            interface: None,
            peers: (1..=5)
                .map(|i| peer(i, &format!("n{i}.example:51820")))
                .chain([peer(9, "198.51.100.9:51820")])
                .collect(),
        };
        let resolved = resolver.resolve_config(&config, &Config::default()).await;
        assert_eq!(resolved.unresolved, []);
        let resolved = resolved.config;
        let endpoints: Vec<Option<SocketAddr>> =
            resolved.peers.iter().map(|p| p.endpoint.as_ref().and_then(|e| e.addr())).collect();
        let want: Vec<Option<SocketAddr>> = [1, 2, 3, 4, 5]
            .iter()
            .map(|n| Some(SocketAddr::from(([192, 0, 2, *n], 51820))))
            .chain([Some(addr("198.51.100.9:51820"))])
            .collect();
        assert_eq!(endpoints, want);
        // The DNS names are kept (a resolved endpoint still shows its name).
        assert_eq!(
            resolved.peers[0].endpoint.as_ref().and_then(|e| e.dns()),
            Some("n1.example:51820")
        );
    }

    #[tokio::test]
    async fn a_config_whose_names_never_resolve_is_answered_within_the_wait() {
        use kilo_core::Key;
        use kilo_core::wireguard::PeerConfig;
        let calls = Arc::new(AtomicUsize::new(0));
        let resolver = Resolver::new(never(calls.clone()), WAIT);
        let config = Config {
            interface: None,
            peers: (1..=3)
                .map(|i| PeerConfig {
                    public_key: Key::from_bytes([i; 32]),
                    endpoint: Some(format!("n{i}.example:51820").parse().unwrap()),
                    ..Default::default()
                })
                .collect(),
        };
        let resolved = resolver.resolve_config(&config, &Config::default()).await;
        assert_eq!(resolved.unresolved.len(), 3);
        let resolved = resolved.config;
        assert!(resolved.peers.iter().all(|p| p.endpoint.is_none()));
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }
}
