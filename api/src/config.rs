//! The validated configuration of one VM: what the shim builds a domain from.
//!
//! Produced only by [`crate::validate::vmi_spec`], so every value here has passed KubeVirt's rules
//! and virtshim's bounds: names are DNS labels, sizes are in range, every disk has exactly one
//! source, every interface exactly one network. Code downstream never re-checks.

use std::fmt;

/// Guest memory in bytes, between [`MemoryBytes::MIN`] and [`MemoryBytes::MAX`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct MemoryBytes(u64);

impl MemoryBytes {
    /// KubeVirt's lower bound ("must be greater than or equal to 1M").
    pub const MIN: u64 = 1_000_000;
    /// virtshim's upper bound: far beyond any node here, small enough that no arithmetic overflows.
    pub const MAX: u64 = 16 << 40;

    pub(crate) fn new(bytes: u64) -> Option<Self> {
        (Self::MIN..=Self::MAX)
            .contains(&bytes)
            .then_some(Self(bytes))
    }
    pub fn bytes(self) -> u64 {
        self.0
    }
    /// Rounded up to whole KiB, the unit libvirt's `<memory>` takes.
    pub fn kib(self) -> u64 {
        self.0.div_ceil(1024)
    }
}

/// vCPU topology; every count at least 1 and their product at most [`CpuTopology::MAX_VCPUS`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuTopology {
    sockets: u32,
    cores: u32,
    threads: u32,
}

impl CpuTopology {
    /// The bound KubeVirt uses for hotplug topologies; beyond any q35 guest's practical size.
    pub const MAX_VCPUS: u32 = 512;

    pub(crate) fn new(sockets: u32, cores: u32, threads: u32) -> Option<Self> {
        let total = sockets.checked_mul(cores)?.checked_mul(threads)?;
        (sockets >= 1 && cores >= 1 && threads >= 1 && total <= Self::MAX_VCPUS).then_some(Self {
            sockets,
            cores,
            threads,
        })
    }
    pub fn sockets(self) -> u32 {
        self.sockets
    }
    pub fn cores(self) -> u32 {
        self.cores
    }
    pub fn threads(self) -> u32 {
        self.threads
    }
    pub fn vcpus(self) -> u32 {
        self.sockets * self.cores * self.threads
    }
}

/// The guest CPU model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CpuModel {
    HostModel,
    HostPassthrough,
    /// A QEMU CPU model name (`Skylake-Server`, `qemu64`, …): letters, digits, `-`, `_`, `.`.
    Named(String),
}

/// How the guest firmware starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Bootloader {
    Bios { use_serial: bool },
    Efi { secure_boot: bool },
}

/// How the kubelet pulls an image (`imagePullPolicy`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PullPolicy {
    Always,
    IfNotPresent,
    Never,
}

impl PullPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            PullPolicy::Always => "Always",
            PullPolicy::IfNotPresent => "IfNotPresent",
            PullPolicy::Never => "Never",
        }
    }
}

/// An image a pod container runs, with how to pull it: KubeVirt puts a containerDisk's or
/// kernelBoot's `imagePullPolicy` on its container and its `imagePullSecret` on the pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageRef {
    pub reference: String,
    /// None: the kubelet's default (`Always` for `:latest`, else `IfNotPresent`).
    pub pull_policy: Option<PullPolicy>,
    /// A Secret in the VMI's namespace.
    pub pull_secret: Option<String>,
}

/// `firmware.kernelBoot`, validated: paths are absolute, normalized and free of `..`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelBoot {
    pub image: ImageRef,
    pub kernel_path: Option<String>,
    pub initrd_path: Option<String>,
    pub kernel_args: Option<String>,
}

/// Where a disk's bytes come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VolumeSource {
    /// A disk image inside a container image; `path` is absolute, without `..`.
    ContainerDisk {
        image: ImageRef,
        path: Option<String>,
    },
    CloudInit(CloudInit),
    /// A blank disk of this many bytes.
    EmptyDisk {
        capacity: u64,
    },
    PersistentVolumeClaim {
        claim_name: String,
        read_only: bool,
    },
}

/// NoCloud or ConfigDrive, and the data they carry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CloudInit {
    pub format: CloudInitFormat,
    pub user_data: Option<CloudInitData>,
    pub network_data: Option<CloudInitData>,
}

/// The ISO layout and volume label cloud-init looks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloudInitFormat {
    /// Volume label `cidata`.
    NoCloud,
    /// Volume label `config-2`.
    ConfigDrive,
}

