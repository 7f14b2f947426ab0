//! Choosing KVM or TCG. A `/dev/kvm` that exists is not enough: on some hosts a KVM guest runs
//! its firmware and then hangs as soon as the kernel switches modes, or QEMU aborts setting an
//! MSR. So the probe boots the node's own kernel (from /boot) under KVM with the host CPU model
//! and waits for it to print its banner on the serial port; silence within the time limit means
//! TCG. Without a kernel in /boot, the firmware alone is probed (a weaker test). The answer is
//! cached for the node's uptime in `<run>/accel`.
//!
//! `VIRTSHIM_ACCEL=kvm|tcg` (or the file `/etc/virtshim/accel`) forces a choice.

use crate::vm::domain_xml::Accel;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const PROBE_TIMEOUT: Duration = Duration::from_secs(6);

/// QEMU's cache of translated guest code under TCG, in MiB, when the node does not choose.
/// QEMU's own default reserves up to 1 GiB and keeps every page the guest's code touched; a
/// smaller cache is flushed and refilled as the guest runs, which costs time once the guest's
/// hot code no longer fits. The sweep in BENCHMARKS.md (`make bench ONLY=tbcache`) found no
/// boot time lost down to 8 MiB on the test guests, and 18–28 MiB of memory saved per VM below
/// 32 MiB; 16 keeps a margin for guests whose boot runs more code.
pub const DEFAULT_TB_CACHE_MIB: u32 = 16;

/// Where the node's administrator sets the cache's size (`VIRTSHIM_TCG_TB_CACHE_MIB` in
/// containerd's environment wins); `0` keeps QEMU's default.
pub const TB_CACHE_FILE: &str = "/etc/virtshim/tcg-tb-cache-mib";

/// The translated-code cache for TCG guests: `None` leaves QEMU's default.
pub fn tb_cache_mib() -> Option<u32> {
    let configured = std::env::var("VIRTSHIM_TCG_TB_CACHE_MIB")
        .ok()
        .or_else(|| std::fs::read_to_string(TB_CACHE_FILE).ok());
    parse_tb_cache(configured.as_deref())
}

fn parse_tb_cache(configured: Option<&str>) -> Option<u32> {
    match configured.map(str::trim) {
        None => Some(DEFAULT_TB_CACHE_MIB),
        Some("0") => None,
        Some(text) => match text.parse::<u32>() {
            // QEMU refuses less than a MiB; more than the node's memory is the admin's call.
            Ok(mib) if mib >= 1 => Some(mib),
            _ => {
                tracing::warn!(
                    value = text,
                    default = DEFAULT_TB_CACHE_MIB,
                    "the TCG translation cache size is not a number of MiB; using the default"
                );
                Some(DEFAULT_TB_CACHE_MIB)
            }
        },
    }
}

/// The accelerator to use, probing (once per boot) when not forced.
pub fn choose(run_dir: &Path) -> Accel {
    let forced = std::env::var("VIRTSHIM_ACCEL")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/virtshim/accel").ok())
        .map(|s| s.trim().to_ascii_lowercase());
    match forced.as_deref() {
        Some("kvm") => return Accel::Kvm,
        Some("tcg") => return Accel::Tcg,
        _ => {}
    }
    let cache = run_dir.join("accel");
    match std::fs::read_to_string(&cache)
        .ok()
        .as_deref()
        .map(str::trim)
    {
        Some("kvm") => return Accel::Kvm,
        Some("tcg") => return Accel::Tcg,
        _ => {}
    }
    let accel = if kvm_works(run_dir) {
        Accel::Kvm
    } else {
        Accel::Tcg
    };
    let _ = std::fs::create_dir_all(run_dir);
    let _ = std::fs::write(
        &cache,
        if accel == Accel::Kvm {
            "kvm\n"
        } else {
            "tcg\n"
        },
    );
    tracing::info!(?accel, "accelerator probed");
    accel
}

/// A kernel to probe with: the running one's image, else any in /boot.
fn host_kernel() -> Option<std::path::PathBuf> {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let own = Path::new("/boot").join(format!("vmlinuz-{}", release.trim()));
    if own.is_file() {
        return Some(own);
    }
    let mut kernels: Vec<_> = std::fs::read_dir("/boot")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz"))
        })
        .collect();
    kernels.sort();
    kernels.pop()
}

fn kvm_works(run_dir: &Path) -> bool {
    if std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_err()
    {
        return false;
    }
    let log = run_dir.join(format!("kvm-probe.{}.log", std::process::id()));
    let _ = std::fs::create_dir_all(run_dir);
    let mut command = Command::new("qemu-system-x86_64");
    command.args([
        "-machine",
        "q35,accel=kvm",
        "-cpu",
        "host",
        "-m",
        "128",
        "-nodefaults",
        "-nographic",
        "-display",
        "none",
        "-no-user-config",
        "-no-reboot",
    ]);
    let banner = match host_kernel() {
        Some(kernel) => {
            command
                .arg("-kernel")
                .arg(kernel)
                .args(["-append", "console=ttyS0 earlyprintk=serial,ttyS0 panic=-1"]);
            command
                .arg("-serial")
                .arg(format!("file:{}", log.display()));
            "Linux version"
        }
        None => {
            command
                .arg("-chardev")
                .arg(format!("file,id=dbg,path={}", log.display()));
            command.args(["-device", "isa-debugcon,iobase=0x402,chardev=dbg"]);
            "SeaBIOS"
        }
    };
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    let Ok(mut child) = child else { return false };
    let started = Instant::now();
    let mut works = false;
    while started.elapsed() < PROBE_TIMEOUT {
        if std::fs::read_to_string(&log).is_ok_and(|t| t.contains(banner)) {
            works = true;
            break;
        }
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_file(&log);
    works
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_translation_cache_is_the_default_unless_the_node_sets_it() {
        assert_eq!(parse_tb_cache(None), Some(DEFAULT_TB_CACHE_MIB));
        assert_eq!(parse_tb_cache(Some("64\n")), Some(64));
        assert_eq!(parse_tb_cache(Some("0")), None);
        assert_eq!(parse_tb_cache(Some("lots")), Some(DEFAULT_TB_CACHE_MIB));
        assert_eq!(parse_tb_cache(Some("-5")), Some(DEFAULT_TB_CACHE_MIB));
    }
}
