//! Fuzzes a container's OCI bundle `config.json` (see `src/oci_bundle.rs`).

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = virtshim_fuzz::oci_bundle::run(data);
});
