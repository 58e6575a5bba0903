//! The human view of a plan: one heading per part, `ip route` / `ip rule` syntax for routes and
//! rules, and `iptables-restore` input (one block per family and table) for the firewall.

use std::fmt::Write as _;

use super::Plan;
use crate::firewall::{Entry, Family};

fn heading(out: &mut String, title: &str) {
    if !out.is_empty() {
        out.push('\n');
    }
    out.push_str(title);
    out.push('\n');
}

fn none(out: &mut String, lines: usize) {
    if lines == 0 {
        out.push_str("  (none)\n");
    }
}

fn interface(out: &mut String, plan: &Plan) {
    heading(out, "Interface");
    let i = &plan.interface;
    let state = if i.up { "up" } else { "down" };
    let addresses: Vec<String> = i.addresses().iter().map(ToString::to_string).collect();
    if addresses.is_empty() {
        writeln!(out, "  {} {state} (no address)", i.name).ok();
    } else {
        writeln!(out, "  {} {} {state}", i.name, addresses.join(" ")).ok();
    }
    if let Some(t) = plan.tunnel_address {
        let _ = writeln!(out, "  tunnel address {t}");
    }
}

fn wireguard(out: &mut String, plan: &Plan) {
    heading(out, "WireGuard peers");
    let Some(conf) = &plan.wireguard else {
        out.push_str("  (none: only the segment's leader runs WireGuard)\n");
        return;
    };
    if let Some(port) = conf.interface.as_ref().and_then(|i| i.listen_port) {
        let _ = writeln!(out, "  listen-port {port}");
    }
    for p in &conf.peers {
        let _ = writeln!(out, "  peer {}", p.public_key);
        if let Some(e) = p.endpoint.as_ref().map(|e| e.to_string()).filter(|e| !e.is_empty()) {
            let _ = writeln!(out, "    endpoint {e}");
        }
        let ips: Vec<String> = p.allowed_ips.iter().map(|c| c.to_string()).collect();
        if ips.is_empty() {
            out.push_str("    allowed-ips (none)\n");
        } else {
            let _ = writeln!(out, "    allowed-ips {}", ips.join(", "));
        }
        let _ = writeln!(out, "    persistent-keepalive {}", p.persistent_keepalive);
        if p.preshared_key.is_some() {
            out.push_str("    preshared-key (hidden)\n");
        }
    }
    none(out, conf.peers.len());
}

/// One `iptables-restore` block: chains, then rules inserted at the top, then appended rules.
fn firewall_block(out: &mut String, plan: &Plan, family: Family, table: &str) {
    let fw = &plan.firewall;
    let of = |e: &&Entry| e.family() == family && e.table() == table;
    let prepend: Vec<&Entry> = fw.prepend.iter().filter(of).collect();
    let append: Vec<&Entry> = fw.append.iter().filter(of).collect();
    if prepend.is_empty() && append.is_empty() {
        return;
    }
    let _ = writeln!(out, "  *{table}");
    for e in prepend.iter().chain(&append) {
        if let Entry::Chain { name, .. } = e {
            let _ = writeln!(out, "  :{name} - [0:0]");
        }
    }
    for e in &prepend {
        let _ = writeln!(out, "  -I {} 1 {}", e.chain_name(), e.spec_text());
    }
    for e in append.iter().filter(|e| matches!(e, Entry::Rule { .. })) {
        let _ = writeln!(out, "  -A {} {}", e.chain_name(), e.spec_text());
    }
    out.push_str("  COMMIT\n");
}

pub(super) fn render(plan: &Plan) -> String {
    let mut out = String::new();
    let role = if plan.leader { "leader" } else { "not the leader" };
    let _ = writeln!(out, "Node {} (segment {}, {role})", plan.node, plan.segment);
    interface(&mut out, plan);
    wireguard(&mut out, plan);
    heading(&mut out, "Routes (ip route, proto static)");
    for r in &plan.routes {
        let _ = writeln!(out, "  {r}");
    }
    none(&mut out, plan.routes.len());
    heading(&mut out, "Rules (ip rule)");
    for r in &plan.rules {
        let _ = writeln!(out, "  {r}");
    }
    none(&mut out, plan.rules.len());
    heading(&mut out, "Firewall (iptables-restore)");
    let before = out.len();
    for family in [Family::Ipv4, Family::Ipv6] {
        let mut tables: Vec<&str> = Vec::new();
        for e in plan.firewall.append.iter().chain(&plan.firewall.prepend) {
            if e.family() == family && !tables.contains(&e.table()) {
                tables.push(e.table());
            }
        }
        if !tables.is_empty() {
            let tool = if family == Family::Ipv4 { "iptables" } else { "ip6tables" };
            let _ = writeln!(out, "  # {} ({tool})", family.as_str());
        }
        for table in tables {
            firewall_block(&mut out, plan, family, table);
        }
    }
    let written = out.len() - before;
    none(&mut out, written);
    if !plan.warnings.is_empty() {
        heading(&mut out, "Left out (not applied)");
        for w in &plan.warnings {
            let _ = writeln!(out, "  {w}");
        }
    }
    out
}
