//! Leader failover on data-path health.
//!
//! In `location` granularity every node of a location reaches other locations through the
//! location's leader. Upstream re-elects only when the leader's node stops checking in, so a leader
//! that checks in but does not forward blackholes its location. Here the other nodes of the
//! location find out, by probing other segments' WireGuard addresses through the leader, whether
//! it carries traffic, and each publishes a compact verdict on its own node ([`LeaderHealth`]).
//! Every agent then elects every location's leader from the published verdicts with the same
//! deterministic rule ([`elect`]), so that they all agree:
//!
//! 1. A leader that took over from a leader reported down claims leadership (`lead=<since>`)
//!    for as long as it leads, and its claim holds while it is not reported down: the node that
//!    failed does not take leadership back when it recovers, nor does one that ranks higher.
//!    The latest claim wins when two nodes claim (the older one is stepping down). A leader
//!    elected by upstream's order claims nothing, so that a cold start elects upstream's leader
//!    whatever order the agents start in.
//! 2. A node with the `kilo.squat.ai/leader` annotation that is not reported down takes over from
//!    a claimant without it, as upstream's annotation asks.
//! 3. Without a valid claim, the first node in upstream's order of preference that is not
//!    reported down leads.
//! 4. A node is reported down when more of the location's other nodes report it down than report
//!    it carrying their traffic. When every node is reported down, the last claimant keeps leading
//!    (moving would not help).
//!
//! Hysteresis sits with the reporter ([`Monitor`]): a node reports its leader down only after
//! [`FAIL_ROUNDS`] failed probe rounds in a row (each probe round tries up to [`MAX_TARGETS`]
//! other segments' WireGuard addresses, so one dead remote does not count), and not before the
//! path worked once or [`GRACE_SECS`] passed (a mesh that is still starting is not a broken
//! leader). It keeps reporting a former leader down for [`HOLD_SECS`], so that a node that just
//! failed is not elected again at once. The elector itself uses no clock: equal published data
//! gives equal leaders on every node.
//!
//! The election is used only when every node of the mesh publishes a verdict. A node running
//! upstream's agent (or kg with the feature off) publishes none, and then every location keeps
//! upstream's election: upstream's agents elect the leaders of every location themselves, by
//! upstream's rule, and everyone must agree with them. Mesh files cannot carry verdicts, so
//! static meshes keep upstream's election too.

use std::borrow::Borrow;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use crate::Endpoint;
use crate::Node;
use crate::cidr::is_public;

/// Seconds between two probe rounds of a node that goes through a leader.
pub const PROBE_SECS: i64 = 2;
/// How long one probe round waits for an answer, in milliseconds.
pub const PROBE_TIMEOUT_MS: u64 = 1_000;
/// Failed probe rounds in a row after which a node reports its leader down.
pub const FAIL_ROUNDS: u32 = 3;
/// Successful probe rounds in a row after which a leader reported down is reported up again.
pub const OK_ROUNDS: u32 = 2;
/// How long a node may go through a new leader without a successful probe before failures
/// count: a mesh that is still starting (handshakes, other agents applying their plans) is not
/// a broken leader.
pub const GRACE_SECS: i64 = 20;
/// How long a node keeps reporting a former leader down after it found it so.
pub const HOLD_SECS: i64 = 300;
/// At most this many other segments are probed in one round (in turn, so that every segment is
/// probed over a few rounds).
pub const MAX_TARGETS: usize = 3;

/// The version token every published verdict starts with.
const VERSION: &str = "v1";

/// A node's published verdict (annotation `kilo.squat.ai/leader-health`).
///
/// Text form: `v1`, then space-separated fields: `lead=<unix seconds>` (the node leads its
/// location since then), `via=<node>` (the leader the node goes through, once a probe through it succeeded) and
/// `down=<node>@<unix seconds>,…` (leaders the node found not carrying its traffic, and since
/// when). `via` is named once a probe through that leader succeeded. Unknown fields are ignored, so that later versions can add some.
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LeaderHealth {
    /// Since when the node leads its location (Unix seconds), if it does.
    pub lead: Option<i64>,
    /// The leader the node goes through, if it is not a leader itself.
    pub via: Option<String>,
    /// Leaders the node found not carrying its traffic, with the Unix seconds since when.
    pub down: BTreeMap<String, i64>,
}

