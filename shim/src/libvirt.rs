//! The only module that talks to libvirt (blocking C): one worker thread owns the connection to
//! the pod's embedded QEMU driver (`qemu:///embed?root=…`, no daemon anywhere) and runs the jobs
//! sent to it; libvirt's own event loop runs on another thread, as the embedded driver needs.
//!
//! The shim process lives in the pod's network namespace (see `lifecycle`), so the QEMU that
//! libvirt forks from the worker starts inside it.

use crate::error::{Error, Result};
use crate::qemu_ids::QemuIds;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Once;
use std::thread::JoinHandle;
use virt::connect::Connect;
use virt::domain::{Domain, DomainShutoffReason, DomainState, DomainStateReason};
use virt::enumutil::Enum;

/// `etc/qemu.conf` of a pod's embed root. QEMU runs as the VM's own unprivileged user (numeric:
/// no passwd entry is needed), which libvirt starts with no capabilities (its default
/// `clear_emulator_capabilities`); libvirt's DAC driver gives the VM's disks to that user as it
/// starts QEMU (`dynamic_ownership`) and does not try to remember earlier owners (which needs
/// extended attributes). `security_driver = "none"` names no MAC driver (no SELinux or
/// AppArmor here); libvirt stacks its DAC driver under it regardless when it runs as root, and
/// refuses to start when DAC is named as the primary. libvirt touches no cgroups (the shim places QEMU in the container's),
/// and QEMU's log goes to a file (else libvirt wants virtlogd). QEMU's own seccomp sandbox is
/// libvirt's default (`seccomp_sandbox = 1`: `-sandbox on,…`).
fn qemu_conf(ids: QemuIds) -> String {
    format!(
        "user = \"+{uid}\"\ngroup = \"+{gid}\"\ncgroup_controllers = [ ]\nsecurity_driver = \"none\"\n\
         dynamic_ownership = 1\nremember_owner = 0\nstdio_handler = \"file\"\nseccomp_sandbox = 1\n",
        uid = ids.uid,
        gid = ids.gid
    )
}

type Job = Box<dyn FnOnce(&Connect) + Send>;

/// A connection to the pod's embedded libvirt, on its own thread.
#[derive(Debug)]
pub struct Libvirt {
    /// The pod's capabilities cache and the node's, which the pod's refreshes.
    capabilities: (PathBuf, PathBuf),
    jobs: Option<mpsc::Sender<Job>>,
    worker: Option<JoinHandle<()>>,
    root: PathBuf,
}

/// The libvirt error codes the shim decides by; any other is kept by its number (libvirt's
/// `virErrorNumber`), for the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LibvirtCode {
    /// `VIR_ERR_NO_DOMAIN`: no domain has that name (never defined, or undefined since), so
    /// nothing runs under it.
    NoDomain,
    /// `VIR_ERR_OPERATION_INVALID`: the call does not fit the domain's state. Destroy reports
    /// it only for a domain that is not running; the power button reports it ("domain is not
    /// running") for any domain that is not running *now*, a paused one included.
    OperationInvalid,
    Other(u32),
}

impl LibvirtCode {
    /// Classifies libvirt's raw `virErrorNumber`.
    pub fn from_raw(raw: u32) -> Self {
        match raw {
            virt::sys::VIR_ERR_NO_DOMAIN => Self::NoDomain,
            virt::sys::VIR_ERR_OPERATION_INVALID => Self::OperationInvalid,
            other => Self::Other(other),
        }
    }
}

/// Why a libvirt call failed: what libvirt reported, or that it never answered.
#[derive(Debug, thiserror::Error)]
pub enum LibvirtCause {
    /// libvirt failed the call and said why.
    #[error("{message}")]
    Reported {
        code: LibvirtCode,
        /// The part of libvirt that raised it (`virErrorDomain`), for the log.
        domain: virt::error::ErrorDomainEnum,
        /// libvirt's text with its code and domain, as the binding formats it (and, when
        /// libvirt's text does not say what to do, what to do).
        message: String,
    },
    /// The shim's own way to libvirt failed (the connection is not open, its thread is
    /// gone): libvirt never answered, so there is no code to go by.
    #[error("{0}")]
    Unreachable(&'static str),
}

impl LibvirtCause {
    /// What the binding's error says, its code and domain kept.
    fn reported(e: &virt::error::Error) -> Self {
        Self::reported_as(e, e.to_string())
    }

