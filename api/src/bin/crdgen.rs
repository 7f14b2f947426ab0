//! Writes the CRDs generated from the API types into a folder (`make crds`).

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "manifests/crds".to_owned()),
    );
    std::fs::create_dir_all(&dir)?;
    for (file, crd) in virtshim_api::crd::all() {
        let path = dir.join(file);
        std::fs::write(&path, virtshim_api::crd::render(&crd)?)?;
        println!("wrote {}", path.display());
    }
    Ok(())
}
