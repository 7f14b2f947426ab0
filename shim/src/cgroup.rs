//! The container's cgroup: created from the OCI spec's `linux.cgroupsPath`, given QEMU, read
//! for `crictl stats`, removed on delete. Both cgroup v1 (one folder per controller) and v2.
//!
//! Memory is deliberately *not* limited at the container level: the pod-level cgroup that the
//! kubelet sizes (guest memory + the RuntimeClass's `overhead.podFixed`) bounds QEMU, so QEMU's
//! own overhead is not charged against the guest's share. CPU shares and quota are applied.

use crate::bundle::Resources;
use crate::error::{Error, Result};
use containerd_shim_protos::cgroups::metrics::{
    CPUStat, CPUUsage, MemoryEntry, MemoryStat, Metrics, PidsStat,
};
use std::path::{Path, PathBuf};

/// v1 controllers the shim places QEMU in.
const V1_CONTROLLERS: &[&str] = &[
    "cpu", "cpuacct", "memory", "pids", "blkio", "freezer", "cpuset", "devices",
];

#[derive(Clone, Debug)]
pub enum Cgroup {
    /// Controller name → folder.
    V1(Vec<(String, PathBuf)>),
    V2(PathBuf),
}

/// Turns a cgroupsPath into a path below the hierarchy root: cgroupfs paths are used as they
/// are; systemd's `slice:prefix:name` form becomes the nested slices systemd would make.
fn relative_path(cgroups_path: &str) -> Result<PathBuf> {
    let parts: Vec<&str> = cgroups_path.split(':').collect();
    let path = match parts.as_slice() {
        [path] => PathBuf::from(path.trim_start_matches('/')),
        [slice, prefix, name] => {
            let mut path = PathBuf::new();
            let slice = slice.trim_end_matches(".slice");
            let mut acc = String::new();
            for part in slice.split('-').filter(|p| !p.is_empty()) {
                acc = if acc.is_empty() {
                    part.to_owned()
                } else {
                    format!("{acc}-{part}")
                };
                path.push(format!("{acc}.slice"));
            }
            path.push(format!("{prefix}-{name}.scope"));
            path
        }
        _ => {
            return Err(Error::CgroupPath {
                cgroups_path: cgroups_path.to_owned(),
                problem: "is neither a path nor systemd's slice:prefix:name",
            })
        }
    };
    if path
        .components()
        .any(|c| !matches!(c, std::path::Component::Normal(_)))
    {
        return Err(Error::CgroupPath {
            cgroups_path: cgroups_path.to_owned(),
            problem: "is not a plain path",
        });
    }
    Ok(path)
}

/// Where each v1 controller is mounted, from /proc/self/mounts.
fn v1_mounts() -> Vec<(String, PathBuf)> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let mut out = Vec::new();
    for line in mounts.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 4 || fields[2] != "cgroup" {
            continue;
        }
        for option in fields[3].split(',') {
            if V1_CONTROLLERS.contains(&option) {
                out.push((option.to_owned(), PathBuf::from(fields[1])));
            }
        }
    }
    out
}

/// Writes a cgroup file; a failure names the file and the value (the kernel's EINVAL or
/// ERANGE is about the value).
fn write(path: &Path, value: &str) -> Result<()> {
    std::fs::write(path, value).map_err(|source| Error::CgroupWrite {
        path: path.to_path_buf(),
        value: value.to_owned(),
        source,
    })
}

/// A failed `mkdir` of `path`: v1 makes one folder per controller, so the error names which.
fn create_error(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::CgroupCreate {
        path: path.to_path_buf(),
        source,
    }
}