    /// The binding's error, its code and domain kept, told as `message`.
    fn reported_as(e: &virt::error::Error, message: String) -> Self {
        Self::Reported {
            code: LibvirtCode::from_raw(e.code().to_raw()),
            domain: e.domain(),
            message,
        }
    }
}

fn libvirt_error(context: &'static str) -> impl Fn(virt::error::Error) -> Error {
    move |e| Error::Libvirt {
        context,
        cause: LibvirtCause::reported(&e),
    }
}

/// A libvirt call that got no answer (see [`LibvirtCause::Unreachable`]).
fn no_answer(context: &'static str, why: &'static str) -> Error {
    Error::Libvirt {
        context,
        cause: LibvirtCause::Unreachable(why),
    }
}

/// The user and group Debian's libvirt resolves for QEMU when it runs as root. It does so
/// when the QEMU driver starts, before it reads the embed root's `qemu.conf`, so the names
/// must exist on the node even though virtshim's `qemu.conf` names other ones.
pub const LIBVIRT_QEMU_USER: &str = "libvirt-qemu";

/// Adds to libvirt's "Failed to parse user/group" (the node lacks the user that only Debian's
/// `libvirt-daemon-system` creates) what is missing and how to add it: libvirt's own text
/// names neither the package nor the fix.
fn explain_open_failure(message: String) -> String {
    let missing_user = format!("Failed to parse user '{LIBVIRT_QEMU_USER}'");
    let missing_group = format!("Failed to parse group '{LIBVIRT_QEMU_USER}'");
    if message.contains(&missing_user) || message.contains(&missing_group) {
        format!(
            "{message}: libvirt's QEMU driver needs the system user and group \
             '{LIBVIRT_QEMU_USER}' on the node (Debian's libvirt-daemon-system makes them; \
             virtshim's installer and scripts/deps.sh do too; by hand: \
             groupadd --system {LIBVIRT_QEMU_USER} && useradd --system --gid {LIBVIRT_QEMU_USER} \
             --no-create-home --home-dir /var/lib/libvirt --shell /usr/sbin/nologin {LIBVIRT_QEMU_USER})"
        )
    } else {
        message
    }
}

/// Opens the embedded QEMU driver in a scratch root under `run` and closes it again: what
/// every VM's start needs of the node's libvirt (its QEMU driver module, its QEMU user), for
/// the node installer's check and the fresh-machine test. Returns libvirt's version.
pub fn check_node(run: &Path, capabilities_cache: &Path) -> Result<String> {
    let root = run.join(format!("node-check.{}", std::process::id()));
    // QEMU's capabilities are probed as a VM's user would run it.
    let probe = crate::qemu_ids::for_probing();
    let opened = Libvirt::open(&root, capabilities_cache, probe).and_then(|l| {
        l.call(|conn| conn.lib_version())?
            .map_err(libvirt_error("reading the library version"))
    });
    let _ = std::fs::remove_dir_all(&root);
    let v = opened?;
    Ok(format!(
        "libvirt {}.{}.{}: embedded QEMU driver opens",
        v / 1_000_000,
        (v / 1_000) % 1_000,
        v % 1_000
    ))
}

static EVENT_LOOP: Once = Once::new();

/// Registers libvirt's default event loop once per process and runs it on a thread: the
/// embedded driver handles QEMU's monitor through it.
fn start_event_loop() -> Result<()> {
    let mut result = Ok(());
    EVENT_LOOP.call_once(|| {
        if let Err(e) = virt::event::event_register_default_impl() {
            result = Err(libvirt_error("registering the event loop")(e));
            return;
        }
        let spawned = std::thread::Builder::new()
            .name("libvirt-events".into())
            .spawn(|| loop {
                if let Err(e) = virt::event::event_run_default_impl() {
                    tracing::error!(error = %e, "libvirt event loop");
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
            });
        if let Err(e) = spawned {
            result = Err(Error::io("starting the libvirt event thread", e));
        }
    });
    result
}

impl Libvirt {
    /// Prepares the embed root (config, capabilities cache seeded from the node's) and opens it.
    pub fn open(root: &Path, capabilities_cache: &Path, ids: QemuIds) -> Result<Self> {
        crate::reaper::start();
        start_event_loop()?;
        let etc = root.join("etc");
        std::fs::create_dir_all(&etc)
            .map_err(|e| Error::path("creating the libvirt root", &etc, e))?;
        std::fs::write(etc.join("qemu.conf"), qemu_conf(ids))
            .map_err(|e| Error::path("writing qemu.conf", &etc, e))?;
        let pod_cache = root.join("cache/qemu/capabilities");
        // Probing QEMU's capabilities takes seconds; a copy of the node's cache makes the first
        // open of a fresh root instant. libvirt re-probes by itself if QEMU changed.
        copy_xml_files(capabilities_cache, &pod_cache);

        let uri = format!("qemu:///embed?root={}", root.display());
        let (opened_tx, opened_rx) = mpsc::channel::<Result<()>>();
        let (jobs_tx, jobs_rx) = mpsc::channel::<Job>();
        let worker = std::thread::Builder::new()
            .name("libvirt".into())
            .spawn(move || {
                let conn = match Connect::open(Some(&uri)) {
                    Ok(c) => c,
                    Err(e) => {
                        let message = explain_open_failure(e.to_string());
                        let _ = opened_tx.send(Err(Error::Libvirt {
                            context: "opening the embedded driver",
                            cause: LibvirtCause::reported_as(&e, message),
                        }));
                        return;
                    }
                };
                let _ = opened_tx.send(Ok(()));
                for job in jobs_rx {
                    job(&conn);
                }
                // Dropping the connection closes it, on this thread.
                drop(conn);
            })
            .map_err(|e| Error::io("starting the libvirt thread", e))?;
        opened_rx
            .recv()
            .map_err(|_| no_answer("opening the embedded driver", "the libvirt thread died"))??;
        Ok(Self {
            capabilities: (pod_cache, capabilities_cache.to_path_buf()),
            jobs: Some(jobs_tx),
            worker: Some(worker),
            root: root.to_path_buf(),
        })
    }

    /// Runs `job` on the libvirt thread and returns its result.
    pub fn call<T: Send + 'static>(
        &self,
        job: impl FnOnce(&Connect) -> T + Send + 'static,
    ) -> Result<T> {
        let (tx, rx) = mpsc::channel();
        let jobs = self
            .jobs
            .as_ref()
            .ok_or_else(|| no_answer("calling libvirt", "connection closed"))?;
        jobs.send(Box::new(move |conn| {
            let _ = tx.send(job(conn));
        }))
        .map_err(|_| no_answer("calling libvirt", "the libvirt thread is gone"))?;
        rx.recv()
            .map_err(|_| no_answer("calling libvirt", "the libvirt thread died"))
    }

    /// Defines the domain and starts it with its CPUs paused; returns QEMU's pid.
    pub fn start_paused(&self, name: &str, xml: String) -> Result<u32> {
        self.call(move |conn| -> Result<()> {
            let domain = conn
                .define_domain_xml(&xml)
                .map_err(libvirt_error("defining the domain"))?;
            domain
                .create_with_flags(virt::sys::VIR_DOMAIN_START_PAUSED)
                .map_err(libvirt_error("starting QEMU"))
        })??;
        // libvirt probes QEMU lazily, on the first define, and re-probes when its cached answer
        // is stale (another QEMU, another shim binary); the node's copy keeps the next pod
        // from paying the seconds that costs.
        copy_xml_files(&self.capabilities.0, &self.capabilities.1);
        let pidfile = self.root.join("run/qemu").join(format!("{name}.pid"));
        let text = std::fs::read_to_string(&pidfile)
            .map_err(|e| Error::path("reading QEMU's pid", &pidfile, e))?;
        text.trim().parse().map_err(|source| Error::QemuPid {
            path: pidfile,
            text,
            source,
        })
    }

    fn with_domain<T: Send + 'static>(
        &self,
        name: &str,
        context: &'static str,
        op: impl FnOnce(&Domain) -> std::result::Result<T, virt::error::Error> + Send + 'static,
    ) -> Result<T> {
        let name = name.to_owned();
        self.call(move |conn| {
            let domain = conn
                .lookup_domain_by_name(&name)
                .map_err(libvirt_error(context))?;
            op(&domain).map_err(libvirt_error(context))
        })?
    }

