//! The fresh-machine check (issue 13): in a clean Debian 12 root made by debootstrap,
//! `scripts/deps.sh` installs everything from nothing and the shim built here then opens
//! libvirt's embedded QEMU driver (`tests/fresh-root.sh`). A reused development or CI machine
//! keeps what was once installed by hand; this root does not, so a package or system user that
//! deps.sh forgets fails here. Needs root and the Debian archive; skipped outside CI otherwise.

use std::process::Command;
use virtshim_tests::{repo_root, skip, vm};

#[test]
fn deps_sh_makes_a_fresh_debian_root_able_to_run_the_shim() {
    const TEST: &str = "deps_sh_makes_a_fresh_debian_root_able_to_run_the_shim";
    if !rustix::process::geteuid().is_root() {
        skip(TEST, "needs root (debootstrap, chroot)");
        return;
    }
    let shim = vm::shim_dir().join("containerd-shim-virtshim-v2");
    let status = Command::new("bash")
        .arg(repo_root().join("tests/fresh-root.sh"))
        .arg(&shim)
        .status()
        .expect("run tests/fresh-root.sh");
    assert!(
        status.success(),
        "tests/fresh-root.sh failed: something virtshim needs is not installed by scripts/deps.sh (see above)"
    );
}