/// Whether `name` can be written in the text form: Kubernetes node names always can.
fn representable(name: &str) -> bool {
    !name.is_empty() && !name.chars().any(|c| c.is_whitespace() || matches!(c, ',' | '@' | '='))
}

impl fmt::Display for LeaderHealth {
    /// The annotation's value; names that cannot be written (never a Kubernetes name) are left
    /// out.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(VERSION)?;
        if let Some(since) = self.lead {
            write!(f, " lead={since}")?;
        }
        if let Some(via) = self.via.as_deref().filter(|v| representable(v)) {
            write!(f, " via={via}")?;
        }
        let mut first = true;
        for (name, since) in self.down.iter().filter(|(n, _)| representable(n)) {
            f.write_str(if first { " down=" } else { "," })?;
            first = false;
            write!(f, "{name}@{since}")?;
        }
        Ok(())
    }
}

/// Why a verdict did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct HealthParseError(String);

impl FromStr for LeaderHealth {
    type Err = HealthParseError;

    fn from_str(s: &str) -> Result<LeaderHealth, HealthParseError> {
        let err = |m: String| Err(HealthParseError(m));
        let mut tokens = s.split_whitespace();
        if tokens.next() != Some(VERSION) {
            return err(format!("does not start with {VERSION:?}"));
        }
        let seconds = |field: &str, v: &str| {
            v.parse::<i64>()
                .map_err(|_| HealthParseError(format!("{field}: {v:?} is not Unix time")))
        };
        let mut health = LeaderHealth::default();
        for token in tokens {
            let Some((field, value)) = token.split_once('=') else {
                return err(format!("{token:?} is not field=value"));
            };
            match field {
                "lead" => health.lead = Some(seconds(field, value)?),
                "via" if representable(value) => health.via = Some(value.to_string()),
                "via" => return err(format!("via: {value:?} is not a node name")),
                "down" => {
                    for entry in value.split(',') {
                        let Some((name, since)) = entry.split_once('@') else {
                            return err(format!("down: {entry:?} is not node@seconds"));
                        };
                        if !representable(name) {
                            return err(format!("down: {name:?} is not a node name"));
                        }
                        health.down.insert(name.to_string(), seconds(field, since)?);
                    }
                }
                _ => {}
            }
        }
        Ok(health)
    }
}

/// What the other nodes of a location report about one of them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Votes {
    /// Nodes that go through it and find it carrying their traffic.
    pub ok: usize,
    /// Nodes that report it down.
    pub down: usize,
}

impl Votes {
    /// Whether more nodes report it down than report it carrying traffic.
    pub fn is_down(self) -> bool {
        self.down > self.ok
    }
}

/// The rule that chose a segment's leader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ElectionRule {
    /// Upstream's rule: not every node of the mesh publishes a verdict, or the segment has one
    /// node.
    Upstream,
    /// The leader's claim holds: it is not reported down.
    Kept,
    /// No valid claim: the first node in upstream's order that is not reported down.
    Elected,
    /// A node with the `leader` annotation that is not reported down, over a claimant without.
    Volunteer,
    /// Every node is reported down: the last claimant (or upstream's first) keeps leading.
    AllDown,
}

impl ElectionRule {
    /// A short name for tables and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            ElectionRule::Upstream => "upstream",
            ElectionRule::Kept => "kept",
            ElectionRule::Elected => "elected",
            ElectionRule::Volunteer => "volunteer",
            ElectionRule::AllDown => "all-down",
        }
    }
}

impl fmt::Display for ElectionRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a segment's leader was chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Election {
    /// The rule that chose it.
    pub rule: ElectionRule,
    /// What the segment's other nodes report about the leader.
    pub votes: Votes,
    /// Nodes ranked before the leader that were passed over as reported down.
    pub passed_over: Vec<String>,
}

impl Election {
    /// Upstream's election (no verdicts in use).
    pub fn upstream() -> Election {
        Election { rule: ElectionRule::Upstream, votes: Votes::default(), passed_over: Vec::new() }
    }

    /// Whether the leader is not reported down.
    pub fn healthy(&self) -> bool {
        !self.votes.is_down()
    }
}

impl fmt::Display for Election {
    /// `kept`, `elected (passed over a, b)`, with the votes when any were cast.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.rule.as_str())?;
        if !self.passed_over.is_empty() {
            write!(f, " (passed over {})", self.passed_over.join(", "))?;
        }
        Ok(())
    }
}