    pub fn resume(&self, name: &str) -> Result<()> {
        self.with_domain(name, "resuming the VM", |d| d.resume())
    }

    pub fn suspend(&self, name: &str) -> Result<()> {
        self.with_domain(name, "pausing the VM", |d| d.suspend())
    }

    /// Presses the ACPI power button: the guest shuts down by itself.
    pub fn power_button(&self, name: &str) -> Result<()> {
        self.with_domain(name, "pressing the ACPI power button", |d| {
            d.shutdown_flags(virt::sys::VIR_DOMAIN_SHUTDOWN_ACPI_POWER_BTN)
        })
    }

    /// Stops QEMU at once.
    pub fn destroy(&self, name: &str) -> Result<()> {
        self.with_domain(name, "destroying the VM", |d| d.destroy())
    }

    /// The domain's state as the shim cares about it.
    pub fn state(&self, name: &str) -> Result<VmState> {
        self.with_domain(name, "reading the VM state", |d| d.state())
            .map(|(state, reason)| match (state, reason) {
                (Enum::Known(DomainState::Running), _) => VmState::Running,
                (Enum::Known(DomainState::Paused), _) => VmState::Paused,
                (
                    Enum::Known(DomainState::Shutoff),
                    Enum::Known(DomainStateReason::Shutoff(Enum::Known(r))),
                ) => VmState::Off(match r {
                    DomainShutoffReason::Shutdown => OffReason::GuestShutdown,
                    DomainShutoffReason::Destroyed => OffReason::Destroyed,
                    DomainShutoffReason::Crashed => OffReason::Crashed,
                    _ => OffReason::Other,
                }),
                (Enum::Known(DomainState::Shutoff | DomainState::Crashed), _) => {
                    VmState::Off(OffReason::Crashed)
                }
                _ => VmState::Other,
            })
    }

