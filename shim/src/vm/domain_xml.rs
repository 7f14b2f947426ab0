//! Builds libvirt domain XML from a resolved VM, with a writer that escapes every attribute
//! and text node: names, serials and paths come from hostile annotations and images.

use virtshim_api::config::{Bootloader, CpuModel, CpuTopology, DiskBus};

/// Hardware acceleration for the guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accel {
    Kvm,
    /// QEMU's software emulation, KubeVirt's `useEmulation`.
    Tcg,
}

/// A disk with its host file resolved and checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvedDisk {
    pub name: String,
    pub cdrom: bool,
    /// `cdrom.tray: open`, written as KubeVirt writes it (`<target tray='open'/>`). Seen here:
    /// libvirt 9.0 keeps it in the definition but starts QEMU with the medium in, as it does
    /// under KubeVirt; the guest still reads the disc.
    pub tray_open: bool,
    pub bus: DiskBus,
    pub read_only: bool,
    /// A regular file, or a block device (a block-mode PVC).
    pub file: String,
    pub block_device: bool,
    /// `qcow2` or `raw`: always given, never probed by QEMU.
    pub format: &'static str,
    pub serial: Option<String>,
    pub boot_order: Option<u32>,
}

/// A kernel and initrd with their host files resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvedKernel {
    pub kernel: Option<String>,
    pub initrd: Option<String>,
    pub cmdline: Option<String>,
}

/// A NIC on a bridge of the pod's namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DomainNic {
    pub name: String,
    pub bridge: String,
    pub mac: String,
    /// libvirt's model name (`virtio`, `e1000`, …).
    pub model: &'static str,
    pub mtu: u16,
}

/// Everything the XML says.
#[derive(Clone, Debug)]
pub struct DomainPlan {
    pub name: String,
    pub uuid: String,
    pub memory_kib: u64,
    pub cpu: CpuTopology,
    pub cpu_model: CpuModel,
    pub accel: Accel,
    /// QEMU's translated-code cache under TCG (`None`: QEMU's default).
    pub tb_cache_mib: Option<u32>,
    pub machine: String,
    pub acpi: bool,
    pub smm: bool,
    pub bootloader: Bootloader,
    pub kernel: Option<ResolvedKernel>,
    pub smbios_serial: Option<String>,
    pub disks: Vec<ResolvedDisk>,
    pub nics: Vec<DomainNic>,
    pub serial_socket: Option<String>,
    pub vnc_socket: Option<String>,
    pub rng: bool,
    pub emulator: String,
}

/// A minimal XML writer: elements, escaped attributes and text.
struct Writer {
    out: String,
    open: Vec<&'static str>,
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // Control characters are not allowed in XML 1.0 at all; validation already refuses
            // them, and this keeps the writer safe on its own.
            c if (c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r') => {}
            c => out.push(c),
        }
    }
    out
}

impl Writer {
    fn new() -> Self {
        Self {
            out: String::new(),
            open: Vec::new(),
        }
    }
    fn indent(&mut self) {
        for _ in 0..self.open.len() {
            self.out.push_str("  ");
        }
    }
    fn start(&mut self, tag: &'static str, attrs: &[(&str, &str)]) -> &mut Self {
        self.indent();
        self.out.push('<');
        self.out.push_str(tag);
        for (k, v) in attrs {
            self.out.push_str(&format!(" {k}=\"{}\"", escape(v)));
        }
        self.out.push_str(">\n");
        self.open.push(tag);
        self
    }
    fn end(&mut self) -> &mut Self {
        if let Some(tag) = self.open.pop() {
            self.indent();
            self.out.push_str(&format!("</{tag}>\n"));
        }
        self
    }
    fn leaf(&mut self, tag: &'static str, attrs: &[(&str, &str)], text: Option<&str>) -> &mut Self {
        self.indent();
        self.out.push('<');
        self.out.push_str(tag);
        for (k, v) in attrs {
            self.out.push_str(&format!(" {k}=\"{}\"", escape(v)));
        }
        match text {
            Some(t) => self.out.push_str(&format!(">{}</{tag}>\n", escape(t))),
            None => self.out.push_str("/>\n"),
        }
        self
    }
}

/// Guest device names: `vd?` on virtio, `sd?` on the SCSI-like buses (sata, scsi, usb).
fn device_name(prefix: &str, index: usize) -> String {
    let mut n = index;
    let mut suffix = Vec::new();
    loop {
        suffix.push(b'a' + (n % 26) as u8);
        if n < 26 {
            break;
        }
        n = n / 26 - 1;
    }
    suffix.reverse();
    format!("{prefix}{}", String::from_utf8_lossy(&suffix))
}

