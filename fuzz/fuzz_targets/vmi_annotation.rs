//! Fuzzes the pod annotation `virtshim.io/vmi` (see `src/vmi_annotation.rs`).

#![no_main]

use libfuzzer_sys::fuzz_target;
use virtshim_fuzz::{target::Target, vmi_annotation::VmiAnnotation};

fuzz_target!(|data: &[u8]| {
    let _ = VmiAnnotation::run(data);
});