    /// Removes the domain's definition (it must be off).
    pub fn undefine(&self, name: &str) -> Result<()> {
        self.with_domain(name, "removing the domain", |d| {
            d.undefine_flags(virt::sys::VIR_DOMAIN_UNDEFINE_NVRAM)
        })
    }
}

impl Drop for Libvirt {
    fn drop(&mut self) {
        self.jobs = None;
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
    }
}

/// What the VM is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VmState {
    Running,
    Paused,
    Off(OffReason),
    Other,
}

/// Why the VM is off.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OffReason {
    GuestShutdown,
    Destroyed,
    Crashed,
    Other,
}

/// Copies the `*.xml` files of one folder into another, best effort (a cache).
fn copy_xml_files(from: &Path, to: &Path) {
    let Ok(entries) = std::fs::read_dir(from) else {
        return;
    };
    if std::fs::create_dir_all(to).is_err() {
        return;
    }
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "xml") {
            if let Some(name) = path.file_name() {
                let tmp = to.join(format!(".{}.tmp", name.to_string_lossy()));
                if std::fs::copy(&path, &tmp).is_ok() {
                    let _ = std::fs::rename(&tmp, to.join(name));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{LibvirtCause, LibvirtCode};
    use crate::error::Error;

    #[test]
    fn libvirt_codes_are_classified_by_number() {
        assert_eq!(
            LibvirtCode::from_raw(virt::sys::VIR_ERR_NO_DOMAIN),
            LibvirtCode::NoDomain
        );
        assert_eq!(
            LibvirtCode::from_raw(virt::sys::VIR_ERR_OPERATION_INVALID),
            LibvirtCode::OperationInvalid
        );
        assert_eq!(
            LibvirtCode::from_raw(virt::sys::VIR_ERR_OPERATION_TIMEOUT),
            LibvirtCode::Other(virt::sys::VIR_ERR_OPERATION_TIMEOUT)
        );
        // A code newer than the binding.
        assert_eq!(LibvirtCode::from_raw(100_000), LibvirtCode::Other(100_000));
    }

    /// The message says what it said before the code was kept, and the code is there to match.
    #[test]
    fn a_reported_error_keeps_its_text_and_code() {
        let e = Error::Libvirt {
            context: "destroying the VM",
            cause: LibvirtCause::Reported {
                code: LibvirtCode::NoDomain,
                domain: virt::enumutil::Enum::Known(virt::error::ErrorDomain::Qemu),
                message: "no domain with matching name 'default_vm1'".into(),
            },
        };
        assert_eq!(
            e.to_string(),
            "libvirt: destroying the VM: no domain with matching name 'default_vm1'"
        );
        assert_eq!(e.libvirt_code(), Some(LibvirtCode::NoDomain));
        assert!(std::error::Error::source(&e).is_some());

        let e = Error::Libvirt {
            context: "calling libvirt",
            cause: LibvirtCause::Unreachable("the libvirt thread died"),
        };
        assert_eq!(
            e.to_string(),
            "libvirt: calling libvirt: the libvirt thread died"
        );
        assert_eq!(e.libvirt_code(), None);
    }

    #[test]
    fn a_missing_qemu_user_is_explained() {
        let libvirt = "invalid argument: Failed to parse user 'libvirt-qemu'".to_owned();
        let explained = super::explain_open_failure(libvirt.clone());
        assert!(explained.starts_with(&libvirt));
        assert!(explained.contains("useradd --system"), "{explained}");
        let other = "some other failure".to_owned();
        assert_eq!(super::explain_open_failure(other.clone()), other);
    }
}