impl DomainPlan {
    /// The domain, element by element as libvirt's schema orders them.
    pub fn to_xml(&self) -> String {
        let mut w = Writer::new();
        let domain_type = match self.accel {
            Accel::Kvm => "kvm",
            Accel::Tcg => "qemu",
        };
        w.start("domain", &[("type", domain_type)]);
        w.leaf("name", &[], Some(&self.name));
        w.leaf("uuid", &[], Some(&self.uuid));
        w.leaf(
            "memory",
            &[("unit", "KiB")],
            Some(&self.memory_kib.to_string()),
        );
        w.leaf(
            "vcpu",
            &[("placement", "static")],
            Some(&self.cpu.vcpus().to_string()),
        );
        self.sysinfo(&mut w);
        self.os(&mut w);
        self.features(&mut w);
        self.cpu(&mut w);
        self.lifecycle(&mut w);
        w.start("devices", &[]);
        w.leaf("emulator", &[], Some(&self.emulator));
        self.controllers(&mut w);
        self.disks(&mut w);
        self.interfaces(&mut w);
        self.serial_console(&mut w);
        self.display(&mut w);
        self.rng(&mut w);
        w.leaf("memballoon", &[("model", "none")], None);
        w.end();
        w.end();
        w.out
    }

    /// `<sysinfo>`: the SMBIOS tables KubeVirt gives its guests.
    fn sysinfo(&self, w: &mut Writer) {
        w.start("sysinfo", &[("type", "smbios")])
            .start("system", &[]);
        w.leaf("entry", &[("name", "manufacturer")], Some("KubeVirt"));
        w.leaf("entry", &[("name", "product")], Some("None"));
        w.leaf("entry", &[("name", "family")], Some("KubeVirt"));
        w.leaf("entry", &[("name", "uuid")], Some(&self.uuid));
        if let Some(serial) = &self.smbios_serial {
            w.leaf("entry", &[("name", "serial")], Some(serial));
        }
        w.end().end();
    }

    /// `<os>`: firmware (BIOS or UEFI, by features), machine type, kernel boot.
    fn os(&self, w: &mut Writer) {
        match &self.bootloader {
            Bootloader::Efi { .. } => w.start("os", &[("firmware", "efi")]),
            Bootloader::Bios { .. } => w.start("os", &[]),
        };
        w.leaf(
            "type",
            &[("arch", "x86_64"), ("machine", &self.machine)],
            Some("hvm"),
        );
        if let Bootloader::Efi { secure_boot } = &self.bootloader {
            // libvirt picks the OVMF build from QEMU's firmware descriptors by these features
            // (a `<loader secure=…>` beside autoselection is refused). Secure boot takes the
            // build with Microsoft's keys enrolled, as KubeVirt's OVMF_VARS.secboot.fd has:
            // Windows and shim-signed distributions boot unchanged.
            let on = if *secure_boot { "yes" } else { "no" };
            w.start("firmware", &[]);
            w.leaf("feature", &[("enabled", on), ("name", "secure-boot")], None);
            w.leaf(
                "feature",
                &[("enabled", on), ("name", "enrolled-keys")],
                None,
            );
            w.end();
        }
        if let Bootloader::Bios { use_serial: true } = &self.bootloader {
            w.leaf("bios", &[("useserial", "yes")], None);
        }
        w.leaf("smbios", &[("mode", "sysinfo")], None);
        if let Some(kernel) = &self.kernel {
            if let Some(k) = &kernel.kernel {
                w.leaf("kernel", &[], Some(k));
            }
            if let Some(i) = &kernel.initrd {
                w.leaf("initrd", &[], Some(i));
            }
            if let Some(c) = &kernel.cmdline {
                w.leaf("cmdline", &[], Some(c));
            }
        }
        w.end();
    }

    /// `<features>`: ACPI, SMM, and TCG's translated-code cache.
    fn features(&self, w: &mut Writer) {
        w.start("features", &[]);
        if self.acpi {
            w.leaf("acpi", &[], None);
        }
        if self.smm {
            w.leaf("smm", &[("state", "on")], None);
        }
        if let (Accel::Tcg, Some(mib)) = (self.accel, self.tb_cache_mib) {
            w.start("tcg", &[]);
            w.leaf("tb-cache", &[("unit", "MiB")], Some(&mib.to_string()));
            w.end();
        }
        w.end();
    }

