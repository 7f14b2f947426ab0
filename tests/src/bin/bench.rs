//! `bench` (`make bench`): the numbers BENCHMARKS.md records for issue 3.
//!
//! 1. Boot time through the shim against bare QEMU, for the kernelBoot and the containerDisk
//!    test guest. The shim's time runs from the CRI StartContainer call of `compute` to the
//!    guest's READY marker in the container's CRI log; RunPodSandbox and CreateContainer (disk
//!    preparation) come before and are reported as phases, not counted. Bare QEMU gets the same
//!    kernel/initrd or a qcow2 overlay on the same disk with an equivalent machine, timed from
//!    spawn to the marker on its serial output. Runs alternate shim and bare; medians are
//!    reported with min and max.
//! 2. Memory: the pod's shim process's VmRSS while its VM runs (goal ≤ 20 MiB), with QEMU's
//!    RSS and the guest's RAM for the record.
//!
//! It reports, it does not assert: missed goals still exit 0, errors exit 1. It starts a
//! private containerd of its own (root needed) whose `virtshim` runtime is the shim built next
//! to this binary, and removes every pod and that containerd again, on errors too.

use anyhow::{bail, Context, Result};
use std::fmt::Write as _;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use virtctl::cri::blocking::BlockingCri;
use virtctl::local;
use virtshim_api::manifest::parse_documents;
use virtshim_api::pod as contract;
use virtshim_tests::containerd::{Options, PrivateContainerd};
use virtshim_tests::vm::{self, READY_MARKER, STATE_ROOT};

/// The goals issue 3 sets.
const RATIO_GOAL: f64 = 1.10;
const SHIM_RSS_GOAL_MIB: f64 = 20.0;
/// Guest RAM of every VM here, shim and bare alike.
const GUEST_MIB: u64 = 256;
/// How long a guest may take to print its marker.
const BOOT_TIMEOUT: Duration = Duration::from_secs(120);
/// How often the CRI log is read for new bytes. Only detection: the time used is containerd's
/// own timestamp on the marker's line.
const LOG_POLL: Duration = Duration::from_millis(5);
/// How long after the marker the RSS is sampled a second time (the larger sample counts).
const RSS_SETTLE: Duration = Duration::from_secs(1);
/// Points inside StartContainer(compute), from lines with timestamps: (column, where, text).
/// The shim's lines are in containerd's log; libvirt writes "starting up" into QEMU's log just
/// before it executes QEMU. A line the shim does not write (yet) shows as "-".
const PHASES: [(&str, Phase, &str); 6] = [
    ("disks", Phase::Shim, "VM prepared"),
    ("libvirt", Phase::Shim, "libvirt opened"),
    ("network", Phase::Shim, "pod network wired"),
    ("exec", Phase::QemuLog, "starting up"),
    ("paused", Phase::Shim, "QEMU started, CPUs paused"),
    ("resumed", Phase::Shim, "VM started"),
];

/// Which log a phase line is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Shim,
    QemuLog,
}

const SHIM_BINARY: &str = "containerd-shim-virtshim-v2";
const QEMU: &str = "qemu-system-x86_64";

const USAGE: &str = "\
usage: bench [--runs N] [--warmup N] [--guest kernelBoot|containerDisk]... [--pod-network on|off]

Boot time CRI StartContainer → guest READY marker against bare QEMU, and the shim's RSS.
  --runs N     measured runs per guest, alternating shim and bare (default 5)
  --warmup N   runs per guest before measuring, not counted (default 1)
  --guest G    only this guest (repeatable; default both)
  --pod-network on|off
               on (default): the VM has KubeVirt's default pod NIC, as users run it;
               off: autoattachPodInterface: false, no NIC, like the bare QEMU
  --keep-log F copy the private containerd's log (the shim's log is in it) to F at the end
Needs root and the shim built next to this binary (scripts/bench.sh does both).";