/// Whether the verdicts are in use for a mesh of these (ready) nodes: every node publishes one.
pub fn in_use<N: Borrow<Node>>(nodes: &[N]) -> bool {
    !nodes.is_empty() && nodes.iter().all(|n| n.borrow().health.is_some())
}

fn dialable(n: &Node) -> bool {
    n.endpoint.as_ref().is_some_and(Endpoint::is_ready)
}

/// Upstream's order of preference over a segment's nodes (in the order given): nodes with a
/// dialable endpoint first when some have none, then volunteers with a public endpoint,
/// volunteers, nodes with a public endpoint, the rest; ties in the order given. Its first entry
/// is upstream's `findLeader` ([`crate::topology::find_leader`]).
pub fn preference<N: Borrow<Node>>(nodes: &[N]) -> Vec<usize> {
    let any_dialable = nodes.iter().any(|n| dialable(n.borrow()));
    let rank = |n: &Node| {
        let public = n.endpoint.as_ref().and_then(|e| e.ip()).is_some_and(is_public);
        let tier = match (n.leader, public) {
            (true, true) => 0,
            (true, false) => 1,
            (false, true) => 2,
            (false, false) => 3,
        };
        (any_dialable && !dialable(n), tier)
    };
    // Each rank computed once; (rank, index) pairs are distinct, so an unstable sort gives the
    // order of a stable sort by rank.
    let mut order: Vec<((bool, u8), usize)> =
        nodes.iter().enumerate().map(|(i, n)| (rank(n.borrow()), i)).collect();
    order.sort_unstable();
    order.into_iter().map(|(_, i)| i).collect()
}

/// What the other nodes of the segment report about `nodes[i]`.
pub fn votes<N: Borrow<Node>>(nodes: &[N], i: usize) -> Votes {
    let name = &nodes[i].borrow().name;
    let mut votes = Votes::default();
    for (j, node) in nodes.iter().enumerate() {
        let Some(h) = node.borrow().health.as_ref().filter(|_| j != i) else { continue };
        if h.down.contains_key(name) {
            votes.down += 1;
        } else if h.via.as_ref() == Some(name) {
            votes.ok += 1;
        }
    }
    votes
}

/// [`votes`] for every node of the segment, in one pass over the verdicts (a location of many
/// nodes is elected in linear time); [`votes`] is its one-node definition.
pub fn all_votes<N: Borrow<Node>>(nodes: &[N]) -> Vec<Votes> {
    let index: HashMap<&str, usize> =
        nodes.iter().enumerate().map(|(i, n)| (n.borrow().name.as_str(), i)).collect();
    let mut votes = vec![Votes::default(); nodes.len()];
    for (j, node) in nodes.iter().enumerate() {
        let Some(h) = node.borrow().health.as_ref() else { continue };
        for name in h.down.keys() {
            if let Some(&i) = index.get(name.as_str()).filter(|&&i| i != j) {
                votes[i].down += 1;
            }
        }
        if let Some(&i) = h.via.as_deref().and_then(|v| index.get(v)).filter(|&&i| i != j)
            && !h.down.contains_key(&nodes[i].borrow().name)
        {
            votes[i].ok += 1;
        }
    }
    votes
}

/// Elects a segment's leader among its nodes (sorted by name, as segments hold them): the
/// index and how (see the module's rules). With `in_use` false (see [`in_use`]) or one node,
/// upstream's rule.
pub fn elect<N: Borrow<Node>>(nodes: &[N], in_use: bool) -> (usize, Election) {
    let order = preference(nodes);
    let Some(&first) = order.first() else { return (0, Election::upstream()) };
    if !in_use || nodes.len() < 2 {
        return (first, Election::upstream());
    }
    let votes = all_votes(nodes);
    let node = |i: usize| nodes[i].borrow();
    let lead = |i: usize| node(i).health.as_ref().and_then(|h| h.lead);
    // Candidates (dialable ones when any is) in order of preference, with their rank.
    let any_dialable = nodes.iter().any(|n| dialable(n.borrow()));
    let candidates: Vec<(usize, usize)> =
        order.iter().copied().filter(|&i| !any_dialable || dialable(node(i))).enumerate().collect();
    let latest_claim = |healthy_only: bool| {
        candidates
            .iter()
            .filter(|&&(_, i)| lead(i).is_some() && (!healthy_only || !votes[i].is_down()))
            .max_by_key(|&&(rank, i)| (lead(i), std::cmp::Reverse(rank)))
            .map(|&(_, i)| i)
    };
    let result = |i: usize, rule: ElectionRule, passed_over: Vec<String>| {
        (i, Election { rule, votes: votes[i], passed_over })
    };
    let first_healthy = candidates.iter().position(|&(_, i)| !votes[i].is_down());
    let passed_over = |upto: usize| -> Vec<String> {
        candidates[..upto].iter().map(|&(_, i)| node(i).name.clone()).collect()
    };
    if let Some(claimant) = latest_claim(true) {
        if !node(claimant).leader
            && let Some(pos) =
                candidates.iter().position(|&(_, i)| node(i).leader && !votes[i].is_down())
        {
            let down_before: Vec<String> = candidates[..pos]
                .iter()
                .filter(|&&(_, i)| node(i).leader)
                .map(|&(_, i)| node(i).name.clone())
                .collect();
            return result(candidates[pos].1, ElectionRule::Volunteer, down_before);
        }
        return result(claimant, ElectionRule::Kept, Vec::new());
    }
    match first_healthy {
        Some(pos) => result(candidates[pos].1, ElectionRule::Elected, passed_over(pos)),
        None => {
            let i = latest_claim(false).unwrap_or(first);
            result(i, ElectionRule::AllDown, Vec::new())
        }
    }
}