    /// `<cpu>`: the model (no host CPU to copy under TCG) and the topology.
    fn cpu(&self, w: &mut Writer) {
        let topology = [
            ("sockets", self.cpu.sockets().to_string()),
            ("dies", "1".to_owned()),
            ("cores", self.cpu.cores().to_string()),
            ("threads", self.cpu.threads().to_string()),
        ];
        let topology: Vec<(&str, &str)> = topology.iter().map(|(k, v)| (*k, v.as_str())).collect();
        match (&self.cpu_model, self.accel) {
            (CpuModel::HostModel, Accel::Kvm) => w.start("cpu", &[("mode", "host-model")]),
            (CpuModel::HostPassthrough, Accel::Kvm) => {
                w.start("cpu", &[("mode", "host-passthrough")])
            }
            // Under emulation there is no host CPU to copy; QEMU's default model boots fastest.
            (CpuModel::HostModel | CpuModel::HostPassthrough, Accel::Tcg) => {
                w.start(
                    "cpu",
                    &[("mode", "custom"), ("match", "exact"), ("check", "none")],
                );
                w.leaf("model", &[("fallback", "allow")], Some("qemu64"))
            }
            (CpuModel::Named(model), _) => {
                w.start(
                    "cpu",
                    &[("mode", "custom"), ("match", "exact"), ("check", "none")],
                );
                w.leaf("model", &[("fallback", "allow")], Some(model))
            }
        };
        w.leaf("topology", &topology, None);
        w.end();
    }

    /// The clock and what power-off, reboot and crash do.
    fn lifecycle(&self, w: &mut Writer) {
        w.leaf("clock", &[("offset", "utc")], None);
        w.leaf("on_poweroff", &[], Some("destroy"));
        w.leaf("on_reboot", &[], Some("restart"));
        w.leaf("on_crash", &[], Some("destroy"));
    }

    /// USB (none unless a disk needs it) and virtio-scsi when a disk is on SCSI.
    fn controllers(&self, w: &mut Writer) {
        // Without this line libvirt adds a USB controller by default, which costs the guest
        // 0.1–0.2 s of boot under TCG; KubeVirt also leaves USB out unless a device needs it.
        if self.disks.iter().any(|d| d.bus == DiskBus::Usb) {
            w.leaf(
                "controller",
                &[("type", "usb"), ("index", "0"), ("model", "qemu-xhci")],
                None,
            );
        } else {
            w.leaf(
                "controller",
                &[("type", "usb"), ("index", "0"), ("model", "none")],
                None,
            );
        }
        if self.disks.iter().any(|d| d.bus == DiskBus::Scsi) {
            w.leaf(
                "controller",
                &[("type", "scsi"), ("index", "0"), ("model", "virtio-scsi")],
                None,
            );
        }
    }

    /// `<disk>`s, named `vdX`/`sdX` per bus in order, the first booting unless boot orders say.
    fn disks(&self, w: &mut Writer) {
        let (mut vd, mut sd) = (0, 0);
        let any_boot_order = self.disks.iter().any(|d| d.boot_order.is_some());
        for (i, disk) in self.disks.iter().enumerate() {
            let dev = if disk.bus == DiskBus::Virtio {
                vd += 1;
                device_name("vd", vd - 1)
            } else {
                sd += 1;
                device_name("sd", sd - 1)
            };
            w.start(
                "disk",
                &[
                    ("type", if disk.block_device { "block" } else { "file" }),
                    ("device", if disk.cdrom { "cdrom" } else { "disk" }),
                ],
            );
            w.leaf(
                "driver",
                &[
                    ("name", "qemu"),
                    ("type", disk.format),
                    ("discard", "unmap"),
                ],
                None,
            );
            let source = if disk.block_device { "dev" } else { "file" };
            w.leaf("source", &[(source, &disk.file)], None);
            let mut target = vec![("dev", dev.as_str()), ("bus", disk.bus.as_str())];
            if disk.tray_open {
                target.push(("tray", "open"));
            }
            w.leaf("target", &target, None);
            if disk.read_only {
                w.leaf("readonly", &[], None);
            }
            if let Some(serial) = &disk.serial {
                w.leaf("serial", &[], Some(serial));
            }
            // Without boot orders, the first disk boots (KubeVirt leaves that to the firmware,
            // which picks the same disk); a kernel boot needs none.
            let order = disk
                .boot_order
                .or((!any_boot_order && i == 0 && self.kernel.is_none()).then_some(1));
            if let Some(order) = order {
                w.leaf("boot", &[("order", &order.to_string())], None);
            }
            w.leaf("alias", &[("name", &format!("ua-{}", disk.name))], None);
            w.end();
        }
    }

