//! Topologies of upstream's 13.2 table built by hand, field by field (a check of the table while
//! `Topology::new` is written elsewhere), and a parser for the route notation of 13.6.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::time::Duration;

use kilo_core::fixtures::{self, key};
use kilo_core::routes::{Interfaces, KILO_TABLE, MAIN_TABLE, Route, Rule};
use kilo_core::topology::Member;
use kilo_core::{Cidr, Segment, Topology};

pub fn c(s: &str) -> Cidr {
    s.parse().unwrap_or_else(|e| panic!("{e}"))
}

fn member(name: &str, subnet: &str, internal: Option<&str>) -> Member {
    Member {
        name: name.into(),
        subnets: vec![c(subnet)],
        internal_ip: internal.map(c),
        internal_ip6: None,
        cni_compatibility_ip: None,
    }
}

#[allow(clippy::too_many_arguments)]
fn segment(
    location: &str,
    members: Vec<Member>,
    key_n: u8,
    endpoint: &str,
    keepalive: Duration,
    allowed_ips: &[&str],
    wg: &str,
    alips: &[&str],
) -> Segment {
    Segment {
        location: location.into(),
        node_location: None,
        members,
        leader: 0,
        key: key(key_n),
        endpoint: Some(endpoint.parse().unwrap()),
        persistent_keepalive: keepalive,
        allowed_ips: allowed_ips.iter().map(|s| c(s)).collect(),
        wireguard_ip: Some(wg.parse().unwrap()),
        wireguard_ip6: None,
        allowed_location_ips: alips.iter().map(|s| c(s)).collect(),
        election: kilo_core::health::Election::upstream(),
    }
}

const KA: Duration = Duration::from_nanos(25);

/// The three logical segments of 13.2 (identical for every hostname).
pub fn logical_segments() -> Vec<Segment> {
    vec![
        segment(
            "location:1",
            vec![member("a", "10.2.1.0/24", Some("192.168.0.1/32"))],
            1,
            "10.1.0.1:51820",
            KA,
            &["10.2.1.0/24", "192.168.0.1/32", "10.4.0.1/32"],
            "10.4.0.1",
            &[],
        ),
        segment(
            "location:2",
            vec![
                member("b", "10.2.2.0/24", Some("192.168.0.1/32")),
                member("c", "10.2.3.0/24", Some("192.168.0.2/32")),
            ],
            2,
            "10.1.0.2:51820",
            Duration::ZERO,
            &["10.2.2.0/24", "192.168.0.1/32", "10.2.3.0/24", "192.168.0.2/32", "10.4.0.2/32"],
            "10.4.0.2",
            &["192.168.178.3/32"],
        ),
        segment(
            "node:d",
            vec![member("d", "10.2.4.0/24", None)],
            4,
            "10.1.0.4:51820",
            Duration::ZERO,
            &["10.2.4.0/24", "10.4.0.3/32"],
            "10.4.0.3",
            &[],
        ),
    ]
}

/// The four full segments of 13.2.
pub fn full_segments() -> Vec<Segment> {
    vec![
        segment(
            "node:a",
            vec![member("a", "10.2.1.0/24", Some("192.168.0.1/32"))],
            1,
            "10.1.0.1:51820",
            KA,
            &["10.2.1.0/24", "192.168.0.1/32", "10.4.0.1/32"],
            "10.4.0.1",
            &[],
        ),
        segment(
            "node:b",
            vec![member("b", "10.2.2.0/24", Some("192.168.0.1/32"))],
            2,
            "10.1.0.2:51820",
            Duration::ZERO,
            &["10.2.2.0/24", "192.168.0.1/32", "10.4.0.2/32"],
            "10.4.0.2",
            &["192.168.178.3/32"],
        ),
        segment(
            "node:c",
            vec![member("c", "10.2.3.0/24", Some("192.168.0.2/32"))],
            3,
            "10.1.0.3:51820",
            Duration::ZERO,
            &["10.2.3.0/24", "192.168.0.2/32", "10.4.0.3/32"],
            "10.4.0.3",
            &[],
        ),
        segment(
            "node:d",
            vec![member("d", "10.2.4.0/24", None)],
            4,
            "10.1.0.4:51820",
            Duration::ZERO,
            &["10.2.4.0/24", "10.4.0.4/32"],
            "10.4.0.4",
            &[],
        ),
    ]
}