/// One probe round to run: ask the leader's path whether any target answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// The leader the local node goes through.
    pub via: String,
    /// Other segments' WireGuard addresses (at most [`MAX_TARGETS`]).
    pub targets: Vec<IpAddr>,
}

/// The local node's side: what it publishes, from its probe results over time.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Monitor {
    /// Since when the local node leads its location.
    lead: Option<i64>,
    /// The leader the local node goes through and judges, and since when.
    via: Option<(String, i64)>,
    /// The path through `via` worked at least once.
    seen_ok: bool,
    /// Failed rounds in a row.
    failures: u32,
    /// Successful rounds in a row.
    successes: u32,
    /// Leaders found down, since when.
    down: BTreeMap<String, i64>,
    /// Other segments' WireGuard addresses to probe, and the next one's index.
    targets: Vec<IpAddr>,
    next_target: usize,
}

impl Monitor {
    /// Takes over what the local node published before a restart: its claim and the leaders it
    /// found down (so that a restart neither moves leadership nor forgets a broken leader).
    pub fn resume(&mut self, published: &LeaderHealth) {
        if self.lead.is_none() {
            self.lead = published.lead;
        }
        for (name, since) in &published.down {
            self.down.entry(name.clone()).or_insert(*since);
        }
    }

    /// Whether the local node claims leadership.
    pub fn claims(&self) -> bool {
        self.lead.is_some()
    }

    /// The verdict to publish. The leader the node goes through is named once a probe through it
    /// succeeded: naming it counts as finding it working, which a node that cannot probe (or has
    /// not yet) must not claim.
    pub fn published(&self) -> LeaderHealth {
        LeaderHealth {
            lead: self.lead,
            via: self.via.as_ref().filter(|_| self.seen_ok).map(|(v, _)| v.clone()),
            down: self.down.clone(),
        }
    }

    /// Whether the local node probes (it goes through a leader and has targets).
    pub fn probing(&self) -> bool {
        self.via.is_some() && !self.targets.is_empty()
    }

    /// After a reconcile: the local node claims its location's leadership (`leads`), or goes
    /// through `via` with these
    /// probe targets (other segments' WireGuard addresses), or neither. Returns whether what it
    /// publishes changed.
    pub fn follow(
        &mut self,
        now: i64,
        leads: bool,
        via: Option<&str>,
        targets: Vec<IpAddr>,
    ) -> bool {
        let before = self.published();
        if leads {
            self.lead.get_or_insert(now);
        } else {
            self.lead = None;
        }
        if self.via.as_ref().map(|(v, _)| v.as_str()) != via {
            self.via = via.map(|v| (v.to_string(), now));
            self.seen_ok = false;
            self.failures = 0;
            self.successes = 0;
        }
        if targets != self.targets {
            self.targets = targets;
            self.next_target = 0;
        }
        self.published() != before
    }

    /// The next probe round: up to [`MAX_TARGETS`] targets, in turn.
    pub fn next_probe(&mut self) -> Option<Probe> {
        let (via, _) = self.via.as_ref()?;
        if self.targets.is_empty() {
            return None;
        }
        let n = self.targets.len();
        let start = self.next_target % n;
        let targets = (0..n.min(MAX_TARGETS)).map(|k| self.targets[(start + k) % n]).collect();
        self.next_target = (start + MAX_TARGETS) % n;
        Some(Probe { via: via.clone(), targets })
    }

