//! `make bench`: boot time through containerd's CRI and the virtshim shim, beside bare QEMU on
//! the same guest, as a ratio measured in one run; and the shim's memory per VM.
//!
//! For each guest (kernelBoot, containerDisk) it alternates N shim runs and N bare runs and
//! prints medians. A shim run is timed from the CRI StartContainer call of the compute
//! container to the guest's marker line in the CRI log (polled every 5 ms); a bare run from
//! spawning `qemu-system-x86_64` to the marker on its serial output. It reports; it asserts
//! nothing (this machine is noisy), and exits non-zero only when something fails to run.

#![allow(clippy::unwrap_used)]

mod cluster;
mod density;
mod limits;
mod percentiles;
mod throughput;

use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use virtctl::cri::blocking::BlockingCri;
use virtctl::local;
use virtshim_api::manifest::parse_documents;
use virtshim_tests::containerd::PrivateContainerd;
use virtshim_tests::vm::{self, READY_MARKER};

const POLL: Duration = Duration::from_millis(5);
const TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Guest {
    KernelBoot,
    ContainerDisk,
}

impl Guest {
    fn label(self) -> &'static str {
        match self {
            Guest::KernelBoot => "kernelBoot",
            Guest::ContainerDisk => "containerDisk",
        }
    }

    fn vmi(self, name: &str) -> String {
        // No NIC and no cloud-init, so that the bare QEMU below runs the same guest workload.
        match self {
            Guest::KernelBoot => vm::kernel_boot_vmi(
                &format!("name: {name}"),
                "256Mi",
                "autoattachPodInterface: false",
                "console=ttyS0",
                "",
            ),
            Guest::ContainerDisk => format!(
                "apiVersion: kubevirt.io/v1\nkind: VirtualMachineInstance\nmetadata: {{name: {name}}}\nspec:\n  domain:\n    memory: {{guest: 256Mi}}\n"
            ) + &format!(
                "    devices:\n      autoattachPodInterface: false\n      disks: [{{name: root, disk: {{bus: virtio}}}}]\n  volumes:\n  - {{name: root, containerDisk: {{image: '{}'}}}}\n",
                vm::CONTAINER_DISK_IMAGE
            ),
        }
    }
}

/// Waits until `file` contains `marker`, reading only new bytes; the instant it was seen.
fn wait_in_file(file: &Path, marker: &str, since: Instant) -> Result<Instant, String> {
    let mut offset = 0u64;
    let mut tail = String::new();
    while since.elapsed() < TIMEOUT {
        if let Ok(mut f) = std::fs::File::open(file) {
            if f.seek(SeekFrom::Start(offset)).is_ok() {
                let mut buf = String::new();
                if let Ok(n) = f.read_to_string(&mut buf) {
                    offset += n as u64;
                    tail.push_str(&buf);
                    if tail.contains(marker) {
                        return Ok(Instant::now());
                    }
                    let keep = tail.len().saturating_sub(marker.len());
                    tail.drain(..tail.floor_char_boundary(keep));
                }
            }
        }
        std::thread::sleep(POLL);
    }
    Err(format!(
        "no {marker:?} in {} within {TIMEOUT:?}",
        file.display()
    ))
}

/// One shim run: the time from StartContainer to the marker, and the shim's and QEMU's RSS.
/// Memory figures of one run, in KiB.
#[derive(Clone, Copy, Debug, Default)]
struct Memory {
    shim_rss: u64,
    shim_private: u64,
    qemu_rss: u64,
    /// QEMU's memory that is not guest RAM: its RSS less the resident part of the guest-RAM
    /// mapping (what the guest has touched).
    qemu_overhead: u64,
    /// The same, private pages only (USS less the guest RAM's): what one more VM costs the
    /// node, the libraries' pages being shared by every QEMU.
    qemu_private_overhead: u64,
}

impl Memory {
    fn from_qemu(overhead: QemuOverhead) -> Self {
        Self {
            qemu_overhead: overhead.rss,
            qemu_private_overhead: overhead.private,
            ..Self::default()
        }
    }
}

/// QEMU's memory beyond its guest's RAM, read from one smaps.
#[derive(Clone, Copy, Debug)]
struct QemuOverhead {
    rss: u64,
    private: u64,
}

/// The guest RAM is one anonymous mapping of exactly the guest's size; its resident part is
/// the RAM the guest has touched, everything else QEMU holds is overhead.
/// A reading that fails is an error, never a zero printed as a figure.
fn qemu_overhead_kib(pid: u32, guest_kib: u64) -> Result<QemuOverhead, String> {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps"))
        .map_err(|e| format!("reading QEMU's smaps (pid {pid}): {e}"))?;
    let mut size = 0;
    let (mut ram_rss, mut ram_private, mut private) = (0, 0, 0);
    let mut ram_mappings = 0;
    for line in smaps.lines() {
        let mut words = line.split_whitespace();
        match (
            words.next(),
            words.next().and_then(|v| v.parse::<u64>().ok()),
        ) {
            (Some("Size:"), Some(v)) => {
                size = v;
                if v == guest_kib {
                    ram_mappings += 1;
                }
            }
            (Some("Rss:"), Some(v)) if size == guest_kib => ram_rss += v,
            (Some("Private_Clean:" | "Private_Dirty:"), Some(v)) => {
                private += v;
                if size == guest_kib {
                    ram_private += v;
                }
            }
            _ => {}
        }
    }
    if ram_mappings == 0 {
        return Err(format!(
            "QEMU (pid {pid}) has no mapping of the guest's {guest_kib} KiB of RAM"
        ));
    }
    Ok(QemuOverhead {
        rss: rss_kib(pid)?.saturating_sub(ram_rss),
        private: private.saturating_sub(ram_private),
    })
}

