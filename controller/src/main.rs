//! `virtshim-controller`: VM → VMI → pod reconcilers, admission webhooks and the
//! `subresources.kubevirt.io` API (see DESIGN.md). Not built yet: this binary only reports its
//! version, so that the workspace layout is the architecture from the first commit.

use std::process::ExitCode;

fn main() -> ExitCode {
    match std::env::args().nth(1).as_deref() {
        Some("--version") => {
            println!("virtshim-controller {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!(
                "virtshim-controller {}: the reconcilers are not implemented yet",
                env!("CARGO_PKG_VERSION")
            );
            ExitCode::from(2)
        }
    }
}
