//! Fuzzes a container's OCI bundle `config.json` (see `src/oci_bundle.rs`).

#![no_main]

use libfuzzer_sys::fuzz_target;
use virtshim_fuzz::{oci_bundle::OciBundle, target::Target};

fuzz_target!(|data: &[u8]| {
    let _ = OciBundle::run(data);
});