fn shim_run(
    containerd: &PrivateContainerd,
    cri: &BlockingCri,
    guest: Guest,
    run: usize,
) -> Result<(Duration, Memory), String> {
    let plan = local::plan(
        parse_documents(&guest.vmi(&format!("bench-{run}")))
            .remove(0)
            .map_err(|e| e.to_string())?,
    )
    .map_err(|e| e.to_string())?;
    let mut sandbox = local::sandbox_config(&plan);
    // The bench's own containerd keeps its pods' logs in its own folder, never where a kubelet
    // on the node would delete them as orphans.
    sandbox.log_directory = containerd
        .pod_log_dir(&plan.uid)
        .to_string_lossy()
        .into_owned();
    std::fs::create_dir_all(&sandbox.log_directory).map_err(|e| e.to_string())?;
    let sandbox_id = cri
        .run_pod_sandbox(sandbox.clone(), "virtshim")
        .map_err(|e| e.to_string())?;
    let result = (|| {
        let config = vm::compute_config(&plan)?;
        let id = cri
            .create_container(&sandbox_id, config, sandbox.clone())
            .map_err(|e| e.to_string())?;
        let log = PathBuf::from(&sandbox.log_directory).join("compute/0.log");
        let started = Instant::now();
        cri.start_container(&id)
            .map_err(|e| format!("{e}\n{}", containerd.log_tail()))?;
        let seen = wait_in_file(&log, READY_MARKER, started)?;
        let qemu = match vm::qemu_pids(&sandbox_id).as_slice() {
            [pid] => *pid,
            other => {
                return Err(format!(
                    "expected one QEMU for pod {sandbox_id}, found {other:?}"
                ))
            }
        };
        // Read when the guest is up: what its boot made QEMU keep.
        let memory = Memory {
            qemu_rss: rss_kib(qemu)?,
            ..Memory::from_qemu(qemu_overhead_kib(qemu, GUEST_RAM_KIB)?)
        };
        Ok((seen - started, memory))
    })();
    let _ = cri.stop_pod_sandbox(&sandbox_id);
    let _ = cri.remove_pod_sandbox(&sandbox_id);
    result
}

fn rss_kib(pid: u32) -> Result<u64, String> {
    smaps(pid, &["Rss:"])
}

/// Private memory (USS): what one more VM's shim adds, since the libraries' pages are shared
/// by every shim on the node.
fn private_kib(pid: u32) -> Result<u64, String> {
    smaps(pid, &["Private_Clean:", "Private_Dirty:"])
}

/// The sum of the named fields of /proc/PID/smaps_rollup, in KiB: an error when the file
/// cannot be read or names none of them (a failed reading must not print as zero).
fn smaps(pid: u32, fields: &[&str]) -> Result<u64, String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .map_err(|e| format!("reading /proc/{pid}/smaps_rollup: {e}"))?;
    let values: Vec<u64> = text
        .lines()
        .filter_map(|l| {
            let field = fields.iter().find(|f| l.starts_with(**f))?;
            l[field.len()..]
                .split_whitespace()
                .next()?
                .parse::<u64>()
                .ok()
        })
        .collect();
    if values.is_empty() {
        return Err(format!("/proc/{pid}/smaps_rollup has none of {fields:?}"));
    }
    Ok(values.iter().sum())
}

/// A process's CPU time (user and system), from /proc/PID/stat.
fn cpu_time(pid: u32) -> Result<Duration, String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_err(|e| format!("reading /proc/{pid}/stat: {e}"))?;
    // Fields after the command (which may hold spaces) start at the state, field 3.
    let after = stat
        .rsplit_once(") ")
        .map(|(_, rest)| rest)
        .ok_or_else(|| format!("an unreadable /proc/{pid}/stat"))?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| -> Result<u64, String> {
        fields
            .get(i)
            .and_then(|f| f.parse().ok())
            .ok_or_else(|| format!("no field {} in /proc/{pid}/stat", i + 3))
    };
    // utime is field 14, stime 15; `fields[0]` is field 3. /proc counts in USER_HZ, which
    // Linux's ABI fixes at 100 a second.
    Ok(Duration::from_millis((ticks(11)? + ticks(12)?) * 10))
}

/// The parent of a process (a VM's QEMU's is its pod's shim, the subreaper it was left to).
fn parent_pid(pid: u32) -> Result<u32, String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_err(|e| format!("reading /proc/{pid}/stat: {e}"))?;
    // "pid (comm) state ppid …": comm may hold spaces, so read after its closing parenthesis.
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().nth(1))
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| format!("no parent in /proc/{pid}/stat"))
}

