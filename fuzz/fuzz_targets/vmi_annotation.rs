//! Fuzzes the pod annotation `virtshim.io/vmi` (see `src/vmi_annotation.rs`).

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = virtshim_fuzz::vmi_annotation::run(data);
});
