use clap::{CommandFactory, Parser};

use ociregistry::cli::{Cli, Command};

#[cfg(not(feature = "fault-injection"))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Test builds count live heap bytes for the soak (see `ociregistry::heap`).
#[cfg(feature = "fault-injection")]
#[global_allocator]
static GLOBAL: ociregistry::heap::Counting<mimalloc::MiMalloc> = ociregistry::heap::Counting(mimalloc::MiMalloc);

/// Set by release builds, as the Go ociregistry's Makefile sets its build date (UTC).
const BUILD_DATE: Option<&str> = option_env!("OCIREGISTRY_BUILD_DATE");

fn main() {
    let cli = Cli::parse();
    let Some(command) = &cli.command else {
        // As Go: no subcommand prints the help and succeeds.
        let _ = Cli::command().print_long_help();
        return;
    };
    let result = match command {
        Command::Serve(args) => ociregistry::server::run(&cli, args),
        Command::Verify(args) => std::process::exit(ociregistry::ops::verify::run(&cli, args).exit_code()),
        Command::List(args) => std::process::exit(ociregistry::ops::list::run(&cli, args)),
        Command::Prune(args) => std::process::exit(ociregistry::ops::prune::cli::run(&cli, args)),
        Command::Load(args) => std::process::exit(ociregistry::ops::load::run(&cli, args).exit_code()),
        Command::Export(args) => std::process::exit(ociregistry::ops::export::run(&cli, args)),
        Command::Migrate(args) => std::process::exit(ociregistry::ops::migrate::run(&cli, args)),
        Command::Version => {
            let date = BUILD_DATE.filter(|d| !d.is_empty()).unwrap_or("unknown");
            eprintln!("ociregistry version: {} build date: {date}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
