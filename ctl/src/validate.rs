//! `manulctl validate`: one `KIND NAMESPACE/NAME ok` line per resource when
//! every input is valid; otherwise every error, and exit code 2. Fields
//! that are accepted but not acted on are warned about on standard error
//! either way; warnings do not change the exit code.

use std::process::ExitCode;

use anyhow::Result;
use manul_model::load::describe;

use crate::input::{FileArgs, Input, load_all};

/// Prints every error of every input; true when there was any.
pub fn report_errors(inputs: &[Input]) -> bool {
    let errors: Vec<_> = inputs.iter().flat_map(|i| &i.outcome.errors).collect();
    for e in &errors {
        eprintln!("error: {e}");
    }
    if !errors.is_empty() {
        eprintln!(
            "{} error(s); nothing is valid until all are fixed",
            errors.len()
        );
    }
    !errors.is_empty()
}

/// Prints every warning of every input.
pub fn report_warnings(inputs: &[Input]) {
    for w in inputs.iter().flat_map(|i| &i.outcome.warnings) {
        eprintln!("warning: {w}");
    }
}

pub fn run(args: &FileArgs) -> Result<ExitCode> {
    let inputs = load_all(args)?;
    report_warnings(&inputs);
    if report_errors(&inputs) {
        return Ok(ExitCode::from(crate::EXIT_BAD_INPUT));
    }
    for input in &inputs {
        for loaded in &input.outcome.resources {
            println!("{} ok", describe(&loaded.resource));
        }
    }
    Ok(ExitCode::SUCCESS)
}
