//! The `vmi_annotation` fuzz target's check (`fuzz/src/vmi_annotation.rs`) under plain
//! `cargo test`: on every finding kept in `fuzz/regressions/vmi_annotation/`, and on the seeds
//! `make fuzz` starts from, each with what the shim must make of it.

#![allow(clippy::unwrap_used)]

mod common;
// Also makes the oci_bundle target's seeds, which tests/tests/fuzz_regressions.rs checks.
#[allow(dead_code)]
#[path = "../../fuzz/src/seeds.rs"]
mod seeds;
#[path = "../../fuzz/src/target.rs"]
mod target;
#[path = "../../fuzz/src/vmi_annotation.rs"]
mod vmi_annotation;

use seeds::Expect;
use std::path::PathBuf;
use target::Target;
use vmi_annotation::VmiAnnotation;

#[test]
fn kept_findings_stay_fixed() {
    VmiAnnotation::replay_regressions();
}

#[test]
fn hostile_annotations_are_refused_when_read() {
    for seed in seeds::hostile() {
        VmiAnnotation::check_seed(&seed);
    }
}

#[test]
fn the_examples_pods_carry_annotations_the_shim_accepts() {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let mut count = 0;
    let mut files: Vec<(String, String)> = std::fs::read_dir(repo)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read_to_string(&p).unwrap(),
            )
        })
        .collect();
    files.extend(common::examples());
    for (name, yaml) in files {
        for seed in seeds::from_manifest(&name, &yaml) {
            count += usize::from(seed.expect == Expect::Accepted);
            VmiAnnotation::check_seed(&seed);
        }
    }
    assert!(count >= 10, "only {count} examples made a pod");
}

#[test]
fn dictionary_lines_escape_what_libfuzzer_reads() {
    assert_eq!(seeds::dict_line(r#""domain""#), "\"\\\"domain\\\"\"\n");
    assert_eq!(
        seeds::dict_line("a\\b\n\u{e9}"),
        "\"a\\\\b\\x0A\\xC3\\xA9\"\n"
    );
}

#[test]
fn the_dictionary_has_the_vmis_field_names() {
    let words = seeds::words(&seeds::hostile());
    for word in [r#""domain""#, r#""containerDisk""#, r#""64Ti""#] {
        assert!(words.contains(word), "{word} missing from {words:?}");
    }
}
