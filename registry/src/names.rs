//! The registry's names as types: a tenant id, a tier, a pool and a model
//! are all strings on the wire, but one is never another, and the compiler
//! now says so (a pool name passed where a tier is wanted does not build).
//! Each is the string itself (`serde(transparent)`), reads as `&str`
//! (`Deref`, `AsRef`), and looks up maps keyed by it with a plain `&str`
//! (`Borrow<str>`), so code that only reads a name stays as it was.

use std::borrow::Borrow;
use std::fmt;
use std::ops::Deref;

use serde::{Deserialize, Serialize};

macro_rules! name {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub fn new(name: impl Into<String>) -> Self {
                Self(name.into())
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl Deref for $name {
            type Target = str;

            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<String> for $name {
            fn from(name: String) -> Self {
                Self(name)
            }
        }

        impl From<&str> for $name {
            fn from(name: &str) -> Self {
                Self(name.to_owned())
            }
        }

        impl PartialEq<String> for $name {
            fn eq(&self, other: &String) -> bool {
                &self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }

        impl PartialEq<$name> for &str {
            fn eq(&self, other: &$name) -> bool {
                *self == other.0
            }
        }
    };
}

name!(
    /// A tenant's id (`tenants[].id`).
    TenantId
);
name!(
    /// A tier's name (the keys of `[tiers]`, `tenants[].tier`).
    TierName
);
name!(
    /// A pool's name (the keys of `[pools]`, `tiers.*.pools`, `tenants[].pools`).
    PoolName
);
name!(
    /// A model's served name (the keys of `[models]`).
    ModelName
);

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn a_name_is_its_string_on_the_wire_and_in_lookups() {
        let id: TenantId = serde_json::from_str("\"acme\"").unwrap();
        assert_eq!(id, "acme");
        assert_eq!(serde_json::to_string(&id).unwrap(), "\"acme\"");
        let pools: BTreeMap<PoolName, u32> = [(PoolName::new("latency"), 1)].into();
        assert_eq!(pools.get("latency"), Some(&1));
        assert_eq!(format!("{id}"), "acme");
        assert!(id.starts_with("ac"));
    }
}
