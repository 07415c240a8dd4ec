//! One lint policy for every crate that runs inside Envoy: each one's
//! `lib.rs` carries the same no-panic block as this crate's, so a crate
//! cannot drift out of it unnoticed (the registry once had none).

/// The `#![cfg_attr(not(test), deny(...))]` block of a crate root.
fn policy(lib_rs: &str) -> Option<&str> {
    let start = lib_rs.find("#![cfg_attr(\n    not(test),\n    deny(")?;
    let len = lib_rs[start..].find(")]\n")? + 3;
    Some(&lib_rs[start..start + len])
}

#[test]
fn every_crate_in_the_filters_denies_panics_the_same_way() {
    let ours = policy(include_str!("../src/lib.rs")).expect("filter-common has the block");
    for lint in ["unwrap_used", "expect_used", "panic", "indexing_slicing"] {
        assert!(ours.contains(&format!("clippy::{lint}")), "{lint} missing");
    }
    let crates = [
        ("tenant-auth", include_str!("../../tenant-auth/src/lib.rs")),
        ("llm-policy", include_str!("../../llm-policy/src/lib.rs")),
        ("admission", include_str!("../../admission/src/lib.rs")),
        ("llm-gateway", include_str!("../../gateway/src/lib.rs")),
        ("registry", include_str!("../../../registry/src/lib.rs")),
    ];
    for (name, lib_rs) in crates {
        assert_eq!(policy(lib_rs), Some(ours), "{name}'s lint block differs");
    }
}