fn topology(
    segments: Vec<Segment>,
    location: &str,
    leader: bool,
    wg_cidr: &str,
    private_ip: Option<&str>,
    subnet: &str,
) -> Topology {
    Topology {
        key: fixtures::private_key(),
        port: fixtures::PORT,
        location: location.into(),
        node_location: None,
        leader,
        persistent_keepalive: Duration::ZERO,
        private_ip: private_ip.map(c),
        private_ip6: None,
        subnets: vec![c(subnet)],
        wireguard_cidr: c(wg_cidr),
        wireguard_cidr6: None,
        segments,
        peers: fixtures::peers(),
        discovered_endpoints: BTreeMap::new(),
        service_cidrs: Vec::new(),
        warnings: Vec::new(),
    }
}

/// "logical from `name`" of 13.2 (d as used by the routes tests).
pub fn logical_from(name: &str) -> Topology {
    let s = logical_segments();
    match name {
        "a" => {
            topology(s, "location:1", true, "10.4.0.1/16", Some("192.168.0.1/32"), "10.2.1.0/24")
        }
        "b" => {
            topology(s, "location:2", true, "10.4.0.2/16", Some("192.168.0.1/32"), "10.2.2.0/24")
        }
        "c" => {
            topology(s, "location:2", false, "10.4.0.0/16", Some("192.168.0.2/32"), "10.2.3.0/24")
        }
        "d" => topology(s, "node:d", true, "10.4.0.3/16", None, "10.2.4.0/24"),
        _ => panic!("no node {name}"),
    }
}

/// "full from `name`" of 13.2.
pub fn full_from(name: &str) -> Topology {
    let s = full_segments();
    let loc = format!("node:{name}");
    match name {
        "a" => topology(s, &loc, true, "10.4.0.1/16", Some("192.168.0.1/32"), "10.2.1.0/24"),
        "b" => topology(s, &loc, true, "10.4.0.2/16", Some("192.168.0.1/32"), "10.2.2.0/24"),
        "c" => topology(s, &loc, true, "10.4.0.3/16", Some("192.168.0.2/32"), "10.2.3.0/24"),
        "d" => topology(s, &loc, true, "10.4.0.4/16", None, "10.2.4.0/24"),
        _ => panic!("no node {name}"),
    }
}

/// Upstream's test devices: kilo0 = index 0, eth0 = index 1, tunl0 = index 2.
pub fn ifaces() -> Interfaces {
    Interfaces { kilo: "kilo0".into(), private: "eth0".into(), tunnel: "tunl0".into() }
}

fn dev(n: &str) -> String {
    match n {
        "0" => "kilo0".into(),
        "1" => "eth0".into(),
        "2" => "tunl0".into(),
        other => other.into(),
    }
}

/// Parses the notation of 13.6: `R dst [via gw] dev N [src S] [table T] [onlink]` and
/// `RULE [from F] [to T] [iif I] table T`; blank lines are skipped.
pub fn expected(text: &str) -> (Vec<Route>, Vec<Rule>) {
    let mut routes = Vec::new();
    let mut rules = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let words: Vec<&str> = line.split_whitespace().collect();
        let arg = |k: &str| words.iter().position(|w| *w == k).map(|i| words[i + 1]);
        match words[0] {
            "R" => routes.push(Route {
                dst: c(words[1]),
                via: arg("via").map(|s| s.parse().unwrap()),
                dev: dev(arg("dev").unwrap()),
                src: arg("src").map(|s| s.parse().unwrap()),
                table: arg("table").map_or(MAIN_TABLE, |t| t.parse().unwrap()),
                onlink: words.contains(&"onlink"),
            }),
            "RULE" => rules.push(Rule {
                from: arg("from").map(c),
                to: arg("to").map(c),
                iif: arg("iif").map(str::to_string),
                table: arg("table").map_or(KILO_TABLE, |t| t.parse().unwrap()),
            }),
            other => panic!("bad line start {other}"),
        }
    }
    (routes, rules)
}