fn main() -> ExitCode {
    let args = match Args::parse(std::env::args().skip(1)) {
        Ok(Some(args)) => args,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("bench: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[derive(Debug)]
struct Args {
    runs: usize,
    warmup: usize,
    guests: Vec<Guest>,
    pod_network: bool,
    keep_log: Option<PathBuf>,
}

impl Args {
    /// `None` for `--help`.
    fn parse(mut args: impl Iterator<Item = String>) -> Result<Option<Self>> {
        let mut out = Args {
            runs: 5,
            warmup: 1,
            guests: Vec::new(),
            pod_network: true,
            keep_log: None,
        };
        while let Some(arg) = args.next() {
            let mut value =
                |flag: &str| args.next().with_context(|| format!("{flag} needs a value"));
            match arg.as_str() {
                "--runs" => out.runs = value("--runs")?.parse().context("--runs")?,
                "--warmup" => out.warmup = value("--warmup")?.parse().context("--warmup")?,
                "--guest" => {
                    let name = value("--guest")?;
                    let guest = Guest::ALL
                        .into_iter()
                        .find(|g| g.name().eq_ignore_ascii_case(&name))
                        .with_context(|| format!("unknown guest {name:?}"))?;
                    out.guests.push(guest);
                }
                "--pod-network" => {
                    out.pod_network = match value("--pod-network")?.as_str() {
                        "on" => true,
                        "off" => false,
                        other => bail!("--pod-network takes on or off, not {other:?}"),
                    }
                }
                "--keep-log" => out.keep_log = Some(value("--keep-log")?.into()),
                "-h" | "--help" => return Ok(None),
                other => bail!("unknown argument {other:?}"),
            }
        }
        if out.runs == 0 {
            bail!("--runs must be at least 1");
        }
        if out.guests.is_empty() {
            out.guests = Guest::ALL.to_vec();
        }
        Ok(Some(out))
    }
}

/// The two test guests (images/guest/build.sh).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Guest {
    KernelBoot,
    ContainerDisk,
}

impl Guest {
    const ALL: [Guest; 2] = [Guest::KernelBoot, Guest::ContainerDisk];

    fn name(self) -> &'static str {
        match self {
            Guest::KernelBoot => "kernelBoot",
            Guest::ContainerDisk => "containerDisk",
        }
    }

    /// The VMI the shim boots: the guests of tests/tests/shim_cri.rs, with only the root disk
    /// for containerDisk (bare QEMU gets that disk alone too; the guest's READY marker comes
    /// before it looks for cloud-init). With `pod_network` false the VM gets no NIC
    /// (`autoattachPodInterface: false`), like bare QEMU; else KubeVirt's default pod NIC.
    fn vmi(self, name: &str, pod_network: bool) -> String {
        let nic = if pod_network {
            ""
        } else {
            "autoattachPodInterface: false"
        };
        match self {
            Guest::KernelBoot => format!(
                "apiVersion: kubevirt.io/v1\nkind: VirtualMachineInstance\nmetadata: {{name: {name}}}\nspec:\n  domain:\n    memory: {{guest: {GUEST_MIB}Mi}}\n    devices: {{{nic}}}\n    firmware:\n      kernelBoot:\n        kernelArgs: console=ttyS0\n        container: {{image: '{}', kernelPath: /boot/vmlinuz, initrdPath: /boot/initrd.img}}\n",
                vm::KERNEL_BOOT_IMAGE
            ),
            Guest::ContainerDisk => format!(
                "apiVersion: kubevirt.io/v1\nkind: VirtualMachineInstance\nmetadata: {{name: {name}}}\nspec:\n  domain:\n    memory: {{guest: {GUEST_MIB}Mi}}\n    devices:\n      {nic}\n      disks:\n      - {{name: root, disk: {{bus: virtio}}}}\n  volumes:\n  - {{name: root, containerDisk: {{image: '{}'}}}}\n",
                vm::CONTAINER_DISK_IMAGE
            ),
        }
    }

    /// Bare QEMU's arguments: the machine the issue names, plus this guest's boot source.
    fn bare_args(self, images: &Path, overlay: &Path) -> Vec<String> {
        let mut args: Vec<String> = [
            "-machine",
            "q35,accel=tcg",
            "-m",
            "256",
            "-smp",
            "1",
            "-nodefaults",
            "-no-user-config",
            "-serial",
            "stdio",
            "-display",
            "none",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        match self {
            Guest::KernelBoot => {
                args.push("-kernel".into());
                args.push(images.join("vmlinuz").to_string_lossy().into_owned());
                args.push("-initrd".into());
                args.push(images.join("initrd.img").to_string_lossy().into_owned());
                args.push("-append".into());
                args.push("console=ttyS0".into());
            }
            Guest::ContainerDisk => {
                args.push("-drive".into());
                args.push(format!(
                    "file={},format=qcow2,if=virtio",
                    overlay.to_string_lossy()
                ));
            }
        }
        args
    }
}

/// One boot through the shim.
#[derive(Debug, Clone, Default)]
struct ShimSample {
    /// The headline: StartContainer(compute) called → marker (containerd's timestamp).
    boot: f64,
    /// The same, as detected by polling the log (a check on the timestamp).
    boot_polled: f64,
    run_pod_sandbox: f64,
    /// CreateContainer + StartContainer of the containers before compute (image carriers).
    carriers: f64,
    /// CreateContainer(compute): the shim validates the VMI and prepares the disks.
    create_compute: f64,
    /// StartContainer(compute) until it returned.
    start_call: f64,
    /// Seconds from the StartContainer call to each of [`PHASES`] (`None`: not logged).
    phases: Vec<Option<f64>>,
    shim_rss_mib: f64,
    qemu_rss_mib: f64,
    /// QEMU's command line as libvirt logged it, for the record (first run only).
    qemu_cmdline: Option<String>,
}

/// One boot of bare QEMU.
#[derive(Debug, Clone, Default)]
struct BareSample {
    boot: f64,
    qemu_rss_mib: f64,
}

#[derive(Debug, Default)]
struct Results {
    shim: Vec<ShimSample>,
    bare: Vec<BareSample>,
}

fn run(args: &Args) -> Result<()> {
    let exe = std::env::current_exe().context("finding this program")?;
    let shim_dir = exe.parent().context("this program's folder")?.to_path_buf();
    if !shim_dir.join(SHIM_BINARY).exists() {
        bail!(
            "no {SHIM_BINARY} next to {}: build both in one profile (scripts/bench.sh does)",
            exe.display()
        );
    }
    if let Some(why) = PrivateContainerd::unavailable() {
        bail!("cannot start a private containerd: {why}");
    }
    let images = vm::guest_images();
    let containerd = start_containerd(&shim_dir, &images)?;
    let cri = containerd
        .cri()
        .context("connecting to the private containerd's CRI")?;
    let work = tempfile::Builder::new()
        .prefix("virtshim-bench-")
        .tempdir()
        .context("making a scratch folder")?;

    println!(
        "virtshim bench: {} run(s) per guest after {} warm-up run(s), alternating shim and bare",
        args.runs, args.warmup
    );
    println!(
        "machine: {} CPUs, {}; guest {GUEST_MIB} MiB, 1 vCPU; shim VM {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        qemu_version(),
        if args.pod_network {
            "with KubeVirt's default pod NIC (--pod-network on)"
        } else {
            "without a NIC (--pod-network off)"
        }
    );
    println!(
        "resolution: shim = containerd's timestamp on the marker's CRI log line (ns clock; the log \
         is polled every {} ms only to notice it), bare = read of QEMU's serial pipe (< 1 ms)",
        LOG_POLL.as_millis()
    );

    let mut all = Vec::new();
    for &guest in &args.guests {
        let mut results = Results::default();
        for i in 0..(args.warmup + args.runs) {
            let counted = i >= args.warmup;
            let label = if counted {
                format!("run {}/{}", i - args.warmup + 1, args.runs)
            } else {
                format!("warm-up {}/{}", i + 1, args.warmup)
            };
            // Alternate which goes first, so neither always gets the warmer caches.
            let shim_first = i % 2 == 0;
            let mut shim = None;
            let mut bare = None;
            for step in 0..2 {
                if (step == 0) == shim_first {
                    shim = Some(shim_boot(&containerd, &cri, guest, args.pod_network, i)?);
                } else {
                    bare = Some(bare_boot(guest, &images, work.path())?);
                }
            }
            let (Some(shim), Some(bare)) = (shim, bare) else {
                bail!("a run did not happen");
            };
            eprintln!(
                "  {:<13} {label:<12} shim {:.2} s (polled {:.2} s)  bare {:.2} s  shim RSS {:.1} MiB",
                guest.name(),
                shim.boot,
                shim.boot_polled,
                bare.boot,
                shim.shim_rss_mib
            );
            if counted {
                results.shim.push(shim);
                results.bare.push(bare);
            }
        }
        all.push((guest, results));
    }
    let accel = std::fs::read_to_string(Path::new(STATE_ROOT).join("run/accel"))
        .unwrap_or_default()
        .trim()
        .to_owned();
    println!("{}", report(&all, args.runs, &accel));
    if let Some(path) = &args.keep_log {
        std::fs::copy(containerd.dir().join("containerd.log"), path)
            .with_context(|| format!("copying containerd's log to {}", path.display()))?;
    }
    drop(cri);
    containerd
        .stop()
        .context("stopping the private containerd")?;
    Ok(())
}

/// A private containerd whose `virtshim` runtime is the shim in `shim_dir`, with the test
/// guests imported: `vm::containerd` with the shim from this binary's folder (`vm::shim_dir`
/// finds it only from a test executable in `target/<profile>/deps`).
fn start_containerd(shim_dir: &Path, images: &Path) -> Result<PrivateContainerd> {
    let options = Options {
        shim_dir: Some(shim_dir.to_path_buf()),
        env: vec![
            ("VIRTSHIM_RUN_DIR".into(), format!("{STATE_ROOT}/run")),
            ("VIRTSHIM_LIB_DIR".into(), format!("{STATE_ROOT}/lib")),
            ("VIRTSHIM_CACHE_DIR".into(), format!("{STATE_ROOT}/cache")),
            ("VIRTSHIM_LOG".into(), "debug".into()),
        ],
    };
    let containerd = PrivateContainerd::start(options).context("starting a private containerd")?;
    for (file, name) in [
        ("guest-container-disk.oci.tar", vm::CONTAINER_DISK_IMAGE),
        ("guest-kernel-boot.oci.tar", vm::KERNEL_BOOT_IMAGE),
    ] {
        containerd
            .import_tar(&images.join(file), name)
            .with_context(|| format!("importing {file}"))?;
    }
    Ok(containerd)
}

/// A pod sandbox that is stopped and removed when dropped, whatever happened.
struct PodGuard<'a> {
    cri: &'a BlockingCri,
    id: String,
    log_directory: PathBuf,
}

impl Drop for PodGuard<'_> {
    fn drop(&mut self) {
        if let Err(e) = self.cri.stop_pod_sandbox(&self.id) {
            eprintln!("bench: StopPodSandbox {}: {e}", self.id);
        }
        if let Err(e) = self.cri.remove_pod_sandbox(&self.id) {
            eprintln!("bench: RemovePodSandbox {}: {e}", self.id);
        }
        let _ = std::fs::remove_dir_all(&self.log_directory);
    }
}

