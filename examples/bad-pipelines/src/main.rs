//! `asyncprof-pipelines`: run one pipeline variant in this process, recording with asyncprof
//! (`ASYNCPROF_OUT` names the run file), and print its outcome as JSON.
//!
//! ```text
//! asyncprof-pipelines list
//! asyncprof-pipelines run PIPELINE bad|fixed [quick|default|heavy]
//! ```
//!
//! Exit status: 0 done; 1 the pipeline failed; 2 bad arguments; 124 it outlived its budget.

use std::process::ExitCode;

use asyncprof_pipelines::{Load, Tier, Variant};

fn usage() -> ExitCode {
    eprintln!("usage: asyncprof-pipelines list | run PIPELINE bad|fixed [quick|default|heavy]");
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("list") => {
            for p in asyncprof_pipelines::pipelines() {
                println!(
                    "{:<28} {}\n{:<28} defect: {}",
                    p.name, p.about, "", p.defect
                );
            }
            ExitCode::SUCCESS
        }
        Some("run") if (3..=4).contains(&args.len()) => {
            let Some(variant) = Variant::parse(&args[2]) else {
                return usage();
            };
            let Some(load) = args.get(3).map_or(Some(Load::Default), |l| Load::parse(l)) else {
                return usage();
            };
            match asyncprof_pipelines::run_profiled(&args[1], variant, load, None, Tier::Hooks) {
                Ok(outcome) => {
                    println!(
                        "{}",
                        serde_json::to_string(&outcome).expect("an outcome serializes")
                    );
                    ExitCode::SUCCESS
                }
                Err(err) => {
                    eprintln!("error: {err:#}");
                    ExitCode::from(1)
                }
            }
        }
        _ => usage(),
    }
}
