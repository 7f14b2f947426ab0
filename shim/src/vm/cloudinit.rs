//! Cloud-init data disks: NoCloud (volume label `cidata`) and ConfigDrive (`config-2`) ISO
//! images, from inline data or from the Secret volumes the kubelet mounted for the pod.

use crate::error::{Error, Result};
use nix::fcntl::{OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::Mode;
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use virtshim_api::config::{CloudInit, CloudInitData, CloudInitFormat};

/// Secret data larger than this is refused (cloud-init data is configuration, not content).
const MAX_SECRET_DATA: u64 = 16 << 20;

/// Who the guest is, for the meta-data.
#[derive(Clone, Debug)]
pub struct Identity {
    pub instance_id: String,
    pub hostname: String,
    /// SSH public keys (`spec.accessCredentials`, every value of every Secret in order), which
    /// cloud-init gives the default user: NoCloud's `public-keys`, ConfigDrive's `public_keys`,
    /// numbered "0", "1", … as KubeVirt writes them (so equal key names in two Secrets both count).
    pub public_keys: Vec<String>,
}

/// Every value of a mounted Secret holding SSH public keys, by key name (the kubelet's `..data`
/// bookkeeping entries skipped), each read as [`read_secret`] reads: inside the folder only.
pub fn read_public_keys(dir: &Path, disk: &str) -> Result<Vec<String>> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::Disk {
        disk: disk.to_owned(),
        message: format!(
            "the SSH key Secret volume {} cannot be read: {e}",
            dir.display()
        ),
    })?;
    let mut keys = BTreeMap::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        // Secret keys are [-._a-zA-Z0-9]+; the kubelet's own entries start with "..".
        let is_key = !name.starts_with("..")
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b));
        if !is_key {
            continue;
        }
        let value = read_secret(dir, [&name, &name], disk)?;
        keys.insert(name, value.trim().to_owned());
    }
    Ok(keys.into_values().collect())
}

/// Reads `key` (or its camel-case twin) from a mounted Secret folder. Symlinks are allowed
/// (the kubelet's atomic writer uses them) but cannot leave the folder.
fn read_secret(dir: &Path, keys: [&str; 2], disk: &str) -> Result<String> {
    let root = nix::fcntl::open(
        dir,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| Error::Disk {
        disk: disk.to_owned(),
        message: format!("the Secret volume {} cannot be opened: {e}", dir.display()),
    })?;
    for key in keys {
        let how = OpenHow::new()
            .flags(OFlag::O_RDONLY | OFlag::O_CLOEXEC)
            .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
        let Ok(fd) = nix::fcntl::openat2(&root, key, how) else {
            continue;
        };
        let mut text = String::new();
        std::fs::File::from(fd)
            .take(MAX_SECRET_DATA + 1)
            .read_to_string(&mut text)
            .map_err(|e| Error::Disk {
                disk: disk.to_owned(),
                message: format!("reading the Secret's {key}: {e}"),
            })?;
        if text.len() as u64 > MAX_SECRET_DATA {
            return Err(Error::Disk {
                disk: disk.to_owned(),
                message: format!("the Secret's {key} is larger than 16 MiB"),
            });
        }
        return Ok(text);
    }
    Err(Error::Disk {
        disk: disk.to_owned(),
        message: format!("the Secret has no key {} or {}", keys[0], keys[1]),
    })
}

/// `{"0": key, "1": key, …}`, KubeVirt's metadata map of public keys.
fn numbered(keys: &[String]) -> BTreeMap<String, &str> {
    keys.iter()
        .enumerate()
        .map(|(i, k)| (i.to_string(), k.as_str()))
        .collect()
}

fn data(
    source: &Option<CloudInitData>,
    keys: [&str; 2],
    secret_dir: &dyn Fn(&str) -> Option<PathBuf>,
    suffix: &str,
    disk: &str,
) -> Result<Option<String>> {
    match source {
        None => Ok(None),
        Some(CloudInitData::Inline(text)) => Ok(Some(text.clone())),
        Some(CloudInitData::Secret { name }) => {
            let volume = format!("{disk}-{suffix}");
            let dir = secret_dir(&volume).ok_or_else(|| Error::Disk {
                disk: disk.to_owned(),
                message: format!(
                    "the Secret {name:?} is not mounted into the pod (volume {volume})"
                ),
            })?;
            read_secret(&dir, keys, disk).map(Some)
        }
    }
}

/// Writes the ISO for `ci` to `out`, using `work` as scratch space.
pub fn build_iso(
    ci: &CloudInit,
    identity: &Identity,
    secret_dir: &dyn Fn(&str) -> Option<PathBuf>,
    work: &Path,
    out: &Path,
    disk: &str,
) -> Result<()> {
    let user = data(
        &ci.user_data,
        ["userdata", "userData"],
        secret_dir,
        "userdata",
        disk,
    )?;
    let network = data(
        &ci.network_data,
        ["networkdata", "networkData"],
        secret_dir,
        "networkdata",
        disk,
    )?;
    let _ = std::fs::remove_dir_all(work);
    let write = |rel: &str, text: &str| -> Result<()> {
        let path = work.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| Error::path("writing cloud-init data", parent, e))?;
        }
        std::fs::write(&path, text).map_err(|e| Error::path("writing cloud-init data", &path, e))
    };
    let label = match ci.format {
        CloudInitFormat::NoCloud => {
            let mut meta = format!(
                "instance-id: {}\nlocal-hostname: {}\n",
                serde_json::to_string(&identity.instance_id).unwrap_or_default(),
                serde_json::to_string(&identity.hostname).unwrap_or_default()
            );
            if !identity.public_keys.is_empty() {
                // JSON is YAML: every key and value quoted, whatever it holds.
                meta.push_str(&format!(
                    "public-keys: {}\n",
                    serde_json::to_string(&numbered(&identity.public_keys)).unwrap_or_default()
                ));
            }
            write("meta-data", &meta)?;
            write("user-data", user.as_deref().unwrap_or(""))?;
            if let Some(n) = &network {
                write("network-config", n)?;
            }
            "cidata"
        }
        CloudInitFormat::ConfigDrive => {
            let mut meta = serde_json::json!({
                "uuid": identity.instance_id,
                "hostname": identity.hostname,
                "name": identity.hostname,
            });
            if !identity.public_keys.is_empty() {
                meta["public_keys"] = serde_json::json!(numbered(&identity.public_keys));
            }
            write("openstack/latest/meta_data.json", &meta.to_string())?;
            if let Some(u) = &user {
                write("openstack/latest/user_data", u)?;
            }
            if let Some(n) = &network {
                write("openstack/latest/network_data.json", n)?;
            }
            "config-2"
        }
    };
    let tmp = out.with_extension("tmp");
    crate::command::run(
        "genisoimage",
        &[
            "-quiet".as_ref(),
            "-output".as_ref(),
            tmp.as_os_str(),
            "-volid".as_ref(),
            label.as_ref(),
            "-joliet".as_ref(),
            "-rock".as_ref(),
            work.as_os_str(),
        ],
    )?;
    let _ = std::fs::remove_dir_all(work);
    std::fs::rename(&tmp, out).map_err(|e| Error::path("writing the cloud-init disk", out, e))
}