fn read_u64(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

impl Cgroup {
    /// Creates the cgroup (parents included) and applies the CPU settings.
    pub fn create(cgroups_path: &str, resources: &Resources) -> Result<Self> {
        let relative = relative_path(cgroups_path)?;
        let cgroup = if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
            Cgroup::V2(Path::new("/sys/fs/cgroup").join(&relative))
        } else {
            Cgroup::V1(
                v1_mounts()
                    .into_iter()
                    .map(|(c, root)| (c, root.join(&relative)))
                    .collect(),
            )
        };
        match &cgroup {
            Cgroup::V2(dir) => {
                std::fs::create_dir_all(dir).map_err(create_error(dir))?;
                if let Some(cpu) = &resources.cpu {
                    if let Some(shares) = cpu.shares {
                        // The conversion runc uses from v1 shares to v2 weight.
                        let weight = 1 + ((shares.clamp(2, 262_144) - 2) * 9999) / 262_142;
                        write(&dir.join("cpu.weight"), &weight.to_string())?;
                    }
                    if let (Some(quota), period) =
                        (cpu.quota.filter(|q| *q > 0), cpu.period.unwrap_or(100_000))
                    {
                        write(&dir.join("cpu.max"), &format!("{quota} {period}"))?;
                    }
                }
            }
            Cgroup::V1(dirs) => {
                for (controller, dir) in dirs {
                    create_v1_dir(controller, dir)?;
                }
                if let (Some(cpu), Some((_, dir))) =
                    (&resources.cpu, dirs.iter().find(|(c, _)| c == "cpu"))
                {
                    if let Some(shares) = cpu.shares {
                        write(&dir.join("cpu.shares"), &shares.to_string())?;
                    }
                    if let Some(quota) = cpu.quota.filter(|q| *q > 0) {
                        write(
                            &dir.join("cpu.cfs_period_us"),
                            &cpu.period.unwrap_or(100_000).to_string(),
                        )?;
                        write(&dir.join("cpu.cfs_quota_us"), &quota.to_string())?;
                    }
                }
            }
        }
        Ok(cgroup)
    }

    /// Moves a process (all its threads) into the cgroup.
    pub fn add(&self, pid: u32) -> Result<()> {
        match self {
            Cgroup::V2(dir) => write(&dir.join("cgroup.procs"), &pid.to_string()),
            Cgroup::V1(dirs) => dirs
                .iter()
                .try_for_each(|(_, dir)| write(&dir.join("cgroup.procs"), &pid.to_string())),
        }
    }

    /// CPU, memory and pids figures in containerd's metrics message.
    pub fn metrics_v1(&self) -> Metrics {
        let mut metrics = Metrics::new();
        let dir_of = |name: &str| match self {
            Cgroup::V1(dirs) => dirs.iter().find(|(c, _)| c == name).map(|(_, d)| d.clone()),
            Cgroup::V2(dir) => Some(dir.clone()),
        };
        let mut cpu = CPUStat::new();
        let mut usage = CPUUsage::new();
        let mut memory = MemoryStat::new();
        let mut entry = MemoryEntry::new();
        let mut pids = PidsStat::new();
        match self {
            Cgroup::V1(_) => {
                if let Some(dir) = dir_of("cpuacct") {
                    usage.total = read_u64(&dir.join("cpuacct.usage")).unwrap_or(0);
                }
                if let Some(dir) = dir_of("memory") {
                    entry.usage = read_u64(&dir.join("memory.usage_in_bytes")).unwrap_or(0);
                    entry.max = read_u64(&dir.join("memory.max_usage_in_bytes")).unwrap_or(0);
                    entry.limit = read_u64(&dir.join("memory.limit_in_bytes")).unwrap_or(0);
                    let stat = std::fs::read_to_string(dir.join("memory.stat")).unwrap_or_default();
                    for line in stat.lines() {
                        let mut kv = line.split_whitespace();
                        let (Some(k), Some(v)) =
                            (kv.next(), kv.next().and_then(|v| v.parse::<u64>().ok()))
                        else {
                            continue;
                        };
                        match k {
                            "total_cache" => memory.total_cache = v,
                            "total_rss" => memory.total_rss = v,
                            "total_inactive_file" => memory.total_inactive_file = v,
                            "total_active_file" => memory.total_active_file = v,
                            "cache" => memory.cache = v,
                            "rss" => memory.rss = v,
                            _ => {}
                        }
                    }
                }
                if let Some(dir) = dir_of("pids") {
                    pids.current = read_u64(&dir.join("pids.current")).unwrap_or(0);
                }
            }
            Cgroup::V2(dir) => {
                let stat = std::fs::read_to_string(dir.join("cpu.stat")).unwrap_or_default();
                usage.total = stat
                    .lines()
                    .find_map(|l| l.strip_prefix("usage_usec "))
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .map_or(0, |us| us * 1000);
                entry.usage = read_u64(&dir.join("memory.current")).unwrap_or(0);
                let stat = std::fs::read_to_string(dir.join("memory.stat")).unwrap_or_default();
                for line in stat.lines() {
                    let mut kv = line.split_whitespace();
                    if let (Some("inactive_file"), Some(v)) =
                        (kv.next(), kv.next().and_then(|v| v.parse::<u64>().ok()))
                    {
                        memory.total_inactive_file = v;
                    }
                }
                pids.current = read_u64(&dir.join("pids.current")).unwrap_or(0);
            }
        }
        cpu.usage = Some(usage).into();
        memory.usage = Some(entry).into();
        metrics.cpu = Some(cpu).into();
        metrics.memory = Some(memory).into();
        metrics.pids = Some(pids).into();
        metrics
    }

    /// Removes the cgroup folders (they must be empty of processes).
    pub fn remove(&self) {
        let dirs: Vec<&PathBuf> = match self {
            Cgroup::V2(dir) => vec![dir],
            Cgroup::V1(dirs) => dirs.iter().map(|(_, d)| d).collect(),
        };
        for dir in dirs {
            if let Err(e) = std::fs::remove_dir(dir) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(path = %dir.display(), error = %e, "cannot remove cgroup");
                }
            }
        }
    }
}

