//! The component images `make images` builds without a Docker engine
//! (`images/components/build.sh`): imported into a real containerd and run by runc through the
//! CRI, each starts from nothing but the binary and the libraries `ldd` named. The installer
//! image also carries the shim it installs.

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;
use virtshim_tests::containerd::{Options, PrivateContainerd};
use virtshim_tests::peer;

/// Builds the images with the profile these tests were built with; their folder.
fn build_images() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile = if exe.to_string_lossy().contains("/release/") {
        "release"
    } else {
        "debug"
    };
    let out = virtshim_tests::repo_root().join("target/component-images");
    let status = Command::new("bash")
        .arg(virtshim_tests::repo_root().join("images/components/build.sh"))
        .arg(&out)
        .env("PROFILE", profile)
        .status()
        .unwrap();
    assert!(status.success(), "images/components/build.sh failed");
    out
}

#[test]
fn component_images_run_from_their_own_files() {
    let test = "component_images_run_from_their_own_files";
    let images = build_images();
    let Some(containerd) = PrivateContainerd::start_or_skip(test, Options::default()) else {
        return;
    };
    let cri = containerd.cri().unwrap();
    for (file, image, command, expect) in [
        (
            "controller.oci.tar",
            "localhost/virtshim/controller:v1",
            vec!["/virtshim-controller", "--version"],
            "virtshim-controller ",
        ),
        (
            "handler.oci.tar",
            "localhost/virtshim/handler:v1",
            vec!["/virtshim-handler", "--version"],
            "virtshim-handler ",
        ),
        (
            "installer.oci.tar",
            "localhost/virtshim/installer:v1",
            vec!["/virtshim-installer", "--version"],
            "virtshim-installer ",
        ),
    ] {
        containerd.import_tar(&images.join(file), image).unwrap();
        let uid = format!("image-{}", file.trim_end_matches(".oci.tar"));
        let (code, output) = peer::run_to_completion(
            &containerd,
            &cri,
            &uid,
            image,
            &command,
            Duration::from_secs(60),
        );
        assert_eq!(code, Some(0), "{image}: {output}");
        assert!(output.contains(expect), "{image}: {output}");
        println!("{test}: {image}: {output}");
    }
    // The installer carries the shim it puts on nodes, and in a container without QEMU its
    // check says what is missing instead of labelling anything.
    let (code, output) = peer::run_to_completion(
        &containerd,
        &cri,
        "image-installer-check",
        "localhost/virtshim/installer:v1",
        &["/virtshim-installer", "--bin-dir", "/opt/virtshim", "check"],
        Duration::from_secs(60),
    );
    assert_eq!(code, Some(1), "{output}");
    assert!(output.contains("check: qemu MISSING"), "{output}");
    println!("{test}: installer check in a bare container:\n{output}");
    containerd.stop().unwrap();
}