/// Cloud-init data: given inline (base64 already decoded) or in a Secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CloudInitData {
    Inline(String),
    Secret { name: String },
}

/// The bus a disk sits on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DiskBus {
    Virtio,
    Sata,
    Scsi,
    Usb,
}

impl DiskBus {
    pub const NAMES: &'static [&'static str] = &["virtio", "sata", "scsi", "usb"];

    pub(crate) fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "virtio" => Self::Virtio,
            "sata" => Self::Sata,
            "scsi" => Self::Scsi,
            "usb" => Self::Usb,
            _ => return None,
        })
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Virtio => "virtio",
            Self::Sata => "sata",
            Self::Scsi => "scsi",
            Self::Usb => "usb",
        }
    }
}

impl fmt::Display for DiskBus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How the guest sees a disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DiskDevice {
    Disk {
        bus: DiskBus,
        read_only: bool,
    },
    Cdrom {
        bus: DiskBus,
        read_only: bool,
        tray_open: bool,
    },
}

/// One guest disk and its volume.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiskConfig {
    /// A DNS label, unique among the VMI's disks.
    pub name: String,
    pub device: DiskDevice,
    pub boot_order: Option<u32>,
    /// Letters, digits, `-`, `_`, `.`; at most 20 characters (the virtio-blk serial limit).
    pub serial: Option<String>,
    pub source: VolumeSource,
}

/// NIC models KubeVirt accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NicModel {
    Virtio,
    E1000,
    E1000e,
    Igb,
    Ne2kPci,
    Pcnet,
    Rtl8139,
}

impl NicModel {
    pub const NAMES: &'static [&'static str] = &[
        "virtio", "e1000", "e1000e", "igb", "ne2k_pci", "pcnet", "rtl8139",
    ];

    pub(crate) fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "virtio" => Self::Virtio,
            "e1000" => Self::E1000,
            "e1000e" => Self::E1000e,
            "igb" => Self::Igb,
            "ne2k_pci" => Self::Ne2kPci,
            "pcnet" => Self::Pcnet,
            "rtl8139" => Self::Rtl8139,
            _ => return None,
        })
    }
    /// The name libvirt's `<model type=…>` takes.
    pub fn as_str(self) -> &'static str {
        Self::NAMES[self as usize]
    }
}

/// A MAC address, six octets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MacAddress(pub [u8; 6]);

impl fmt::Display for MacAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

/// A forwarded port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortConfig {
    pub protocol: Protocol,
    pub port: u16,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Tcp,
    Udp,
}

/// How a NIC connects to the pod network.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Binding {
    /// The guest takes the pod's IP and MAC.
    Bridge,
    /// The guest sits behind NAT; `ports` empty means every port is forwarded.
    Masquerade { ports: Vec<PortConfig> },
}

/// One guest NIC on the pod network.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InterfaceConfig {
    pub name: String,
    pub model: NicModel,
    pub binding: Binding,
    pub mac: Option<MacAddress>,
    /// The pod network's `vmNetworkCIDR` (masquerade's guest-side network), when given.
    pub vm_network_cidr: Option<String>,
}

/// Everything the shim needs to run one VMI, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VmiConfig {
    pub memory: MemoryBytes,
    pub cpu: CpuTopology,
    pub cpu_model: CpuModel,
    /// `q35` or a versioned `pc-q35-*`.
    pub machine_type: String,
    pub bootloader: Bootloader,
    pub kernel_boot: Option<KernelBoot>,
    pub firmware_uuid: uuid::Uuid,
    pub firmware_serial: Option<String>,
    pub acpi: bool,
    pub smm: bool,
    pub disks: Vec<DiskConfig>,
    pub interfaces: Vec<InterfaceConfig>,
    pub serial_console: bool,
    pub graphics: bool,
    pub rng: bool,
    pub start_paused: bool,
    pub termination_grace_period_seconds: u32,
    pub hostname: Option<String>,
    /// `spec.subdomain`: with a headless Service of that name, the guest's FQDN is
    /// `<hostname>.<subdomain>.<namespace>.svc.<cluster domain>`.
    pub subdomain: Option<String>,
    /// `spec.accessCredentials` with `sshPublicKey`, in order.
    pub ssh_keys: Vec<SshKeys>,
}

/// A Secret whose every value is an SSH public key, for the cloud-init disk of `format` (the
/// `noCloud` or `configDrive` propagation method), as KubeVirt puts them in its metadata.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SshKeys {
    pub secret: String,
    pub format: CloudInitFormat,
}