/// Creates a v1 controller folder; cpuset folders start empty and must inherit their
/// parent's CPUs and memory nodes before a process may join.
fn create_v1_dir(controller: &str, dir: &Path) -> Result<()> {
    if controller == "cpuset" {
        let mut missing = Vec::new();
        let mut cursor = dir.to_path_buf();
        while !cursor.exists() {
            missing.push(cursor.clone());
            if !cursor.pop() {
                break;
            }
        }
        for d in missing.into_iter().rev() {
            std::fs::create_dir(&d)
                .or_else(|e| {
                    if e.kind() == std::io::ErrorKind::AlreadyExists {
                        Ok(())
                    } else {
                        Err(e)
                    }
                })
                .map_err(create_error(&d))?;
            if let Some(parent) = d.parent() {
                for file in ["cpuset.cpus", "cpuset.mems"] {
                    let value = std::fs::read_to_string(parent.join(file)).unwrap_or_default();
                    let current = std::fs::read_to_string(d.join(file)).unwrap_or_default();
                    if current.trim().is_empty() && !value.trim().is_empty() {
                        write(&d.join(file), value.trim())?;
                    }
                }
            }
        }
        Ok(())
    } else {
        std::fs::create_dir_all(dir).map_err(create_error(dir))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup_paths() {
        assert_eq!(
            relative_path("/kubepods/besteffort/pod1/abc").unwrap(),
            PathBuf::from("kubepods/besteffort/pod1/abc")
        );
        assert_eq!(
            relative_path("kubepods-besteffort-pod1.slice:cri-containerd:abc").unwrap(),
            PathBuf::from("kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1.slice/cri-containerd-abc.scope")
        );
        assert!(relative_path("/a/../../etc").is_err());
        assert!(relative_path("a:b").is_err());
    }

    /// The refusals name the cgroupsPath and what is wrong with it.
    #[test]
    fn a_bad_cgroups_path_is_named() {
        let e = relative_path("/a/../../etc").unwrap_err();
        assert!(matches!(e, Error::CgroupPath { .. }), "{e:?}");
        assert_eq!(
            e.to_string(),
            "cgroup: cgroupsPath \"/a/../../etc\" is not a plain path"
        );
        let e = relative_path("a:b").unwrap_err().to_string();
        assert!(e.contains("\"a:b\" is neither a path"), "{e}");
    }

    /// A failed write keeps the io::Error and names the file and the value.
    #[test]
    fn a_failed_write_keeps_its_cause() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("missing/cpu.max");
        let e = write(&file, "50000 100000").unwrap_err();
        let message = e.to_string();
        assert!(
            message.starts_with(&format!(
                "cgroup: writing \"50000 100000\" to {}: ",
                file.display()
            )),
            "{message}"
        );
        let source = std::error::Error::source(&e)
            .and_then(|s| s.downcast_ref::<std::io::Error>())
            .unwrap();
        assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
    }
}
