//! `containerd-shim-virtshim-v2`: the containerd shim (runtime v2, task API v2) that runs a
//! pod's VMI as a libvirt/QEMU domain. containerd starts it for the runtime type
//! `io.containerd.virtshim.v2`; see DESIGN.md ("The shim").

use std::io::Write;
use virtshim_shim::{accel, libvirt, lifecycle, paths, vm};

fn main() {
    match std::env::args().nth(1).as_deref() {
        Some("--version") => {
            println!("containerd-shim-virtshim-v2 {}", env!("CARGO_PKG_VERSION"));
            return;
        }
        // For the node installer: which accelerator VMs will get here (probed, then cached
        // for the node's uptime in the run directory, exactly as a VM's start does).
        Some("--probe-accel") => {
            let roots = paths::Roots::from_env();
            let accel = accel::choose(&roots.run);
            println!(
                "{}",
                if accel == vm::domain_xml::Accel::Kvm {
                    "kvm"
                } else {
                    "tcg"
                }
            );
            return;
        }
        // For the node installer and the fresh-machine check: libvirt's embedded QEMU driver
        // opens here, as it must for every VM.
        Some("--check-node") => {
            let roots = paths::Roots::from_env();
            match libvirt::check_node(&roots.run, &roots.capabilities_cache()) {
                Ok(line) => println!("{line}"),
                Err(e) => {
                    eprintln!("containerd-shim-virtshim-v2: node check failed: {e}");
                    std::process::exit(1);
                }
            }
            return;
        }
        _ => {}
    }
    init_logging();
    let config = containerd_shim::Config {
        // The shim reaps only QEMU (by pid): a catch-all reaper would steal the children that
        // libvirt waits for itself.
        no_reaper: true,
        no_setup_logger: true,
        ..Default::default()
    };
    containerd_shim::run::<lifecycle::VirtShim>("io.containerd.virtshim.v2", Some(config));
}

/// Logs go to the `log` FIFO containerd opens in the bundle (they appear in containerd's log),
/// else to stderr. `VIRTSHIM_LOG` sets the filter (default `info`).
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("VIRTSHIM_LOG")
        .unwrap_or_else(|_| "info".into());
    let fifo = std::fs::OpenOptions::new().write(true).open("log").ok();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_target(false);
    match fifo {
        Some(file) => {
            let file = std::sync::Mutex::new(file);
            builder.with_writer(file).init();
        }
        None => builder.with_writer(std::io::stderr).init(),
    }
    let _ = std::io::stderr().flush();
}
