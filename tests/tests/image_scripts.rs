//! The image build scripts' small parts, without building an image: which Debian archive the
//! cloud image is installed from (`images/cloud/debian_mirror.py`), and that no mirror host is
//! written into the project.

use std::path::Path;
use std::process::{Command, Output};
use virtshim_tests::repo_root;

/// Runs the mirror finder against an apt folder `etc` (and `DEBIAN_MIRROR` when given).
fn find_mirror(etc: &Path, override_: Option<&str>) -> Output {
    let mut cmd = Command::new("python3");
    cmd.arg(repo_root().join("images/cloud/debian_mirror.py"))
        .env("APT_ETC", etc)
        .env_remove("DEBIAN_MIRROR");
    if let Some(m) = override_ {
        cmd.env("DEBIAN_MIRROR", m);
    }
    cmd.output().expect("python3 runs")
}

fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "debian_mirror.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// An apt folder holding `files` (relative path, content).
fn apt_etc(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir(dir.path().join("sources.list.d")).expect("sources.list.d");
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).expect("apt source file");
    }
    dir
}

#[test]
fn mirror_from_deb822_sources_skips_security_sources_and_third_parties() {
    let etc = apt_etc(&[
        (
            "sources.list.d/debian.sources",
            "Types: deb-src\nURIs: http://src.example/debian\nSuites: bookworm\nComponents: main\n\n\
             Types: deb\n# a comment\nURIs: http://security.example/debian-security\n\
             Suites: bookworm-security\nComponents: main\n\n\
             Types: deb\nURIs: http://off.example/debian\nSuites: bookworm\nComponents: main\nEnabled: no\n\n\
             Types: deb\nURIs: http://archive.example/debian/\n  http://second.example/debian\n\
             Suites: bookworm bookworm-updates\nComponents: main contrib\n\
             Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n",
        ),
        (
            "sources.list.d/a-vendor.sources",
            "Types: deb\nURIs: https://vendor.example/node\nSuites: nodistro\nComponents: main\n",
        ),
        // Not read: apt only reads *.list and *.sources.
        (
            "sources.list.d/old.sources.disabled",
            "Types: deb\nURIs: http://disabled.example/debian\nSuites: bookworm\nComponents: main\n",
        ),
    ]);
    assert_eq!(
        stdout(&find_mirror(etc.path(), None)),
        "http://archive.example/debian"
    );
}

#[test]
fn mirror_from_sources_list_lines_comes_first() {
    let etc = apt_etc(&[
        (
            "sources.list",
            "# deb http://commented.example/debian bookworm main\n\
             deb-src http://src.example/debian bookworm main\n\
             deb http://security.example/debian-security bookworm-security main\n\
             deb [arch=amd64 signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://list.example/debian trixie main non-free-firmware\n",
        ),
        (
            "sources.list.d/debian.sources",
            "Types: deb\nURIs: http://later.example/debian\nSuites: bookworm\nComponents: main\n",
        ),
    ]);
    assert_eq!(
        stdout(&find_mirror(etc.path(), None)),
        "http://list.example/debian"
    );
}

#[test]
fn debian_mirror_overrides_the_apt_sources() {
    let etc = apt_etc(&[(
        "sources.list",
        "deb http://list.example/debian bookworm main\n",
    )]);
    assert_eq!(
        stdout(&find_mirror(
            etc.path(),
            Some("http://override.example/debian")
        )),
        "http://override.example/debian"
    );
}

#[test]
fn no_debian_archive_is_a_clear_error() {
    let etc = apt_etc(&[(
        "sources.list.d/vendor.list",
        "deb https://vendor.example/apt stable-vendor main\n",
    )]);
    let out = find_mirror(etc.path(), None);
    assert!(!out.status.success(), "found a mirror where there is none");
    assert!(out.stdout.is_empty());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("DEBIAN_MIRROR") && err.contains("sources.list"),
        "unclear message: {err}"
    );
}

/// No Debian (or Ubuntu) archive host is written into the project: the image builds take the
/// machine's own (`debian_mirror.py`).
#[test]
fn no_mirror_host_in_the_repository() {
    let root = repo_root();
    if !root.join(".git").exists() {
        virtshim_tests::skip("no_mirror_host_in_the_repository", "not a git checkout");
        return;
    }
    // Spelled in pieces so that this file does not match itself.
    let pattern = [r"([a-z0-9-]+\.)+", r"(debian|ubuntu)\.(org|net|com)"].concat();
    let out = Command::new("git")
        .args(["grep", "-n", "-I", "-i", "-E", &pattern, "--", "."])
        .current_dir(&root)
        .output()
        .expect("git runs");
    let hits = String::from_utf8_lossy(&out.stdout);
    assert!(
        hits.trim().is_empty(),
        "mirror host names in the repository:\n{hits}"
    );
}

#[test]
fn cloud_build_uses_the_mirror_finder() {
    let script = std::fs::read_to_string(repo_root().join("images/cloud/build.sh")).unwrap();
    assert!(script.contains("debian_mirror.py"));
}