/// Boots `guest` through the CRI as `local::run` does, timing each call; samples memory once
/// the guest is up; removes the pod.
fn shim_boot(
    containerd: &PrivateContainerd,
    cri: &BlockingCri,
    guest: Guest,
    pod_network: bool,
    index: usize,
) -> Result<ShimSample> {
    let name = format!("bench-{}-{index}", guest.name().to_ascii_lowercase());
    let object = parse_documents(&guest.vmi(&name, pod_network))
        .into_iter()
        .next()
        .context("the VMI YAML is empty")?
        .context("parsing the VMI")?;
    let plan = local::plan(object).context("planning the pod")?;
    let sandbox = local::sandbox_config(&plan);
    std::fs::create_dir_all(&sandbox.log_directory)
        .with_context(|| format!("creating {}", sandbox.log_directory))?;
    let mut sample = ShimSample::default();

    let t = Instant::now();
    let sandbox_id = cri
        .run_pod_sandbox(sandbox.clone(), contract::RUNTIME_CLASS)
        .context("RunPodSandbox")?;
    sample.run_pod_sandbox = secs(t.elapsed());
    let pod = PodGuard {
        cri,
        id: sandbox_id.clone(),
        log_directory: PathBuf::from(&sandbox.log_directory),
    };
    let containers = plan
        .pod
        .spec
        .as_ref()
        .map(|s| s.containers.clone())
        .unwrap_or_default();
    let Some((compute, carriers)) = containers.split_last() else {
        bail!("the pod has no containers");
    };
    if compute.name != contract::COMPUTE_CONTAINER {
        bail!("the pod's last container is {}, not compute", compute.name);
    }
    let t = Instant::now();
    for container in carriers {
        let config = local::container_config(&plan, container)?;
        let id = cri
            .create_container(&sandbox_id, config, sandbox.clone())
            .with_context(|| format!("CreateContainer {}", container.name))?;
        cri.start_container(&id)
            .with_context(|| format!("StartContainer {}", container.name))?;
    }
    sample.carriers = secs(t.elapsed());

    let config = local::container_config(&plan, compute)?;
    let t = Instant::now();
    let compute_id = cri
        .create_container(&sandbox_id, config, sandbox.clone())
        .context("CreateContainer compute")?;
    sample.create_compute = secs(t.elapsed());
    let console_log = Path::new(&sandbox.log_directory)
        .join(contract::COMPUTE_CONTAINER)
        .join("0.log");
    let mut tail = LogTail::new(&console_log);

    // The measured window starts here.
    let start_wall = epoch_secs(SystemTime::now());
    let start = Instant::now();
    cri.start_container(&compute_id)
        .with_context(|| format!("StartContainer compute\n{}", containerd.log_tail()))?;
    sample.start_call = secs(start.elapsed());
    let marker_stamp = loop {
        if let Some(stamp) = tail.find(READY_MARKER)? {
            sample.boot_polled = secs(start.elapsed());
            break stamp;
        }
        if start.elapsed() > BOOT_TIMEOUT {
            bail!(
                "no {READY_MARKER} in {} within {BOOT_TIMEOUT:?}\n{}",
                console_log.display(),
                containerd.log_tail()
            );
        }
        std::thread::sleep(LOG_POLL);
    };
    sample.boot = match marker_stamp {
        Some(stamp) => stamp - start_wall,
        None => sample.boot_polled,
    };

    // Memory while the VM runs: at the marker and a moment later; the larger sample counts.
    let shim_pid = pod_shim_pid(containerd, &sandbox_id)?;
    let qemu_pid = vm::container_pid(cri, &compute_id).context("the CRI reports no QEMU pid")?;
    let mut shim_rss = vm_rss_mib(shim_pid)?;
    let mut qemu_rss = vm_rss_mib(qemu_pid as i32)?;
    std::thread::sleep(RSS_SETTLE);
    shim_rss = shim_rss.max(vm_rss_mib(shim_pid)?);
    qemu_rss = qemu_rss.max(vm_rss_mib(qemu_pid as i32)?);
    sample.shim_rss_mib = shim_rss;
    sample.qemu_rss_mib = qemu_rss;

    // Phases inside StartContainer, from what libvirt and the shim wrote with timestamps. One
    // pod runs at a time, so the first line after the StartContainer call is this pod's.
    let domain = format!(
        "{}_{}",
        plan.vmi.metadata.namespace.as_deref().unwrap_or("default"),
        name
    );
    let qemu_log = std::fs::read_to_string(
        vm::pod_dirs(&sandbox_id)[0]
            .join("libvirt/log/qemu")
            .join(format!("{domain}.log")),
    )
    .unwrap_or_default();
    let containerd_log =
        std::fs::read_to_string(containerd.dir().join("containerd.log")).unwrap_or_default();
    let first_after = |text: &str, needle: &str| {
        text.lines()
            .filter(|l| l.contains(needle))
            .filter_map(line_time)
            .find(|t| *t >= start_wall - 0.001)
            .map(|t| t - start_wall)
    };
    sample.phases = PHASES
        .iter()
        .map(|(_, log, needle)| match log {
            Phase::Shim => first_after(&containerd_log, needle),
            Phase::QemuLog => first_after(&qemu_log, needle),
        })
        .collect();
    if index == 0 {
        sample.qemu_cmdline = qemu_log
            .lines()
            .find(|l| l.contains(QEMU) && l.contains("-machine"))
            .map(str::to_owned);
    }

    drop(pod);
    Ok(sample)
}