/// One bare QEMU run of the same guest: spawn to marker on the serial port.
/// Boots `guest` on QEMU alone, as its own command line would; `tb_cache_mib` sizes TCG's
/// translated-code cache (`None`: QEMU's default).
fn bare_run(
    guest: Guest,
    images: &Path,
    scratch: &Path,
    tb_cache_mib: Option<u32>,
) -> Result<Duration, String> {
    let mut qemu = Command::new("qemu-system-x86_64");
    let accel = match tb_cache_mib {
        Some(mib) => format!("tcg,tb-size={mib}"),
        None => "tcg".to_owned(),
    };
    qemu.args([
        "-machine",
        "q35",
        "-accel",
        &accel,
        "-cpu",
        "qemu64",
        "-m",
        "256",
        "-smp",
        "1",
        "-nodefaults",
        "-no-user-config",
    ])
    .args([
        "-display",
        "none",
        "-serial",
        "stdio",
        "-vga",
        "std",
        "-no-reboot",
    ]);
    match guest {
        Guest::KernelBoot => {
            qemu.arg("-kernel")
                .arg(images.join("vmlinuz"))
                .arg("-initrd")
                .arg(images.join("initrd.img"));
            qemu.args(["-append", "console=ttyS0"]);
        }
        Guest::ContainerDisk => {
            let overlay = scratch.join("overlay.qcow2");
            let _ = std::fs::remove_file(&overlay);
            let status = Command::new("qemu-img")
                .args(["create", "-q", "-f", "qcow2", "-F", "qcow2", "-b"])
                .arg(images.join("guest.qcow2"))
                .arg(&overlay)
                .status()
                .map_err(|e| e.to_string())?;
            if !status.success() {
                return Err("qemu-img create failed".into());
            }
            qemu.arg("-drive")
                .arg(format!("file={},if=virtio,format=qcow2", overlay.display()));
        }
    }
    let started = Instant::now();
    let mut child = qemu
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| e.to_string())?;
    let stdout = child.stdout.take().unwrap();
    let mut reader = BufReader::new(stdout);
    let mut line = Vec::new();
    let mut found = None;
    while started.elapsed() < TIMEOUT {
        line.clear();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                if String::from_utf8_lossy(&line).contains(READY_MARKER) {
                    found = Some(started.elapsed());
                    break;
                }
            }
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    found.ok_or_else(|| "bare QEMU never printed the marker".into())
}

/// The guests' RAM (`memory.guest` of the bench's VMIs, `-m` of bare QEMU).
const GUEST_RAM_KIB: u64 = 256 * 1024;

/// Size of the file both HTTP servers serve.
const BIG_MIB: usize = 16;
const BUSYBOX: &str = "localhost/virtshim/busybox:bench";

/// Downloads `/big` from `ip`:80 (the node sits on the pods' bridge, as a peer pod does);
/// the throughput in MiB/s.
fn download(ip: &str) -> Result<f64, String> {
    use std::io::Write;
    let started = Instant::now();
    let mut stream = std::net::TcpStream::connect_timeout(
        &format!("{ip}:80").parse().map_err(|e| format!("{e}"))?,
        Duration::from_secs(5),
    )
    .map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .map_err(|e| e.to_string())?;
    stream
        .write_all(b"GET /big HTTP/1.0\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut total = 0usize;
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        match std::io::Read::read(&mut stream, &mut buf) {
            Ok(0) => break,
            Ok(n) => total += n,
            Err(e) => return Err(e.to_string()),
        }
    }
    if total < BIG_MIB << 20 {
        return Err(format!("only {total} bytes from {ip}"));
    }
    Ok(total as f64 / (1 << 20) as f64 / started.elapsed().as_secs_f64())
}

