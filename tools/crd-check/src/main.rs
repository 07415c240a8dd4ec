//! `crd-check FILE=NAME...`: every Kueue and Gateway API object in the YAML
//! files against its kind's own type, generated from the kind's CRD
//! (`k8s-crds-kueue`, `gateway-api`): types, enums, required fields, and
//! fields the type lacks (an API server with strict field validation refuses
//! them; serde would drop them silently). One `FAIL:` line per problem,
//! naming the file, the object and the path; an `ok:` line when all pass.
//! Exit status 1 on any problem, 2 on a file that cannot be read.
//!
//! Run by `deploy/checks.py crd-kinds`, which builds it with
//! `tools/crd-check/install.sh`.

use std::collections::BTreeMap;
use std::process::ExitCode;

use serde::de::DeserializeOwned;
use serde_norway::Value;

/// The versions the cluster serves, one per group this project uses.
const KUEUE: &str = "kueue.x-k8s.io/v1beta2";
const GATEWAY_API: &str = "gateway.networking.k8s.io/v1";

#[derive(Debug, thiserror::Error)]
enum CheckError {
    #[error("{file}: {source}")]
    Read {
        file: String,
        source: std::io::Error,
    },
    #[error("{file}: not YAML: {source}")]
    Yaml {
        file: String,
        source: serde_norway::Error,
    },
}

/// serde_ignored's path (`spec.rules.0.?.name`) in serde_path_to_error's
/// form (`spec.rules[0].name`), so both kinds of problem read alike: `?` is
/// its step into an Option, not a field, and an index is bracketed.
fn field_path(ignored: &str) -> String {
    let mut out = String::new();
    for segment in ignored.split('.').filter(|s| *s != "?") {
        if !segment.is_empty() && segment.bytes().all(|b| b.is_ascii_digit()) {
            out.push_str(&format!("[{segment}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(segment);
        }
    }
    out
}

/// Problems of one object against its kind's type `T`.
fn typed_problems<T: DeserializeOwned>(doc: Value) -> Vec<String> {
    let mut unknown = Vec::new();
    let mut note = |path: serde_ignored::Path| {
        let path = field_path(&path.to_string());
        // The root's apiVersion and kind picked `T`.
        if path != "apiVersion" && path != "kind" {
            unknown.push(format!("{path}: no such field in the schema"));
        }
    };
    let parsed: Result<T, _> =
        serde_path_to_error::deserialize(serde_ignored::Deserializer::new(doc, &mut note));
    match parsed {
        Ok(_) => unknown,
        Err(e) => vec![format!("{}: {}", e.path(), e.inner())],
    }
}

/// The problems of one object, or None when its group is not one checked here.
fn problems(api_version: &str, kind: &str, doc: Value) -> Option<Vec<String>> {
    use gateway_api::{gateways::Gateway, httproutes::HTTPRoute};
    use k8s_crds_kueue::{
        clusterqueues::ClusterQueue, localqueues::LocalQueue, resourceflavors::ResourceFlavor,
    };
    let (group, _) = api_version.split_once('/').unwrap_or((api_version, ""));
    let served = match group {
        "kueue.x-k8s.io" => KUEUE,
        "gateway.networking.k8s.io" => GATEWAY_API,
        _ => return None,
    };
    if api_version != served {
        return Some(vec![format!(
            "{api_version}: the version served is {served}"
        )]);
    }
    Some(match (group, kind) {
        ("kueue.x-k8s.io", "ClusterQueue") => typed_problems::<ClusterQueue>(doc),
        ("kueue.x-k8s.io", "LocalQueue") => typed_problems::<LocalQueue>(doc),
        ("kueue.x-k8s.io", "ResourceFlavor") => typed_problems::<ResourceFlavor>(doc),
        ("gateway.networking.k8s.io", "Gateway") => typed_problems::<Gateway>(doc),
        ("gateway.networking.k8s.io", "HTTPRoute") => typed_problems::<HTTPRoute>(doc),
        _ => vec![format!(
            "no {kind} in {served} (or not one this project uses)"
        )],
    })
}

/// Checks one file: its problems, each naming `name` and the object, and
/// the count of objects checked by kind.
fn check_file(
    file: &str,
    name: &str,
    checked: &mut BTreeMap<String, usize>,
) -> Result<Vec<String>, CheckError> {
    let text = std::fs::read_to_string(file).map_err(|source| CheckError::Read {
        file: name.to_owned(),
        source,
    })?;
    let mut found = Vec::new();
    for document in serde_norway::Deserializer::from_str(&text) {
        let doc: Value =
            serde::Deserialize::deserialize(document).map_err(|source| CheckError::Yaml {
                file: name.to_owned(),
                source,
            })?;
        let api_version = doc["apiVersion"].as_str().unwrap_or_default().to_owned();
        let kind = doc["kind"].as_str().unwrap_or_default().to_owned();
        let object = doc["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let Some(problems) = problems(&api_version, &kind, doc) else {
            continue;
        };
        *checked.entry(kind.clone()).or_default() += 1;
        found.extend(
            problems
                .into_iter()
                .map(|p| format!("{name}: {kind}/{object}: {p}")),
        );
    }
    Ok(found)
}

fn main() -> ExitCode {
    let mut checked = BTreeMap::new();
    let mut failed = false;
    for arg in std::env::args().skip(1) {
        let (file, name) = arg.split_once('=').unwrap_or((&arg, &arg));
        match check_file(file, name, &mut checked) {
            Ok(problems) => {
                for problem in &problems {
                    println!("FAIL: {problem}");
                }
                failed |= !problems.is_empty();
            }
            Err(e) => {
                println!("FAIL: {e}");
                return ExitCode::from(2);
            }
        }
    }
    if checked.is_empty() {
        println!("FAIL: no Kueue or Gateway API object in the files given");
        return ExitCode::FAILURE;
    }
    if failed {
        return ExitCode::FAILURE;
    }
    let kinds: Vec<String> = checked.iter().map(|(k, n)| format!("{n} {k}")).collect();
    println!(
        "ok: {}: every field, type and enum fits {KUEUE} and {GATEWAY_API} (their CRDs' types)",
        kinds.join(", ")
    );
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::field_path;

    #[test]
    fn ignored_paths_read_as_deserialisation_paths() {
        assert_eq!(
            field_path("spec.rules.0.?.backendRefs.12.prot"),
            "spec.rules[0].backendRefs[12].prot"
        );
        assert_eq!(field_path("apiVersion"), "apiVersion");
    }
}