/// Kills and reaps a bare QEMU when dropped.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Boots `guest` on bare QEMU, from spawn to the marker on its serial output.
fn bare_boot(guest: Guest, images: &Path, work: &Path) -> Result<BareSample> {
    let overlay = work.join("overlay.qcow2");
    if guest == Guest::ContainerDisk {
        let _ = std::fs::remove_file(&overlay);
        let out = Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2", "-F", "qcow2", "-b"])
            .arg(images.join("guest.qcow2"))
            .arg(&overlay)
            .output()
            .context("running qemu-img")?;
        if !out.status.success() {
            bail!(
                "qemu-img create: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
    }
    let stderr = std::fs::File::create(work.join("qemu.stderr")).context("QEMU's stderr file")?;
    let start = Instant::now();
    let mut child = ChildGuard(
        Command::new(QEMU)
            .args(guest.bare_args(images, &overlay))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .with_context(|| format!("running {QEMU}"))?,
    );
    let mut stdout = child.0.stdout.take().context("QEMU's stdout")?;
    let (found_tx, found_rx) = mpsc::channel();
    // Reads until EOF, so QEMU never blocks on a full pipe; says when the marker went by.
    let reader = std::thread::spawn(move || {
        let mut window = Vec::new();
        let mut buf = [0u8; 8192];
        let mut found = false;
        loop {
            let n = match stdout.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if found {
                continue;
            }
            window.extend_from_slice(&buf[..n]);
            if contains(&window, READY_MARKER.as_bytes()) {
                found = true;
                let _ = found_tx.send(Instant::now());
            } else if window.len() > READY_MARKER.len() {
                window.drain(..window.len() - READY_MARKER.len());
            }
        }
    });
    let result = match found_rx.recv_timeout(BOOT_TIMEOUT) {
        Ok(at) => {
            let pid = child.0.id() as i32;
            let mut rss = vm_rss_mib(pid)?;
            std::thread::sleep(RSS_SETTLE);
            rss = rss.max(vm_rss_mib(pid)?);
            Ok(BareSample {
                boot: secs(at - start),
                qemu_rss_mib: rss,
            })
        }
        Err(_) => Err(anyhow::anyhow!(
            "bare QEMU printed no {READY_MARKER} within {BOOT_TIMEOUT:?}: {}",
            std::fs::read_to_string(work.join("qemu.stderr")).unwrap_or_default()
        )),
    };
    drop(child);
    let _ = reader.join();
    result
}

/// The time a log line starts with: the shim's `2026-…Z  INFO …`, libvirt's `2026-… …+0000: …`
/// or containerd's `time="…"`.
fn line_time(line: &str) -> Option<f64> {
    if let Some(rest) = line.strip_prefix("time=\"") {
        return rest.split('"').next().and_then(parse_time);
    }
    let mut words = line.split_whitespace();
    let first = words.next()?;
    parse_time(first).or_else(|| {
        let second = words.next()?.trim_end_matches(':');
        parse_time(&format!("{first} {second}"))
    })
}

/// Reads a CRI log file as it grows.
struct LogTail {
    path: PathBuf,
    offset: u64,
    pending: String,
}

impl LogTail {
    fn new(path: &Path) -> Self {
        Self {
            path: path.to_path_buf(),
            offset: 0,
            pending: String::new(),
        }
    }

    /// Reads what was added since the last call; when a complete record holding `text` is
    /// there, its timestamp (`Some(None)` when the record had none that parses).
    fn find(&mut self, text: &str) -> Result<Option<Option<f64>>> {
        let mut file = match std::fs::File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("reading {}", self.path.display())),
        };
        file.seek(SeekFrom::Start(self.offset))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        self.offset += bytes.len() as u64;
        self.pending.push_str(&String::from_utf8_lossy(&bytes));
        while let Some(end) = self.pending.find('\n') {
            let record: String = self.pending.drain(..=end).collect();
            if record.contains(text) {
                return Ok(Some(record.split(' ').next().and_then(parse_time)));
            }
        }
        Ok(None)
    }
}