    /// `<interface>`s on bridges of the pod's namespace.
    fn interfaces(&self, w: &mut Writer) {
        for nic in &self.nics {
            w.start("interface", &[("type", "bridge")]);
            w.leaf("source", &[("bridge", &nic.bridge)], None);
            w.leaf("mac", &[("address", &nic.mac)], None);
            w.leaf("model", &[("type", nic.model)], None);
            w.leaf("mtu", &[("size", &nic.mtu.to_string())], None);
            w.leaf("alias", &[("name", &format!("ua-{}", nic.name))], None);
            w.end();
        }
    }

    /// The serial port and its console, on a unix socket the shim serves.
    fn serial_console(&self, w: &mut Writer) {
        if let Some(socket) = &self.serial_socket {
            w.start("serial", &[("type", "unix")]);
            w.leaf("source", &[("mode", "bind"), ("path", socket)], None);
            w.leaf("target", &[("port", "0")], None);
            w.end();
            w.start("console", &[("type", "unix")]);
            w.leaf("source", &[("mode", "bind"), ("path", socket)], None);
            w.leaf("target", &[("type", "serial"), ("port", "0")], None);
            w.end();
        }
    }

    /// VNC on a unix socket, with a VGA card.
    fn display(&self, w: &mut Writer) {
        if let Some(socket) = &self.vnc_socket {
            w.leaf("graphics", &[("type", "vnc"), ("socket", socket)], None);
            w.start("video", &[])
                .leaf(
                    "model",
                    &[("type", "vga"), ("heads", "1"), ("vram", "16384")],
                    None,
                )
                .end();
        }
    }

