//! Choosing KVM or TCG. A `/dev/kvm` that exists is not enough: on some hosts a KVM guest
//! hangs in the kernel. So the probe boots QEMU's firmware under KVM and waits for SeaBIOS to
//! print its banner on the debug port; silence within the time limit means TCG. The answer is
//! cached for the node's uptime in `<run>/accel`.
//!
//! `VIRTSHIM_ACCEL=kvm|tcg` (or the file `/etc/virtshim/accel`) forces a choice.

use crate::vm::domain_xml::Accel;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const PROBE_TIMEOUT: Duration = Duration::from_secs(4);

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
    match std::fs::read_to_string(&cache).ok().as_deref().map(str::trim) {
        Some("kvm") => return Accel::Kvm,
        Some("tcg") => return Accel::Tcg,
        _ => {}
    }
    let accel = if kvm_works(run_dir) { Accel::Kvm } else { Accel::Tcg };
    let _ = std::fs::create_dir_all(run_dir);
    let _ = std::fs::write(&cache, if accel == Accel::Kvm { "kvm\n" } else { "tcg\n" });
    tracing::info!(?accel, "accelerator probed");
    accel
}

fn kvm_works(run_dir: &Path) -> bool {
    if std::fs::OpenOptions::new().read(true).write(true).open("/dev/kvm").is_err() {
        return false;
    }
    let log = run_dir.join(format!("kvm-probe.{}.log", std::process::id()));
    let _ = std::fs::create_dir_all(run_dir);
    let child = Command::new("qemu-system-x86_64")
        .args(["-machine", "q35,accel=kvm", "-m", "32", "-nodefaults", "-nographic", "-display", "none", "-no-user-config", "-no-reboot"])
        .arg("-chardev")
        .arg(format!("file,id=dbg,path={}", log.display()))
        .args(["-device", "isa-debugcon,iobase=0x402,chardev=dbg"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    let Ok(mut child) = child else { return false };
    let started = Instant::now();
    let mut works = false;
    while started.elapsed() < PROBE_TIMEOUT {
        if std::fs::read_to_string(&log).is_ok_and(|t| t.contains("SeaBIOS")) {
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
