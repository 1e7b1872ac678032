//! The `meridian` binary: parses the command line, runs the command, prints, exits.

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use meridian_plane::cli::schedule::{self, ScheduleCommand};
use meridian_plane::cli::{Cli, Command, certs};

/// Exit code for input the command refuses (clap uses the same for usage errors).
const BAD_INPUT: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Certs(command) => match certs::run(&command) {
            Ok(message) => {
                println!("{message}");
                ExitCode::SUCCESS
            }
            Err(err) => {
                eprintln!("error: {err}");
                ExitCode::from(BAD_INPUT)
            }
        },
        Command::Schedule(ScheduleCommand::Preview(args)) => {
            match schedule::preview(&args, chrono::Utc::now()) {
                Ok(preview) => {
                    let mut out = std::io::stdout().lock();
                    for line in &preview.fire_times {
                        if writeln!(out, "{line}").is_err() {
                            // The reader went away (`| head`); nothing left to say.
                            return ExitCode::SUCCESS;
                        }
                    }
                    if preview.ended {
                        eprintln!(
                            "note: the schedule has no fire times after the {} shown",
                            preview.fire_times.len()
                        );
                    }
                    ExitCode::SUCCESS
                }
                Err(err) => {
                    eprintln!("error: {err}");
                    ExitCode::from(BAD_INPUT)
                }
            }
        }
    }
}