    /// virtio-rng from the host's /dev/urandom.
    fn rng(&self, w: &mut Writer) {
        if self.rng {
            w.start("rng", &[("model", "virtio")])
                .leaf("backend", &[("model", "random")], Some("/dev/urandom"))
                .end();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use virtshim_api::config::CpuModel;

    fn plan() -> DomainPlan {
        DomainPlan {
            name: "ns_vm".into(),
            uuid: "0d2a2043-41c0-59c3-9b17-025022203668".into(),
            memory_kib: 131072,
            cpu: virtshim_api::validate::vmi_spec(&Default::default())
                .map(|c| c.cpu)
                .unwrap_or_else(|_| test_topology()),
            cpu_model: CpuModel::HostModel,
            accel: Accel::Tcg,
            tb_cache_mib: Some(32),
            machine: "q35".into(),
            acpi: true,
            smm: false,
            bootloader: Bootloader::Bios { use_serial: false },
            kernel: None,
            smbios_serial: None,
            disks: vec![],
            nics: vec![],
            serial_socket: Some("/run/virtshim/pods/x/serial.sock".into()),
            vnc_socket: None,
            rng: false,
            emulator: "/usr/bin/qemu-system-x86_64".into(),
        }
    }

    fn test_topology() -> CpuTopology {
        let yaml = "apiVersion: kubevirt.io/v1\nkind: VirtualMachineInstance\nmetadata: {name: t}\nspec: {domain: {devices: {}, memory: {guest: 64Mi}}}\n";
        let object = virtshim_api::manifest::parse_documents(yaml)
            .remove(0)
            .expect("yaml");
        let virtshim_api::manifest::Object::VirtualMachineInstance(vmi) = object else {
            panic!()
        };
        virtshim_api::validate::vmi(&vmi).expect("valid").cpu
    }

    #[test]
    fn the_translation_cache_is_sized_under_tcg_only() {
        let mut p = plan();
        let xml = p.to_xml();
        let tcg: String = xml
            .split("<tcg>")
            .nth(1)
            .and_then(|rest| rest.split("</tcg>").next())
            .unwrap_or_default()
            .split_whitespace()
            .collect();
        assert_eq!(tcg, "<tb-cacheunit=\"MiB\">32</tb-cache>", "{xml}");
        p.tb_cache_mib = None;
        assert!(!p.to_xml().contains("<tcg>"));
        p.tb_cache_mib = Some(32);
        p.accel = Accel::Kvm;
        assert!(!p.to_xml().contains("<tcg>"));
    }

    #[test]
    fn efi_firmware_is_chosen_by_features() {
        let mut p = plan();
        p.bootloader = Bootloader::Efi { secure_boot: true };
        p.smm = true;
        let xml = p.to_xml();
        assert!(xml.contains("<os firmware=\"efi\">"), "{xml}");
        let firmware: String = xml
            .split("<firmware>")
            .nth(1)
            .and_then(|rest| rest.split("</firmware>").next())
            .unwrap_or_default()
            .split_whitespace()
            .collect();
        assert_eq!(
            firmware,
            "<featureenabled=\"yes\"name=\"secure-boot\"/><featureenabled=\"yes\"name=\"enrolled-keys\"/>",
            "{xml}"
        );
        assert!(!xml.contains("<loader"), "{xml}");
        assert!(xml.contains("<smm state=\"on\"/>"), "{xml}");

        p.bootloader = Bootloader::Efi { secure_boot: false };
        let xml = p.to_xml();
        assert!(
            xml.contains("<feature enabled=\"no\" name=\"secure-boot\"/>"),
            "{xml}"
        );
    }

    #[test]
    fn a_block_pvc_is_a_block_disk() {
        let mut p = plan();
        p.disks.push(ResolvedDisk {
            name: "pvc".into(),
            cdrom: false,
            tray_open: false,
            block_device: true,
            bus: DiskBus::Virtio,
            read_only: true,
            file: "/var/lib/virtshim/pods/x/disks/pvc.block".into(),
            format: "raw",
            serial: None,
            boot_order: None,
        });
        let xml = p.to_xml();
        assert!(
            xml.contains("<disk type=\"block\" device=\"disk\">"),
            "{xml}"
        );
        assert!(
            xml.contains("<source dev=\"/var/lib/virtshim/pods/x/disks/pvc.block\"/>"),
            "{xml}"
        );
        assert!(xml.contains("<readonly/>"), "{xml}");
    }

    #[test]
    fn hostile_strings_are_escaped() {
        let mut p = plan();
        p.name = "a</name><devices><disk type='file'>".into();
        p.smbios_serial = Some("x\"/><entry name='y'>&".into());
        p.disks.push(ResolvedDisk {
            name: "d'><x".into(),
            cdrom: false,
            tray_open: false,
            block_device: false,
            bus: DiskBus::Virtio,
            read_only: false,
            file: "/var/lib/a\"b".into(),
            format: "qcow2",
            serial: Some("<s>".into()),
            boot_order: None,
        });
        let xml = p.to_xml();
        assert!(
            xml.contains(
                "<name>a&lt;/name&gt;&lt;devices&gt;&lt;disk type=&apos;file&apos;&gt;</name>"
            ),
            "{xml}"
        );
        assert!(
            xml.contains(
                "<entry name=\"serial\">x&quot;/&gt;&lt;entry name=&apos;y&apos;&gt;&amp;</entry>"
            ),
            "{xml}"
        );
        assert!(
            xml.contains("<source file=\"/var/lib/a&quot;b\"/>"),
            "{xml}"
        );
        assert!(xml.contains("<serial>&lt;s&gt;</serial>"), "{xml}");
        assert_eq!(xml.matches("<disk ").count(), 1);
    }

    #[test]
    fn disks_get_names_buses_and_the_first_boots() {
        let mut p = plan();
        for (name, bus) in [
            ("a", DiskBus::Virtio),
            ("b", DiskBus::Sata),
            ("c", DiskBus::Virtio),
            ("d", DiskBus::Scsi),
        ] {
            p.disks.push(ResolvedDisk {
                name: name.into(),
                // d: a CD-ROM with its tray open.
                cdrom: name == "d",
                tray_open: name == "d",
                block_device: false,
                bus,
                read_only: false,
                file: format!("/d/{name}"),
                format: "raw",
                serial: None,
                boot_order: None,
            });
        }
        let xml = p.to_xml();
        for expected in [
            "<target dev=\"vda\" bus=\"virtio\"/>",
            "<target dev=\"sda\" bus=\"sata\"/>",
            "<target dev=\"vdb\" bus=\"virtio\"/>",
            "<target dev=\"sdb\" bus=\"scsi\" tray=\"open\"/>",
            "<controller type=\"scsi\" index=\"0\" model=\"virtio-scsi\"/>",
        ] {
            assert!(xml.contains(expected), "missing {expected} in {xml}");
        }
        assert_eq!(xml.matches("<boot order=\"1\"/>").count(), 1);
        assert!(xml.contains("<domain type=\"qemu\">"));
        // No USB disk, so no USB controller.
        assert!(
            xml.contains("<controller type=\"usb\" index=\"0\" model=\"none\"/>"),
            "{xml}"
        );
        assert!(xml.contains("<model fallback=\"allow\">qemu64</model>"));
    }

    #[test]
    fn device_names_continue_past_z() {
        assert_eq!(device_name("vd", 0), "vda");
        assert_eq!(device_name("vd", 25), "vdz");
        assert_eq!(device_name("vd", 26), "vdaa");
        assert_eq!(device_name("sd", 27), "sdab");
    }
}
