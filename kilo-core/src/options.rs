//! The closed sets of mesh options: granularity, encapsulation, compatibility mode.

use std::fmt;
use std::str::FromStr;

/// A flag or annotation value that is not one of the allowed words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} {value:?} unknown; possible values are: {allowed}")]
pub struct UnknownValue {
    /// What was being parsed (`mesh granularity`, `encapsulation`, …).
    pub what: &'static str,
    /// The rejected value.
    pub value: String,
    /// The allowed values, comma-separated.
    pub allowed: &'static str,
}

macro_rules! word_enum {
    ($(#[$meta:meta])* $name:ident, $what:literal, $allowed:literal, { $($(#[$vmeta:meta])* $variant:ident => $word:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
        #[serde(rename_all = "lowercase")]
        #[non_exhaustive]
        pub enum $name {
            $($(#[$vmeta])* $variant),+
        }

        impl $name {
            /// Every value, in documentation order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The word that names this value.
            pub const fn as_str(&self) -> &'static str {
                match self { $($name::$variant => $word),+ }
            }
        }

        impl FromStr for $name {
            type Err = UnknownValue;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($word => Ok($name::$variant),)+
                    _ => Err(UnknownValue { what: $what, value: s.to_string(), allowed: $allowed }),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

word_enum!(
    /// How nodes are grouped into segments (one WireGuard peer each).
    Granularity, "mesh granularity", "location, full, cross", {
        /// One segment per location; one leader per location carries WireGuard traffic.
        Location => "location",
        /// Every node is its own segment: a full WireGuard mesh.
        Full => "full",
        /// WireGuard between nodes of different locations only (upstream PR #490).
        Cross => "cross",
    }
);

word_enum!(
    /// When traffic inside a location is encapsulated (IPIP).
    Encapsulation, "encapsulation", "never, crosssubnet, always", {
        /// Never encapsulate.
        Never => "never",
        /// Encapsulate only to nodes outside the local node's private subnet.
        CrossSubnet => "crosssubnet",
        /// Always encapsulate inside a location.
        Always => "always",
    }
);

word_enum!(
    /// Compatibility with another CNI running beside Kilo.
    Compatibility, "compatibility", "flannel, cilium", {
        /// Flannel: route inside a location through `flannel.1`.
        Flannel => "flannel",
        /// Cilium: IPIP through `cilium_tunl`, gateway the `cilium_host` address.
        Cilium => "cilium",
    }
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_values_list_the_valid_ones() {
        let err = "mesh".parse::<Granularity>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "mesh granularity \"mesh\" unknown; possible values are: location, full, cross"
        );
        assert_eq!("crosssubnet".parse(), Ok(Encapsulation::CrossSubnet));
        assert!("ipip".parse::<Compatibility>().is_err());
    }
}
