//! `hj212`: the field engineer's tool for HJ 212 frames.

use clap::Parser;

fn main() -> std::process::ExitCode {
    hj212_gateway::cli::Cli::parse().run()
}
