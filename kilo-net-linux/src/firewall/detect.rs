//! What the host already uses: which `iptables` variant holds its rules, and whether it uses
//! `iptables` at all, the evidence for `--firewall auto`.
//!
//! kube-proxy's `iptables-wrapper` and Calico's `Auto` back end pick the `iptables` variant by
//! looking at the rules already on the host; [`Survey`] reads the same evidence, and
//! [`Survey::choice`] goes one step further: a host with no `iptables` rules at all (no kubelet
//! hint chains, no rule in either variant) or without the `iptables` binaries gets native
//! nftables, whose one transaction per apply is atomic and cheaper; a host whose firewall lives in
//! `iptables` keeps it there, so Kilo's `FORWARD` accepts sit in the same chains as the
//! `DROP` policies others (Docker, a distribution's firewall) set.

use kilo_core::firewall::Family;

use super::iptables::{Runner, Variant};

/// What the host's `iptables` holds.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Survey {
    /// The variant holding kubelet's hint chains (`KUBE-IPTABLES-HINT`, `KUBE-KUBELET-CANARY`
    /// in `mangle`), if any.
    pub hint: Option<Variant>,
    /// Rules (`-…` lines of `iptables-legacy-save`, IPv4 and IPv6) in the legacy variant.
    pub legacy_rules: usize,
    /// Rules in the nft variant (`iptables-nft-save`).
    pub nft_rules: usize,
    /// The variant the plain `iptables` binary is (`iptables --version`), when that variant's
    /// own binaries exist; `None` when `iptables` cannot be run.
    pub plain: Option<Variant>,
    /// Whether the plain `iptables` binary runs at all.
    pub binaries: bool,
}

/// The firewall implementation `--firewall auto` picks, with the reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Choice {
    /// The `iptables` binaries of this variant: the host already has rules there.
    Iptables(Variant),
    /// Native nftables: the host has no `iptables` rules, or no `iptables` binaries.
    Nftables,
}

/// Reads what the host's `iptables` holds through `runner`. Legacy tables are only read when
/// the kernel has some (`/proc/net/ip{,6}_tables_names`), so a survey does not load the x_tables
/// modules on an nf_tables host.
pub fn survey(runner: &Runner) -> Survey {
    let legacy_in_use = runner
        .output(
            "cat",
            &["/proc/net/ip_tables_names".to_string(), "/proc/net/ip6_tables_names".to_string()],
        )
        .is_ok_and(|o| !o.stdout.iter().all(u8::is_ascii_whitespace));
    let save = |variant: Variant, family: Family, args: &[String]| -> String {
        if variant == Variant::Legacy && !legacy_in_use {
            return String::new();
        }
        runner.run(&format!("{}-save", variant.binary(family)), args).unwrap_or_default()
    };
    let mangle = ["-t".to_string(), "mangle".to_string()];
    let hint = [Variant::Nft, Variant::Legacy].into_iter().find(|&variant| {
        [Family::Ipv4, Family::Ipv6].into_iter().any(|family| {
            let out = save(variant, family, &mangle);
            out.contains("KUBE-IPTABLES-HINT") || out.contains("KUBE-KUBELET-CANARY")
        })
    });
    let count = |variant: Variant| -> usize {
        [Family::Ipv4, Family::Ipv6]
            .into_iter()
            .map(|family| save(variant, family, &[]).lines().filter(|l| l.starts_with('-')).count())
            .sum()
    };
    let version = ["--version".to_string()];
    let exists = |variant: Variant| runner.run(variant.binary(Family::Ipv4), &version).is_ok();
    let plain_version = runner.run("iptables", &version);
    let plain = match &plain_version {
        Ok(v) if v.contains("legacy") && exists(Variant::Legacy) => Some(Variant::Legacy),
        Ok(v) if v.contains("nf_tables") && exists(Variant::Nft) => Some(Variant::Nft),
        _ => None,
    };
    Survey {
        hint,
        legacy_rules: count(Variant::Legacy),
        nft_rules: count(Variant::Nft),
        plain,
        binaries: plain_version.is_ok(),
    }
}

impl Survey {
    /// The variant the host uses, as kube-proxy's `iptables-wrapper` picks it: the variant with
    /// kubelet's hint chains; otherwise the one with more rules; on a tie (a fresh host) the
    /// variant the plain `iptables` is; else [`Variant::Default`].
    pub fn variant(&self) -> Variant {
        if let Some(hint) = self.hint {
            return hint;
        }
        if self.legacy_rules != self.nft_rules {
            return if self.legacy_rules > self.nft_rules { Variant::Legacy } else { Variant::Nft };
        }
        self.plain.unwrap_or(Variant::Default)
    }

    /// Whether the host keeps any firewall state in `iptables`: kubelet's hint chains or any
    /// rule in either variant.
    pub fn in_use(&self) -> bool {
        self.hint.is_some() || self.legacy_rules + self.nft_rules > 0
    }

    /// `--firewall auto`: `iptables` ([`Survey::variant`]) when the host already uses it;
    /// native nftables when it does not, or when the `iptables` binaries are missing.
    pub fn choice(&self) -> Choice {
        if self.in_use() && self.binaries {
            Choice::Iptables(self.variant())
        } else {
            Choice::Nftables
        }
    }
}

/// Picks the variant the host already uses ([`Survey::variant`]).
pub fn detect_variant(runner: &Runner) -> Variant {
    survey(runner).variant()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn survey(hint: Option<Variant>, legacy: usize, nft: usize, plain: Option<Variant>) -> Survey {
        Survey { hint, legacy_rules: legacy, nft_rules: nft, plain, binaries: plain.is_some() }
    }

    #[test]
    fn the_variant_follows_the_hint_then_the_rule_count_then_the_plain_binary() {
        let cases = [
            (survey(Some(Variant::Legacy), 0, 40, Some(Variant::Nft)), Variant::Legacy),
            (survey(Some(Variant::Nft), 40, 0, Some(Variant::Legacy)), Variant::Nft),
            (survey(None, 3, 2, Some(Variant::Nft)), Variant::Legacy),
            (survey(None, 2, 3, Some(Variant::Legacy)), Variant::Nft),
            (survey(None, 0, 0, Some(Variant::Legacy)), Variant::Legacy),
            (survey(None, 0, 0, Some(Variant::Nft)), Variant::Nft),
            (survey(None, 0, 0, None), Variant::Default),
        ];
        for (s, want) in cases {
            assert_eq!(s.variant(), want, "{s:?}");
        }
    }

    #[test]
    fn auto_keeps_a_host_that_uses_iptables_there_and_gives_the_others_nftables() {
        let cases = [
            // kubelet's hint chains alone (kube-proxy not started yet): iptables.
            (survey(Some(Variant::Nft), 0, 0, Some(Variant::Nft)), Choice::Iptables(Variant::Nft)),
            (survey(None, 12, 0, Some(Variant::Nft)), Choice::Iptables(Variant::Legacy)),
            (survey(None, 0, 5, Some(Variant::Nft)), Choice::Iptables(Variant::Nft)),
            // A fresh host, or one whose firewall is native nftables.
            (survey(None, 0, 0, Some(Variant::Nft)), Choice::Nftables),
            (survey(None, 0, 0, Some(Variant::Legacy)), Choice::Nftables),
            // No iptables binaries.
            (survey(None, 0, 0, None), Choice::Nftables),
            (Survey { binaries: false, ..survey(None, 3, 0, None) }, Choice::Nftables),
        ];
        for (s, want) in cases {
            assert_eq!(s.choice(), want, "{s:?}");
        }
    }
}