    /// A probe round's result through `via` at `now`. Returns whether what the local node
    /// publishes changed. Results for a leader the node no longer goes through are ignored.
    pub fn observe(&mut self, now: i64, via: &str, ok: bool) -> bool {
        let Some((current, since)) = self.via.clone().filter(|(v, _)| v == via) else {
            return false;
        };
        if ok {
            let first = !std::mem::replace(&mut self.seen_ok, true);
            self.failures = 0;
            self.successes = self.successes.saturating_add(1);
            let recovered = self.successes >= OK_ROUNDS && self.down.remove(&current).is_some();
            return first || recovered;
        }
        self.successes = 0;
        if !self.seen_ok && now.saturating_sub(since) < GRACE_SECS {
            return false;
        }
        self.failures = self.failures.saturating_add(1);
        if self.failures >= FAIL_ROUNDS && !self.down.contains_key(&current) {
            self.down.insert(current, now);
            return true;
        }
        false
    }

    /// Forgets former leaders found down more than [`HOLD_SECS`] ago (the current one stays
    /// while it is down). While the current leader is down too, nothing is forgotten: when no
    /// leader gets through (the other locations are unreachable), forgetting one would elect it
    /// again, and then the next, in turn. Returns whether what the local node publishes changed.
    pub fn expire(&mut self, now: i64) -> bool {
        let via = self.via.as_ref().map(|(v, _)| v.clone());
        if via.as_ref().is_some_and(|v| self.down.contains_key(v)) {
            return false;
        }
        let before = self.down.len();
        self.down.retain(|name, since| {
            Some(name) == via.as_ref() || now.saturating_sub(*since) < HOLD_SECS
        });
        self.down.len() != before
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_round_trips_and_rejects_what_it_cannot_read() {
        let h = LeaderHealth {
            lead: Some(1_700_000_000),
            via: Some("b".into()),
            down: [("a".to_string(), 1_699_999_000), ("c.example".to_string(), 5)].into(),
        };
        let text = h.to_string();
        assert_eq!(text, "v1 lead=1700000000 via=b down=a@1699999000,c.example@5");
        assert_eq!(text.parse::<LeaderHealth>(), Ok(h));
        assert_eq!("v1".parse::<LeaderHealth>(), Ok(LeaderHealth::default()));
        assert_eq!(
            "v1 future=1 via=x".parse::<LeaderHealth>(),
            Ok(LeaderHealth { via: Some("x".into()), ..LeaderHealth::default() })
        );
        for bad in
            ["", "v2", "lead=1", "v1 lead=x", "v1 via", "v1 down=a", "v1 down=a@b", "v1 via="]
        {
            assert!(bad.parse::<LeaderHealth>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn monitor_reports_down_after_consecutive_failures_and_holds_it() {
        let mut m = Monitor::default();
        let t = vec!["10.4.0.2".parse().unwrap()];
        // Nothing is said about a before a probe through it succeeded.
        assert!(!m.follow(0, false, Some("a"), t.clone()));
        assert_eq!(m.published(), LeaderHealth::default());
        // Within the grace period and before any success, failures do not count.
        for now in [2, 4, 6] {
            assert!(!m.observe(now, "a", false));
        }
        assert!(m.observe(8, "a", true));
        assert_eq!(m.published().via.as_deref(), Some("a"));
        assert!(!m.observe(9, "a", true));
        assert!(!m.observe(10, "a", false));
        assert!(!m.observe(12, "a", false));
        assert!(m.observe(14, "a", false));
        assert_eq!(m.published().down, [("a".to_string(), 14)].into());
        // A result for another leader is ignored.
        assert!(!m.observe(15, "z", false));
        // Going through b: a stays reported down for the hold time, then goes.
        assert!(m.follow(16, false, Some("b"), t));
        assert!(!m.expire(14 + HOLD_SECS - 1));
        assert!(m.expire(14 + HOLD_SECS));
        assert_eq!(m.published(), LeaderHealth::default());
        assert!(m.observe(14 + HOLD_SECS + 1, "b", true));
        assert_eq!(m.published(), LeaderHealth { via: Some("b".into()), ..Default::default() });
    }
}
