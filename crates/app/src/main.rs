//! The `rendezvous` binary: a thin entry point over `rendezvous_app`.

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("--version" | "-V") => {
            eprintln!("rendezvous {}", rendezvous_app::VERSION);
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!(
                "rendezvous {}: the service is not wired yet; the domain, contract and codegen are \
                 in place (see ARCHITECTURE.md and the open service issue)",
                rendezvous_app::VERSION
            );
            ExitCode::from(2)
        }
    }
}
