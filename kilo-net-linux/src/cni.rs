//! The CNI configuration update (upstream 9.5, `--cni=true`): keep the host-local IPAM ranges of
//! the conflist equal to the node's pod CIDRs (one range set per family on a dual-stack node).

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use kilo_core::Cidr;
use serde_json::{Value, json};

/// Upstream's default conflist path.
pub const DEFAULT_CNI_PATH: &str = "/etc/cni/net.d/10-kilo.conflist";

/// Why the CNI configuration could not be updated. Every variant names the file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CniError {
    /// The file could not be read.
    #[error("cannot read CNI configuration {}: {message}", path.display())]
    Read {
        /// The conflist path.
        path: PathBuf,
        /// The I/O error.
        message: String,
    },
    /// The file is not JSON.
    #[error("CNI configuration {} is not valid JSON: {message}", path.display())]
    Parse {
        /// The conflist path.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
    /// The file has no `plugins` array.
    #[error("CNI configuration {} has no \"plugins\" array", path.display())]
    NoPlugins {
        /// The conflist path.
        path: PathBuf,
    },
    /// No plugin has an `ipam` object.
    #[error("CNI configuration {} has no plugin with an \"ipam\" object: failed to find IPAM configuration", path.display())]
    NoIpam {
        /// The conflist path.
        path: PathBuf,
    },
    /// The file could not be written.
    #[error("cannot write CNI configuration {}: {message}", path.display())]
    Write {
        /// The conflist path.
        path: PathBuf,
        /// The I/O error.
        message: String,
    },
}

/// The conflist's current pod CIDR: the first `ipam.ranges[*][*].subnet` among plugins whose
/// `ipam.type` is set (host-local semantics), as written (host bits kept). `None` when there is
/// none or it does not parse.
pub fn current_pod_cidr(conflist: &Value) -> Option<Cidr> {
    current_pod_cidrs(conflist).into_iter().next()
}

/// The conflist's current pod CIDRs: the first subnet of each range set of `ipam.ranges` (one
/// set per family on a dual-stack node) of the first plugin whose `ipam.type` is set, as written.
/// Empty when there is none; range sets without a subnet that parses are skipped.
pub fn current_pod_cidrs(conflist: &Value) -> Vec<Cidr> {
    let Some(plugins) = conflist.get("plugins").and_then(Value::as_array) else {
        return Vec::new();
    };
    let Some(ipam) = plugins
        .iter()
        .filter_map(|p| p.get("ipam"))
        .find(|ipam| ipam.get("type").and_then(Value::as_str).is_some_and(|t| !t.is_empty()))
    else {
        return Vec::new();
    };
    ipam.get("ranges")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_array)
        .filter_map(|set| set.iter().find_map(|r| r.get("subnet")?.as_str()?.parse().ok()))
        .collect()
}

/// Sets `ipam.ranges = [[{"subnet": POD_CIDR}]]` in every plugin that has an `ipam` object.
/// `path` only names the file in errors.
pub fn set_pod_cidr(conflist: &mut Value, pod_cidr: Cidr, path: &Path) -> Result<(), CniError> {
    set_pod_cidrs(conflist, &[pod_cidr], path)
}

/// Sets `ipam.ranges = [[{"subnet": CIDR1}], [{"subnet": CIDR2}]]` (one range set per pod CIDR,
/// as host-local takes a dual-stack node's ranges) in every plugin that has an `ipam` object.
/// `path` only names the file in errors.
pub fn set_pod_cidrs(
    conflist: &mut Value,
    pod_cidrs: &[Cidr],
    path: &Path,
) -> Result<(), CniError> {
    let ranges: Vec<Value> =
        pod_cidrs.iter().map(|c| json!([{ "subnet": c.to_string() }])).collect();
    let plugins = conflist
        .get_mut("plugins")
        .and_then(Value::as_array_mut)
        .ok_or_else(|| CniError::NoPlugins { path: path.to_path_buf() })?;
    let mut found = false;
    for ipam in
        plugins.iter_mut().filter_map(|p| p.get_mut("ipam")).filter_map(Value::as_object_mut)
    {
        ipam.insert("ranges".to_string(), Value::Array(ranges.clone()));
        found = true;
    }
    if found { Ok(()) } else { Err(CniError::NoIpam { path: path.to_path_buf() }) }
}

/// Compact JSON with every object's keys sorted, as upstream's Go map marshalling writes it.
pub fn render(conflist: &Value) -> String {
    let mut sorted = conflist.clone();
    sorted.sort_all_objects();
    sorted.to_string()
}

/// Brings the conflist at `path` to `pod_cidrs` (upstream `updateCNIConfig`, which has one):
/// when its current CIDRs already equal `pod_cidrs` nothing is written; otherwise the ranges
/// are rewritten and the file replaced atomically (compact, keys sorted, mode 0644). Returns
/// whether it wrote.
pub fn update_cni_config(path: &Path, pod_cidrs: &[Cidr]) -> Result<bool, CniError> {
    let text = fs::read_to_string(path)
        .map_err(|e| CniError::Read { path: path.to_path_buf(), message: e.to_string() })?;
    let mut conflist: Value = serde_json::from_str(&text)
        .map_err(|e| CniError::Parse { path: path.to_path_buf(), message: e.to_string() })?;
    if current_pod_cidrs(&conflist) == pod_cidrs {
        return Ok(false);
    }
    set_pod_cidrs(&mut conflist, pod_cidrs, path)?;
    write_atomically(path, render(&conflist).as_bytes())?;
    Ok(true)
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), CniError> {
    let err =
        |e: std::io::Error| CniError::Write { path: path.to_path_buf(), message: e.to_string() };
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.kilo-{}.tmp", std::process::id()));
    let result = (|| {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o644)
            .open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::set_permissions(&tmp, fs::Permissions::from_mode(0o644))?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(err)
}
