//! `containerd-shim-virtshim-v2`: the containerd shim that boots a pod's VMI (see DESIGN.md).

use std::process::ExitCode;

fn main() -> ExitCode {
    match std::env::args().nth(1).as_deref() {
        Some("--version" | "-v") => {
            println!("containerd-shim-virtshim-v2 {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!("containerd-shim-virtshim-v2: the shim is not implemented yet");
            ExitCode::from(2)
        }
    }
}