fn median_f64(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Downloads `/big` from each server `PEER_ROUNDS` times from a client runc pod on the same
/// bridge (busybox nc, timed by the pod's /proc/uptime at 10 ms resolution over the rounds);
/// the throughputs in MiB/s.
fn peer_download_rates(
    containerd: &PrivateContainerd,
    cri: &BlockingCri,
    guest_ip: &str,
    runc_ip: &str,
) -> Result<(f64, f64), String> {
    const PEER_ROUNDS: usize = 20;
    let script = format!(
        r#"cs() {{ read u rest < /proc/uptime; echo "${{u%.*}}${{u#*.}}"; }}
for target in {guest_ip} {runc_ip}; do
  t0=$(cs); bytes=0; i=0
  while [ $i -lt {PEER_ROUNDS} ]; do
    n=$(printf 'GET /big HTTP/1.0

' | /bin/busybox nc $target 80 | /bin/busybox wc -c)
    bytes=$((bytes + n)); i=$((i + 1))
  done
  t1=$(cs); echo "RATE $target $bytes $((t1 - t0))"
done"#
    );
    let uid = format!("bench-peer-{}", std::process::id());
    let (code, output) = virtshim_tests::peer::run_to_completion(
        containerd,
        cri,
        &uid,
        BUSYBOX,
        &["/bin/busybox", "sh", "-c", &script],
        Duration::from_secs(300),
    );
    if code != Some(0) {
        return Err(format!("the peer client failed ({code:?}): {output}"));
    }
    let rate = |ip: &str| -> Result<f64, String> {
        let line = output
            .lines()
            .find(|l| l.starts_with(&format!("RATE {ip} ")))
            .ok_or_else(|| format!("no rate for {ip}: {output}"))?;
        let fields: Vec<u64> = line
            .split_whitespace()
            .skip(2)
            .filter_map(|f| f.parse().ok())
            .collect();
        let [bytes, centis] = fields[..] else {
            return Err(format!("unreadable: {line}"));
        };
        if bytes < (PEER_ROUNDS * (BIG_MIB << 20)) as u64 {
            return Err(format!("short downloads from {ip}: {line}"));
        }
        Ok(bytes as f64 / (1 << 20) as f64 / (centis.max(1) as f64 / 100.0))
    };
    Ok((rate(guest_ip)?, rate(runc_ip)?))
}

/// Download throughputs in MiB/s: (VM guest, runc pod).
type Rates = (f64, f64);

/// HTTP throughput from the VM's guest and from a runc pod on the same bridge, same file:
/// downloaded by the node and by a peer pod.
fn network_throughput(
    containerd: &PrivateContainerd,
    cri: &BlockingCri,
) -> Result<(Rates, Rates), String> {
    let yaml = vm::kernel_boot_vmi(
        "name: netbench",
        "256Mi",
        "disks: [{name: ci, disk: {bus: virtio}}]",
        "console=ttyS0",
        &format!("  volumes:\n  - name: ci\n    cloudInitNoCloud: {{userData: \"#!/bin/sh\\ndd if=/dev/urandom of=/www/big bs=1M count={BIG_MIB} 2>/dev/null && echo BIG-READY\\n\"}}\n"),
    );
    let plan = local::plan(
        parse_documents(&yaml)
            .remove(0)
            .map_err(|e| e.to_string())?,
    )
    .map_err(|e| e.to_string())?;
    let vm = local::run(cri, &plan).map_err(|e| e.to_string())?;
    let result = (|| {
        wait_in_file(&vm.console_log(), "BIG-READY", Instant::now())?;
        let ip = cri
            .pod_sandbox_status(&vm.sandbox_id, false)
            .map_err(|e| e.to_string())?
            .status
            .and_then(|s| s.network)
            .map(|n| n.ip)
            .unwrap_or_default();
        // The runc pod serving the same file from busybox httpd.
        let image = virtshim_tests::oci::busybox_image(BUSYBOX, &["/bin/busybox"])
            .map_err(|e| e.to_string())?;
        containerd.import_image(&image).map_err(|e| e.to_string())?;
        let uid = format!("bench-runc-{}", std::process::id());
        let sandbox = virtctl::cri::api::PodSandboxConfig {
            metadata: Some(virtctl::cri::api::PodSandboxMetadata {
                name: "runc-http".into(),
                uid: uid.clone(),
                namespace: "bench".into(),
                attempt: 0,
            }),
            log_directory: containerd.pod_log_dir(&uid).to_string_lossy().into_owned(),
            linux: Some(virtctl::cri::api::LinuxPodSandboxConfig::default()),
            ..Default::default()
        };
        let pod = cri
            .run_pod_sandbox(sandbox.clone(), "")
            .map_err(|e| e.to_string())?;
        let served = (|| {
            let script = format!("/bin/busybox mkdir -p /www && /bin/busybox dd if=/dev/urandom of=/www/big bs=1M count={BIG_MIB} 2>/dev/null && exec /bin/busybox httpd -f -p 80 -h /www");
            let config = virtctl::cri::api::ContainerConfig {
                metadata: Some(virtctl::cri::api::ContainerMetadata {
                    name: "httpd".into(),
                    attempt: 0,
                }),
                image: Some(virtctl::cri::image_spec(BUSYBOX)),
                command: vec!["/bin/busybox".into(), "sh".into(), "-c".into(), script],
                log_path: "httpd/0.log".into(),
                ..Default::default()
            };
            let id = cri
                .create_container(&pod, config, sandbox.clone())
                .map_err(|e| e.to_string())?;
            cri.start_container(&id).map_err(|e| e.to_string())?;
            let runc_ip = cri
                .pod_sandbox_status(&pod, false)
                .map_err(|e| e.to_string())?
                .status
                .and_then(|s| s.network)
                .map(|n| n.ip)
                .unwrap_or_default();
            let (mut guest, mut runc) = (Vec::new(), Vec::new());
            for _ in 0..3 {
                guest.push(download(&ip)?);
                let mut tries = 0;
                loop {
                    match download(&runc_ip) {
                        Ok(t) => {
                            runc.push(t);
                            break;
                        }
                        Err(e) if tries < 20 => {
                            tries += 1;
                            let _ = e;
                            std::thread::sleep(Duration::from_millis(250));
                        }
                        Err(e) => return Err(e),
                    }
                }
            }
            let node = (median_f64(guest), median_f64(runc));
            let peer = peer_download_rates(containerd, cri, &ip, &runc_ip)?;
            Ok((node, peer))
        })();
        let _ = cri.stop_pod_sandbox(&pod);
        let _ = cri.remove_pod_sandbox(&pod);
        served
    })();
    let _ = cri.stop_pod_sandbox(&vm.sandbox_id);
    let _ = cri.remove_pod_sandbox(&vm.sandbox_id);
    result
}

/// Runs two VMs at once and measures both shims a second after both guests are up.
fn two_vm_memory(cri: &BlockingCri) -> Result<Vec<Memory>, String> {
    let mut started = Vec::new();
    let result = (|| {
        for name in ["memory-a", "memory-b"] {
            let plan = local::plan(
                parse_documents(&Guest::KernelBoot.vmi(name))
                    .remove(0)
                    .map_err(|e| e.to_string())?,
            )
            .map_err(|e| e.to_string())?;
            started.push(local::run(cri, &plan).map_err(|e| e.to_string())?);
        }
        for vm in &started {
            wait_in_file(&vm.console_log(), READY_MARKER, Instant::now())?;
        }
        std::thread::sleep(Duration::from_secs(1));
        // Each VM's QEMU and its own shim (QEMU's parent), read together.
        let mut memory = Vec::new();
        for vm in &started {
            let qemu = match vm::qemu_pids(&vm.sandbox_id).as_slice() {
                [pid] => *pid,
                other => {
                    return Err(format!(
                        "expected one QEMU for pod {}, found {other:?}",
                        vm.sandbox_id
                    ))
                }
            };
            let shim = parent_pid(qemu)?;
            memory.push(Memory {
                shim_rss: rss_kib(shim)?,
                shim_private: private_kib(shim)?,
                qemu_rss: rss_kib(qemu)?,
                ..Memory::from_qemu(qemu_overhead_kib(qemu, GUEST_RAM_KIB)?)
            });
        }
        Ok(memory)
    })();
    for vm in &started {
        let _ = cri.stop_pod_sandbox(&vm.sandbox_id);
        let _ = cri.remove_pod_sandbox(&vm.sandbox_id);
    }
    result
}

/// The sizes of TCG's translated-code cache the sweep tries, in MiB (`0`: QEMU's default).
const TB_CACHE_SIZES: [u32; 6] = [0, 128, 64, 32, 16, 8];

/// Boots the kernelBoot guest with each size of TCG's translated-code cache (the shim's node
/// setting, and the same `tb-size` on bare QEMU): boot time, and QEMU's memory beyond the
/// guest's RAM when the guest is up. Ratios are to bare QEMU with its default cache, the
/// reference of the boot figures.
fn tb_cache_sweep(images: &Path, scratch: &Path, runs: usize) -> Result<Vec<String>, String> {
    let mut lines = Vec::new();
    let mut reference = None;
    for size in TB_CACHE_SIZES {
        let value = size.to_string();
        let containerd = vm::containerd_with_env(
            "virtshim-bench-tb",
            &[("VIRTSHIM_TCG_TB_CACHE_MIB", value.as_str())],
        )
        .ok_or("the sweep needs root and containerd")?;
        let measured = (|| {
            let cri = containerd.cri().map_err(|e| e.to_string())?;
            // Warms this containerd's snapshots, as the boot section's warm-up does.
            shim_run(&containerd, &cri, Guest::KernelBoot, 0)?;
            let (mut shim, mut bare, mut overhead) = (Vec::new(), Vec::new(), Vec::new());
            let mut private = Vec::new();
            for run in 1..=runs {
                let (t, memory) = shim_run(&containerd, &cri, Guest::KernelBoot, run)?;
                shim.push(t);
                overhead.push(memory.qemu_overhead);
                private.push(memory.qemu_private_overhead);
                bare.push(bare_run(
                    Guest::KernelBoot,
                    images,
                    scratch,
                    (size > 0).then_some(size),
                )?);
            }
            overhead.sort();
            private.sort();
            Ok::<_, String>((
                median(shim),
                median(bare),
                overhead[overhead.len() / 2],
                private[private.len() / 2],
            ))
        })();
        let _ = containerd.stop();
        let (shim, bare, overhead, private) =
            measured.map_err(|e| format!("tb-cache {size}: {e}"))?;
        let reference = *reference.get_or_insert(bare);
        let label = if size == 0 {
            "QEMU default".to_owned()
        } else {
            format!("{size} MiB")
        };
        lines.push(format!(
            "tb-cache {label:>12}  StartContainer→marker {}  ratio {:.2}  bare QEMU same cache {} ({:.2})  QEMU beyond guest RAM {:.1} MiB RSS, {:.1} MiB private  (medians of {runs})",
            secs(shim),
            shim.as_secs_f64() / reference.as_secs_f64(),
            secs(bare),
            bare.as_secs_f64() / reference.as_secs_f64(),
            overhead as f64 / 1024.0,
            private as f64 / 1024.0,
        ));
    }
    Ok(lines)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

fn main() -> std::process::ExitCode {
    let runs: usize = std::env::args()
        .skip_while(|a| a != "--runs")
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(5)
        .max(1);
    // `--only boot,memory,tbcache,network,console,portforward,cluster` runs some sections; all but
    // cluster by default (it needs the project's cluster: `make cluster`, KUBECONFIG);
    // cluster-start, cluster-console, cluster-admission, cluster-throughput, cluster-density and
    // cluster-percentiles run one part.
    let only: Option<String> = std::env::args().skip_while(|a| a != "--only").nth(1);
    let want = |section: &str| match only.as_deref() {
        Some(only) => only.split(',').any(|s| s == section),
        None => !section.starts_with("cluster"),
    };
    let Some(containerd) = vm::containerd("virtshim-bench") else {
        eprintln!("virtshim-bench: needs root and containerd");
        return std::process::ExitCode::FAILURE;
    };
    let cri = containerd.cri().unwrap();
    let images = vm::guest_images();
    let scratch = tempfile::tempdir().unwrap();
    println!("virtshim boot benchmark: {runs} runs each, alternating, TCG, {} cores; marker {READY_MARKER:?}; poll resolution {POLL:?}",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1));
    let mut failed = false;
    let mut rss = Vec::new();
    if want("boot") || want("memory") {
        // One unmeasured shim run warms containerd's snapshots, libvirt's capabilities cache and the
        // page cache, as any node that has run a VM before is warm.
        if let Err(e) = shim_run(&containerd, &cri, Guest::KernelBoot, 0) {
            eprintln!("warm-up failed: {e}");
            return std::process::ExitCode::FAILURE;
        }
    }
    for guest in [Guest::KernelBoot, Guest::ContainerDisk] {
        if !want("boot") {
            break;
        }
        let (mut shim, mut bare) = (Vec::new(), Vec::new());
        for run in 1..=runs {
            match shim_run(&containerd, &cri, guest, run) {
                Ok((t, memory)) => {
                    shim.push(t);
                    rss.push(memory);
                }
                Err(e) => {
                    eprintln!("{} shim run {run}: {e}", guest.label());
                    failed = true;
                }
            }
            match bare_run(guest, &images, scratch.path(), None) {
                Ok(t) => bare.push(t),
                Err(e) => {
                    eprintln!("{} bare run {run}: {e}", guest.label());
                    failed = true;
                }
            }
        }
        if shim.is_empty() || bare.is_empty() {
            continue;
        }
        let (s, b) = (median(shim.clone()), median(bare.clone()));
        println!(
            "{:<14} StartContainer→marker {}  bare QEMU {}  ratio {:.2}  (median of {}; shim {}–{}, bare {}–{})  goal ≤ 1.10",
            guest.label(),
            secs(s),
            secs(b),
            s.as_secs_f64() / b.as_secs_f64(),
            shim.len(),
            secs(*shim.iter().min().unwrap()),
            secs(*shim.iter().max().unwrap()),
            secs(*bare.iter().min().unwrap()),
            secs(*bare.iter().max().unwrap()),
        );
    }
    // Memory per VM with two VMs running: each shim's private pages are what one more VM
    // costs; the libraries' pages are shared by all the shims of the node.
    if want("memory") {
        match two_vm_memory(&cri) {
            Ok(shims) => rss.extend(shims),
            Err(e) => {
                eprintln!("memory run: {e}");
                failed = true;
            }
        }
    }
    // Every sample here is a reading that succeeded (a failed one failed its run): the boot
    // runs read QEMU, the memory run reads each VM's QEMU and shim.
    let mib = |kib: u64| kib as f64 / 1024.0;
    let median_kib = |f: fn(&Memory) -> u64, shims_only: bool| {
        let mut v: Vec<u64> = rss
            .iter()
            .filter(|m| !shims_only || m.shim_rss > 0)
            .map(f)
            .collect();
        v.sort();
        v.get(v.len() / 2).copied()
    };
    if let (Some(private), Some(shim_rss), Some(overhead), Some(total)) = (
        median_kib(|m| m.shim_private, true),
        median_kib(|m| m.shim_rss, true),
        median_kib(|m| m.qemu_overhead, true),
        median_kib(|m| m.shim_private + m.qemu_overhead, true),
    ) {
        println!(
            "shim memory per VM {:.1} MiB private (USS; goal ≤ 20 MiB); RSS {:.1} MiB, the rest being shared library pages every shim on the node shares",
            mib(private),
            mib(shim_rss),
        );
        println!(
            "per-VM host memory overhead {:.1} MiB (shim private {:.1} + QEMU beyond the guest's RAM {:.1}, RSS); KubeVirt ≈ 290 MiB for 1 vCPU/1 GiB",
            mib(total),
            mib(private),
            mib(overhead),
        );
        if let (Some(qemu_private), Some(total_private)) = (
            median_kib(|m| m.qemu_private_overhead, true),
            median_kib(|m| m.shim_private + m.qemu_private_overhead, true),
        ) {
            println!(
                "per-VM host memory, private pages only {:.1} MiB (shim {:.1} + QEMU beyond the guest's RAM {:.1}): what one more VM costs, libraries being shared",
                mib(total_private),
                mib(private),
                mib(qemu_private),
            );
        }
    }
    if let Some(qemu) = median_kib(|m| m.qemu_rss, false) {
        println!(
            "QEMU RSS {:.1} MiB for 256 MiB of guest RAM (TCG), for the record",
            mib(qemu)
        );
    }
    if want("tbcache") {
        match tb_cache_sweep(&images, scratch.path(), runs) {
            Ok(lines) => lines.iter().for_each(|l| println!("{l}")),
            Err(e) => {
                eprintln!("tb-cache sweep: {e}");
                failed = true;
            }
        }
    }
    if want("network") {
        match network_throughput(&containerd, &cri) {
            Ok(((guest, runc), (peer_guest, peer_runc))) => {
                println!(
                    "HTTP download of {BIG_MIB} MiB over the pods' bridge, client on the node: VM guest (bridge binding, virtio, TCG) {guest:.1} MiB/s, runc pod {runc:.1} MiB/s, ratio {:.2} (median of 3)",
                    guest / runc
                );
                println!(
                    "HTTP download of {BIG_MIB} MiB over the pods' bridge, client in a peer runc pod (busybox nc, 20 rounds): VM guest {peer_guest:.1} MiB/s, runc pod {peer_runc:.1} MiB/s, ratio {:.2}",
                    peer_guest / peer_runc
                );
            }
            Err(e) => {
                eprintln!("network run: {e}");
                failed = true;
            }
        }
    }
    if want("console") {
        match console_latency(&cri) {
            Ok(figures) => {
                for line in figures {
                    println!("{line}");
                }
            }
            Err(e) => {
                eprintln!("console run: {e}");
                failed = true;
            }
        }
    }
    if want("portforward") {
        match port_forward_latency(&cri) {
            Ok(line) => println!("{line}"),
            Err(e) => {
                eprintln!("port-forward run: {e}");
                failed = true;
            }
        }
    }
    // cluster-scale: issue 14's figures in one run (the controller's 500 VMs, density, the
    // creation → Running percentiles).
    let cluster_part = |part: &str| {
        want("cluster")
            || want(&format!("cluster-{part}"))
            || (want("cluster-scale") && ["throughput", "density", "percentiles"].contains(&part))
    };
    if [
        "start",
        "console",
        "admission",
        "throughput",
        "density",
        "percentiles",
    ]
    .iter()
    .any(|p| cluster_part(p))
    {
        if let Err(e) = cluster::run(&containerd, cluster_part) {
            eprintln!("cluster run: {e}");
            failed = true;
        }
    }
    let _ = containerd.stop();
    if failed {
        std::process::ExitCode::FAILURE
    } else {
        std::process::ExitCode::SUCCESS
    }
}

/// A percentile of sorted durations.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

/// Types `count` keystrokes one at a time, each timed until the guest's echo of it comes back.
fn keystroke_rtts(
    count: usize,
    mut send: impl FnMut(u8) -> Result<(), String>,
    mut read: impl FnMut() -> Result<Vec<u8>, String>,
) -> Result<Vec<Duration>, String> {
    let mut rtts = Vec::with_capacity(count);
    for i in 0..count {
        // Letters a..z, each echoed by the guest shell's line editor.
        let key = b'a' + (i % 26) as u8;
        let started = Instant::now();
        send(key)?;
        loop {
            if started.elapsed() > Duration::from_secs(10) {
                return Err(format!("no echo of keystroke {i}"));
            }
            if read()?.contains(&key) {
                break;
            }
        }
        rtts.push(started.elapsed());
        if i % 40 == 39 {
            // Ctrl+U: clear the line now and then, so the shell's line stays short.
            send(0x15)?;
            std::thread::sleep(Duration::from_millis(50));
            let _ = read();
        }
    }
    rtts.sort();
    Ok(rtts)
}

/// [`keystroke_rtts`] on a console's unix socket (the pod's `console.sock`), read with a short
/// timeout so that a keystroke whose echo is late is polled again.
fn socket_keystroke_rtts(
    count: usize,
    mut direct: std::os::unix::net::UnixStream,
) -> Result<Vec<Duration>, String> {
    use std::io::Write;
    direct
        .set_read_timeout(Some(Duration::from_millis(200)))
        .map_err(|e| e.to_string())?;
    let mut reader = direct.try_clone().map_err(|e| e.to_string())?;
    keystroke_rtts(
        count,
        |k| direct.write_all(&[k]).map_err(|e| e.to_string()),
        || {
            let mut buf = [0u8; 4096];
            match reader.read(&mut buf) {
                Ok(n) => Ok(buf[..n].to_vec()),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    Ok(Vec::new())
                }
                Err(e) => Err(e.to_string()),
            }
        },
    )
}

/// Console echo round trips over 200 keystrokes and the time to a VNC greeting, through
/// virtshim-handler (mutual TLS, WebSocket `plain.kubevirt.io`, as the controller connects)
/// beside the pod's sockets directly. The apiserver and controller hops of a cluster are not in
/// this figure: there is no cluster here.
fn console_latency(cri: &BlockingCri) -> Result<Vec<String>, String> {
    use std::os::unix::net::UnixStream;
    use tungstenite::Message;
    use virtshim_tests::handler::{connect, read_frame, setup, websocket, RunningHandler};
    const KEYS: usize = 200;
    let plan = local::plan(
        parse_documents(&Guest::KernelBoot.vmi("console"))
            .remove(0)
            .map_err(|e| e.to_string())?,
    )
    .map_err(|e| e.to_string())?;
    let uid = plan.uid.clone();
    let started = local::run(cri, &plan).map_err(|e| e.to_string())?;
    let result = (|| -> Result<Vec<String>, String> {
        wait_in_file(&started.console_log(), "VIRTSHIM-GUEST-UP", Instant::now())?;
        let run = vm::pod_dirs(&started.sandbox_id)[0].clone();
        // Direct: the pod's console socket.
        let direct = UnixStream::connect(run.join("console.sock")).map_err(|e| e.to_string())?;
        std::thread::sleep(Duration::from_millis(300));
        let bare = socket_keystroke_rtts(KEYS, direct)?;
        // Through the handler.
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let (pki, files, controller) = setup(dir.path());
        let handler = RunningHandler::start(
            &files,
            &Path::new(vm::STATE_ROOT).join("run"),
            &PathBuf::from("/nonexistent"),
        );
        let path =
            format!("/v1/namespaces/default/virtualmachineinstances/console/console?uid={uid}");
        let tls = connect(handler.addr, &pki.ca, Some(&controller)).map_err(|e| e.to_string())?;
        let ws = std::cell::RefCell::new(websocket(tls, &path)?);
        std::thread::sleep(Duration::from_millis(300));
        let via = keystroke_rtts(
            KEYS,
            |k| {
                ws.borrow_mut()
                    .send(Message::Binary(vec![k].into()))
                    .map_err(|e| e.to_string())
            },
            || read_frame(&mut ws.borrow_mut()).map(Option::unwrap_or_default),
        )?;
        drop(ws);
        // VNC: from connecting to the RFB greeting.
        let (mut vnc_direct, mut vnc_via) = (Vec::new(), Vec::new());
        for _ in 0..10 {
            let t = Instant::now();
            let mut sock =
                UnixStream::connect(run.join("vm/vnc.sock")).map_err(|e| e.to_string())?;
            let mut greeting = [0u8; 12];
            sock.read_exact(&mut greeting).map_err(|e| e.to_string())?;
            vnc_direct.push(t.elapsed());
            let t = Instant::now();
            let tls =
                connect(handler.addr, &pki.ca, Some(&controller)).map_err(|e| e.to_string())?;
            let mut ws = websocket(
                tls,
                &format!("/v1/namespaces/default/virtualmachineinstances/console/vnc?uid={uid}"),
            )?;
            loop {
                if read_frame(&mut ws)?.is_some_and(|data| data.starts_with(b"RFB ")) {
                    break;
                }
                if t.elapsed() > Duration::from_secs(10) {
                    return Err("no RFB greeting through the handler".into());
                }
            }
            vnc_via.push(t.elapsed());
        }
        drop(handler);
        Ok(vec![
            format!(
                "console echo round trip, {KEYS} keystrokes: through virtshim-handler (mTLS WebSocket) P50 {} P99 {}; pod console socket directly P50 {} P99 {}; ratio of P50s {:.2} (apiserver and controller hops not included: no cluster here)",
                ms(percentile(&via, 0.5)),
                ms(percentile(&via, 0.99)),
                ms(percentile(&bare, 0.5)),
                ms(percentile(&bare, 0.99)),
                percentile(&via, 0.5).as_secs_f64() / percentile(&bare, 0.5).as_secs_f64(),
            ),
            format!(
                "VNC connect to RFB greeting: through virtshim-handler (TCP+TLS+WebSocket) {}; pod VNC socket directly {} (median of 10)",
                ms(median(vnc_via)),
                ms(median(vnc_direct)),
            ),
        ])
    })();
    let _ = cri.stop_pod_sandbox(&started.sandbox_id);
    let _ = cri.remove_pod_sandbox(&started.sandbox_id);
    result
}

/// One HTTP/1.0 `GET /healthz` per connection to the guest, as `virtctl port-forward` carries
/// each TCP connection in its own WebSocket: through virtshim-handler's port forward (TCP, TLS,
/// WebSocket upgrade, request and the whole answer) beside a TCP connection to the pod's IP
/// directly, median of 50 each. The apiserver and controller hops are not in it.
fn port_forward_latency(cri: &BlockingCri) -> Result<String, String> {
    use std::io::Write;
    use tungstenite::Message;
    use virtshim_tests::handler::{connect, read_frame, setup, websocket, RunningHandler};
    const ROUNDS: usize = 50;
    // The default interface: bridge binding on the pod network, the guest serving HTTP on 80.
    let yaml = vm::kernel_boot_vmi("name: forward", "256Mi", "", "console=ttyS0", "");
    let plan = local::plan(
        parse_documents(&yaml)
            .remove(0)
            .map_err(|e| e.to_string())?,
    )
    .map_err(|e| e.to_string())?;
    let uid = plan.uid.clone();
    let started = local::run(cri, &plan).map_err(|e| e.to_string())?;
    let result = (|| -> Result<String, String> {
        wait_in_file(&started.console_log(), "VIRTSHIM-GUEST-UP", Instant::now())?;
        let ip = virtshim_tests::peer::pod_ip(cri, &started.sandbox_id);
        let request = b"GET /healthz HTTP/1.0\r\n\r\n";
        let answered = |answer: &[u8]| answer.starts_with(b"HTTP/1.") && answer.ends_with(b"ok\n");
        let mut direct = Vec::with_capacity(ROUNDS);
        for _ in 0..ROUNDS {
            let t = Instant::now();
            let mut tcp =
                std::net::TcpStream::connect((ip.as_str(), 80)).map_err(|e| e.to_string())?;
            tcp.write_all(request).map_err(|e| e.to_string())?;
            let mut answer = Vec::new();
            tcp.read_to_end(&mut answer).map_err(|e| e.to_string())?;
            if !answered(&answer) {
                return Err(format!("direct: {}", String::from_utf8_lossy(&answer)));
            }
            direct.push(t.elapsed());
        }
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let (pki, files, controller) = setup(dir.path());
        let handler = RunningHandler::start(
            &files,
            &Path::new(vm::STATE_ROOT).join("run"),
            &PathBuf::from("/nonexistent"),
        );
        let path = format!(
            "/v1/namespaces/default/virtualmachineinstances/forward/portforward/80/tcp?uid={uid}"
        );
        let mut via = Vec::with_capacity(ROUNDS);
        for _ in 0..ROUNDS {
            let t = Instant::now();
            let tls =
                connect(handler.addr, &pki.ca, Some(&controller)).map_err(|e| e.to_string())?;
            let mut ws = websocket(tls, &path)?;
            ws.send(Message::Binary(request.to_vec().into()))
                .map_err(|e| e.to_string())?;
            let mut answer = Vec::new();
            while !answered(&answer) {
                if t.elapsed() > Duration::from_secs(10) {
                    return Err(format!(
                        "through the handler: {}",
                        String::from_utf8_lossy(&answer)
                    ));
                }
                match read_frame(&mut ws) {
                    Ok(Some(data)) => answer.extend_from_slice(&data),
                    Ok(None) => {}
                    Err(e) => return Err(format!("{e}; got {}", String::from_utf8_lossy(&answer))),
                }
            }
            via.push(t.elapsed());
        }
        drop(handler);
        let (via, direct) = (median(via), median(direct));
        Ok(format!(
            "port forward, one HTTP GET per connection: through virtshim-handler (TCP+TLS+WebSocket, then the guest) {}; TCP to the pod IP directly {}; ratio {:.1} (median of {ROUNDS}; apiserver and controller hops not included: no cluster here)",
            ms(via),
            ms(direct),
            via.as_secs_f64() / direct.as_secs_f64(),
        ))
    })();
    let _ = cri.stop_pod_sandbox(&started.sandbox_id);
    let _ = cri.remove_pod_sandbox(&started.sandbox_id);
    result
}