/// The serving shim of one pod: containerd started it with `-id <sandbox id>`.
fn pod_shim_pid(containerd: &PrivateContainerd, sandbox_id: &str) -> Result<i32> {
    let pids = containerd.shim_pids();
    pids.iter()
        .copied()
        .find(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains(sandbox_id))
                .unwrap_or(false)
        })
        .with_context(|| format!("no shim of pod {sandbox_id} among {pids:?}"))
}

/// VmRSS of a process, in MiB.
fn vm_rss_mib(pid: i32) -> Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|kib| kib.parse::<f64>().ok())
        .map(|kib| kib / 1024.0)
        .with_context(|| format!("no VmRSS in /proc/{pid}/status"))
}

fn qemu_version() -> String {
    Command::new(QEMU)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .map(str::to_owned)
        })
        .unwrap_or_else(|| format!("{QEMU} (version unknown)"))
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

fn epoch_secs(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Seconds since the epoch of an RFC 3339 time (`T` or a space between date and time, any
/// number of fraction digits, `Z`, `±HH:MM` or `±HHMM`) as containerd, tracing and libvirt
/// write them. `None` for anything else.
fn parse_time(s: &str) -> Option<f64> {
    let s = s.trim().trim_matches('"');
    let s = s.strip_prefix("time=").unwrap_or(s).trim_matches('"');
    let b = s.as_bytes();
    if b.len() < 19 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b' ') {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = s.get(r)?;
        part.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| part.parse().ok())?
    };
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if b[13] != b':' || b[16] != b':' || !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    let mut rest = &s[19..];
    let mut fraction = 0.0;
    if let Some(after) = rest.strip_prefix('.') {
        let digits = after.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        fraction = format!("0.{}", &after[..digits]).parse().ok()?;
        rest = &after[digits..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        _ => {
            let sign = match rest.as_bytes().first()? {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let hm = rest[1..].replace(':', "");
            if hm.len() != 4 || !hm.bytes().all(|c| c.is_ascii_digit()) {
                return None;
            }
            sign * (hm[..2].parse::<i64>().ok()? * 3600 + hm[2..].parse::<i64>().ok()? * 60)
        }
    };
    let days = days_from_civil(year, month, day);
    let seconds = days * 86_400 + hour * 3600 + minute * 60 + second - offset;
    Some(seconds as f64 + fraction)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Median, min and max.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Stats {
    median: f64,
    min: f64,
    max: f64,
}

fn stats(values: impl IntoIterator<Item = f64>) -> Option<Stats> {
    let mut v: Vec<f64> = values.into_iter().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let median = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    Some(Stats {
        median,
        min: v[0],
        max: v[n - 1],
    })
}

/// The printed report.
fn report(all: &[(Guest, Results)], runs: usize, accel: &str) -> String {
    let mut out = String::new();
    let accel = if accel.is_empty() { "?" } else { accel };
    let _ = writeln!(
        out,
        "\nBoot: CRI StartContainer(compute) → {READY_MARKER} (shim, accel {accel}) vs spawn → marker (bare QEMU, tcg)"
    );
    let mut ratios = Vec::new();
    for (guest, r) in all {
        let (Some(shim), Some(bare)) = (
            stats(r.shim.iter().map(|s| s.boot)),
            stats(r.bare.iter().map(|s| s.boot)),
        ) else {
            continue;
        };
        let ratio = shim.median / bare.median;
        ratios.push((guest.name(), ratio));
        let _ = writeln!(
            out,
            "  {:<13}  shim {:.2} s  bare {:.2} s  ratio {:.2}  (median of {runs}; shim {:.2}–{:.2} s, bare {:.2}–{:.2} s)",
            guest.name(),
            shim.median,
            bare.median,
            ratio,
            shim.min,
            shim.max,
            bare.min,
            bare.max
        );
    }
    let verdicts: Vec<String> = ratios
        .iter()
        .map(|(name, ratio)| {
            format!(
                "{name} {}",
                if *ratio <= RATIO_GOAL {
                    "met"
                } else {
                    "MISSED"
                }
            )
        })
        .collect();
    let _ = writeln!(
        out,
        "  ratio goal ≤ {RATIO_GOAL:.2}: {}",
        verdicts.join(", ")
    );

    let _ = writeln!(
        out,
        "\nInside the shim's window (median ms after the StartContainer call; \"-\": not logged):"
    );
    let mut header = format!("  {:<13}", "guest");
    for (column, _, _) in PHASES {
        let _ = write!(header, " {column:>8}");
    }
    let _ = write!(
        header,
        " {:>8} {:>8} | {:>13}",
        "returns", "marker", "guest boot"
    );
    let _ = writeln!(out, "{header}");
    let ms = |s: Option<Stats>| s.map_or("-".to_owned(), |s| format!("{:.0}", s.median * 1e3));
    for (guest, r) in all {
        let mut row = format!("  {:<13}", guest.name());
        for i in 0..PHASES.len() {
            let _ = write!(
                row,
                " {:>8}",
                ms(stats(
                    r.shim
                        .iter()
                        .filter_map(|s| s.phases.get(i).copied().flatten())
                ))
            );
        }
        let resumed = PHASES.len() - 1;
        let guest_boot = stats(
            r.shim
                .iter()
                .filter_map(|s| s.phases.get(resumed).copied().flatten().map(|t| s.boot - t)),
        );
        let bare = stats(r.bare.iter().map(|s| s.boot));
        let _ = write!(
            row,
            " {:>8} {:>8} | {:>6} vs bare {}",
            ms(stats(r.shim.iter().map(|s| s.start_call))),
            ms(stats(r.shim.iter().map(|s| s.boot))),
            ms(guest_boot),
            ms(bare)
        );
        let _ = writeln!(out, "{row}");
    }
    let _ = writeln!(
        out,
        "  disks: task created (VMI read, overlay made); libvirt: embedded driver open; network: tap \
         and DHCP wired; exec: libvirt starts QEMU; paused: QEMU up, CPUs paused; resumed: cgroup, \
         console attached, CPUs running; returns: StartContainer answered; guest boot: resumed → \
         marker, against bare spawn → marker"
    );
    for (guest, r) in all {
        let _ = writeln!(
            out,
            "  before the window, {} (median ms): RunPodSandbox {}, carrier containers {}, CreateContainer(compute) {}",
            guest.name(),
            ms(stats(r.shim.iter().map(|s| s.run_pod_sandbox))),
            ms(stats(r.shim.iter().map(|s| s.carriers))),
            ms(stats(r.shim.iter().map(|s| s.create_compute))),
        );
    }

    let _ = writeln!(out, "\nMemory while the VM runs (median of {runs}):");
    for (guest, r) in all {
        let shim = stats(r.shim.iter().map(|s| s.shim_rss_mib));
        let qemu = stats(r.shim.iter().map(|s| s.qemu_rss_mib));
        let bare = stats(r.bare.iter().map(|s| s.qemu_rss_mib));
        if let (Some(shim), Some(qemu), Some(bare)) = (shim, qemu, bare) {
            let _ = writeln!(
                out,
                "  {:<13}  shim RSS {:.1} MiB per VM (goal ≤ {SHIM_RSS_GOAL_MIB:.0} MiB: {})  QEMU RSS {:.0} MiB (bare {:.0} MiB)  guest RAM {GUEST_MIB} MiB",
                guest.name(),
                shim.median,
                if shim.max <= SHIM_RSS_GOAL_MIB { "met" } else { "MISSED" },
                qemu.median,
                bare.median
            );
        }
    }
    for (guest, r) in all {
        if let Some(cmdline) = r.shim.iter().find_map(|s| s.qemu_cmdline.as_deref()) {
            let _ = writeln!(
                out,
                "\nQEMU command line libvirt ran for {}:\n  {cmdline}",
                guest.name()
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_in_every_format_we_read() {
        let containerd = parse_time("2026-11-23T13:09:01.123456789Z").expect("containerd");
        assert!(
            (containerd - 1_795_439_341.123_456).abs() < 1e-5,
            "{containerd}"
        );
        assert_eq!(parse_time("1970-01-01T00:00:00Z"), Some(0.0));
        assert_eq!(parse_time("1970-01-01 01:00:00.5+0100"), Some(0.5));
        assert_eq!(parse_time("1970-01-01T00:00:00-01:00"), Some(3600.0));
        assert_eq!(
            parse_time("time=\"2000-03-01T00:00:00Z\""),
            Some(951_868_800.0)
        );
        for bad in [
            "",
            "stdout",
            "2026-11-23",
            "2026-13-01T00:00:00Z",
            "2026-11-23T13:09:01",
        ] {
            assert_eq!(parse_time(bad), None, "{bad}");
        }
    }

    #[test]
    fn log_lines_give_their_time() {
        let shim = "1970-01-01T00:00:01.5Z  INFO start{container_id=\"x\"}: VM started pid=1";
        assert_eq!(line_time(shim), Some(1.5));
        let libvirt = "1970-01-01 00:00:02.250+0000: starting up libvirt version: 9.0.0";
        assert_eq!(line_time(libvirt), Some(2.25));
        let containerd = "time=\"1970-01-01T00:00:03Z\" level=info msg=\"StartContainer\"";
        assert_eq!(line_time(containerd), Some(3.0));
        assert_eq!(line_time("-machine pc-q35-7.2"), None);
    }

    #[test]
    fn stats_give_median_min_max() {
        let s = stats([3.0, 1.0, 2.0]).expect("stats");
        assert_eq!((s.median, s.min, s.max), (2.0, 1.0, 3.0));
        assert_eq!(stats([4.0, 1.0]).map(|s| s.median), Some(2.5));
        assert_eq!(stats([]), None);
    }

    #[test]
    fn args_default_and_override() {
        let args = |a: &[&str]| Args::parse(a.iter().map(|s| s.to_string()));
        let default = args(&[]).expect("parse").expect("args");
        assert_eq!((default.runs, default.warmup), (5, 1));
        assert_eq!(default.guests, Guest::ALL.to_vec());
        let some = args(&["--runs", "3", "--guest", "kernelboot"])
            .expect("parse")
            .expect("args");
        assert_eq!((some.runs, some.guests), (3, vec![Guest::KernelBoot]));
        assert!(args(&["--runs", "0"]).is_err());
        assert!(args(&["--bogus"]).is_err());
        assert!(args(&["--help"]).expect("parse").is_none());
    }

    #[test]
    fn vmis_plan_into_pods_ending_with_compute() {
        for (guest, nic) in [(Guest::KernelBoot, true), (Guest::ContainerDisk, false)]
            .into_iter()
            .chain([(Guest::KernelBoot, false), (Guest::ContainerDisk, true)])
        {
            let object = parse_documents(&guest.vmi("bench-x", nic))
                .into_iter()
                .next()
                .expect("one document")
                .expect("parses");
            let plan = local::plan(object).expect("plans");
            assert_eq!(!plan.config.interfaces.is_empty(), nic, "{guest:?}");
            let containers = plan.pod.spec.expect("spec").containers;
            assert_eq!(
                containers.last().map(|c| c.name.as_str()),
                Some(contract::COMPUTE_CONTAINER)
            );
        }
    }
}
