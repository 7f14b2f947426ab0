//! Writes a fuzz target's seed corpus and dictionary (`make fuzz` runs it):
//! `cargo run -p virtshim-api --example fuzz_seeds -- TARGET OUT_DIR DICT [MANIFEST_DIR...]`.
//! - `vmi_annotation`: from the manifests in each MANIFEST_DIR and the hostile annotations;
//! - `oci_bundle`: containerd's bundles for a virtshim pod and the hostile ones.
//!
//! The seeds are made by `fuzz/src/seeds.rs`; nothing of them is committed. DICT gets a
//! libFuzzer dictionary of every object key and short string in the seeds, so mutations speak
//! the input's field names.

// Shared with the tests, which also read what each seed must give.
#[allow(dead_code)]
#[path = "../../fuzz/src/seeds.rs"]
mod seeds;

use std::path::PathBuf;

fn main() -> std::io::Result<()> {
    let mut args = std::env::args_os().skip(1);
    let (Some(target), Some(out), Some(dict)) = (args.next(), args.next(), args.next()) else {
        eprintln!("usage: fuzz_seeds vmi_annotation|oci_bundle OUT_DIR DICT [MANIFEST_DIR...]");
        std::process::exit(2);
    };
    let (out, dict) = (PathBuf::from(out), PathBuf::from(dict));
    let all = match target.to_str() {
        Some("vmi_annotation") => {
            let mut all = seeds::hostile();
            for dir in args.map(PathBuf::from) {
                let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)?
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
                    .collect();
                files.sort();
                for file in files {
                    let name = file.file_name().unwrap_or_default().to_string_lossy();
                    all.extend(seeds::from_manifest(
                        &name,
                        &std::fs::read_to_string(&file)?,
                    ));
                }
            }
            all
        }
        Some("oci_bundle") => seeds::oci_bundles(),
        _ => {
            eprintln!("fuzz_seeds: no seeds for target {target:?}");
            std::process::exit(2);
        }
    };
    std::fs::create_dir_all(&out)?;
    for seed in &all {
        std::fs::write(out.join(&seed.name), &seed.text)?;
    }
    let words = seeds::words(&all);
    let lines: String = words.iter().map(|w| seeds::dict_line(w)).collect();
    std::fs::write(&dict, lines)?;
    println!(
        "fuzz seeds: {} in {}, {} words in {}",
        all.len(),
        out.display(),
        words.len(),
        dict.display()
    );
    Ok(())
}
