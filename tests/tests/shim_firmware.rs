//! KubeVirt's `firmware.bootloader.efi` through the real CRI: OVMF picked by libvirt from QEMU's
//! firmware descriptors, the test guest booted through Debian's signed shim, GRUB and kernel.
//! With `secureBoot: true` (and SMM, as KubeVirt requires) the firmware has Microsoft's keys
//! enrolled, so the guest kernel finds Secure Boot on and locks itself down; without it, plain
//! UEFI. The guest says what it found on the serial console.

#![allow(clippy::unwrap_used)]

use std::time::Duration;
use virtctl::local;
use virtshim_api::manifest::parse_documents;
use virtshim_tests::vm;

/// The guest's report: `firmware=efi|bios secureboot=on|off lockdown=<the kernel's modes>`.
const CHECK: &str = "FIRMWARE-CHECK";

fn efi_vmi(name: &str, secure_boot: bool) -> String {
    let image = vm::CONTAINER_DISK_IMAGE;
    // KubeVirt refuses secure boot without SMM; plain EFI (vmi-alpine-efi.yaml) names no features.
    let features = if secure_boot {
        "    features: {smm: {enabled: true}}\n"
    } else {
        ""
    };
    // GRUB 2.06 cannot load the kernel into 256 MiB under OVMF ("out of memory"); KubeVirt's
    // EFI examples use 1Gi.
    format!(
        "apiVersion: kubevirt.io/v1\nkind: VirtualMachineInstance\nmetadata: {{name: {name}}}\nspec:\n  domain:\n{features}    firmware: {{bootloader: {{efi: {{secureBoot: {secure_boot}}}}}}}\n    memory: {{guest: 1Gi}}\n    devices:\n      disks:\n      - {{name: root, disk: {{bus: virtio}}}}\n      - {{name: ci, disk: {{bus: virtio}}}}\n  volumes:\n  - {{name: root, containerDisk: {{image: '{image}'}}}}\n  - name: ci\n    cloudInitNoCloud:\n      userData: |\n        #!/bin/sh\n        if [ -d /sys/firmware/efi ]; then fw=efi; else fw=bios; fi\n        if dmesg | grep -q 'Secure boot enabled'; then sb=on; else sb=off; fi\n        mount -t securityfs securityfs /sys/kernel/security 2>/dev/null\n        echo \"{CHECK} firmware=$fw secureboot=$sb lockdown=$(cat /sys/kernel/security/lockdown)\"\n"
    )
}

/// The guest's `FIRMWARE-CHECK` line, waited for on the console log.
fn guest_report(
    started: &local::Started,
    containerd: &virtshim_tests::containerd::PrivateContainerd,
) -> String {
    let log = started.console_log();
    vm::wait_for_console(&log, &format!("{CHECK} "), Duration::from_secs(240))
        .unwrap_or_else(|e| panic!("{e}\n{}", containerd.log_tail()));
    let text = std::fs::read_to_string(&log).unwrap();
    let line = text
        .lines()
        .find(|l| l.contains(&format!("{CHECK} ")))
        .unwrap();
    line[line.find(CHECK).unwrap()..].trim().to_owned()
}

/// The OVMF code file QEMU was started with (libvirt's choice from the descriptors).
fn ovmf_code(sandbox_id: &str) -> String {
    let pid = vm::qemu_pids(sandbox_id)[0];
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    let cmdline = String::from_utf8_lossy(&cmdline);
    cmdline
        .split(['"', ',', '\0'])
        .find(|part| part.contains("/OVMF_CODE"))
        .unwrap_or_else(|| panic!("no OVMF code file in QEMU's command line: {cmdline}"))
        .to_owned()
}

#[test]
fn efi_with_and_without_secure_boot() {
    let test = "efi_with_and_without_secure_boot";
    let Some(containerd) = vm::containerd(test) else {
        return;
    };
    let cri = containerd.cri().unwrap();
    // Both at once: OVMF under TCG is the slow part.
    let mut vms = Vec::new();
    for (name, secure_boot) in [("efi", false), ("secureboot", true)] {
        let plan = local::plan(
            parse_documents(&efi_vmi(name, secure_boot))
                .remove(0)
                .unwrap(),
        )
        .unwrap();
        let started =
            local::run(&cri, &plan).unwrap_or_else(|e| panic!("{e}\n{}", containerd.log_tail()));
        vms.push((secure_boot, started));
    }
    for (secure_boot, started) in &vms {
        let report = guest_report(started, &containerd);
        let code = ovmf_code(&started.sandbox_id);
        if *secure_boot {
            assert_eq!(
                report,
                format!(
                    "{CHECK} firmware=efi secureboot=on lockdown=none [integrity] confidentiality"
                )
            );
            // The descriptor with Microsoft's keys enrolled (what shim is signed with).
            assert!(code.ends_with("/OVMF_CODE_4M.ms.fd"), "{code}");
        } else {
            assert_eq!(
                report,
                format!(
                    "{CHECK} firmware=efi secureboot=off lockdown=[none] integrity confidentiality"
                )
            );
            assert!(code.ends_with("/OVMF_CODE_4M.fd"), "{code}");
        }
    }
    // ACPI power-off works under OVMF too; the NVRAM copy goes with the pod.
    for (_, started) in &vms {
        vm::stop_cleanly(&cri, started, Duration::from_secs(60));
        vm::remove_pod(&cri, &started.sandbox_id);
    }
    containerd.stop().unwrap();
}
