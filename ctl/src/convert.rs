//! `manulctl convert`: the internal v3 form of Kubernetes NetworkPolicies
//! (and Namespaces, as profiles) as multi-document YAML.

use std::process::ExitCode;

use anyhow::{Context, Result};
use manul_model::convert::to_v3;

use crate::input::{FileArgs, load_all};

pub fn run(args: &FileArgs) -> Result<ExitCode> {
    let inputs = load_all(args)?;
    let mut errors = 0;
    let mut docs = Vec::new();
    for input in &inputs {
        for e in &input.outcome.errors {
            eprintln!("error: {e}");
            errors += 1;
        }
        for loaded in &input.outcome.resources {
            match to_v3(&loaded.resource) {
                Some(Ok(converted)) => docs.push(converted),
                Some(Err(e)) => {
                    eprintln!("error: {}: document {}: {e}", input.origin, loaded.document);
                    errors += 1;
                }
                None => {}
            }
        }
    }
    if errors > 0 {
        return Ok(ExitCode::from(crate::EXIT_BAD_INPUT));
    }
    let mut out = String::new();
    for doc in &docs {
        out.push_str("---\n");
        out.push_str(&serde_yaml_ng::to_string(doc).context("cannot print YAML")?);
    }
    print!("{out}");
    Ok(ExitCode::SUCCESS)
}
