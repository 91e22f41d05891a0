use clap::Parser;

use ociregistry::cli::{Cli, Command};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Serve(args) => ociregistry::server::run(&cli, args),
        Command::Verify(args) => std::process::exit(ociregistry::ops::verify::run(&cli, args).exit_code()),
        Command::Version => {
            println!("ociregistry {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
