//! `manulctl validate`: one `KIND NAMESPACE/NAME ok` line per resource when
//! every input is valid; otherwise every error, and exit code 2.

use std::process::ExitCode;

use anyhow::Result;
use manul_model::load::describe;

use crate::input::{FileArgs, load_all};

pub fn run(args: &FileArgs) -> Result<ExitCode> {
    let inputs = load_all(args)?;
    let errors: Vec<_> = inputs.iter().flat_map(|i| &i.outcome.errors).collect();
    if !errors.is_empty() {
        for e in &errors {
            eprintln!("error: {e}");
        }
        eprintln!(
            "{} error(s); nothing is valid until all are fixed",
            errors.len()
        );
        return Ok(ExitCode::from(crate::EXIT_BAD_INPUT));
    }
    for input in &inputs {
        for loaded in &input.outcome.resources {
            println!("{} ok", describe(&loaded.resource));
        }
    }
    Ok(ExitCode::SUCCESS)
}
