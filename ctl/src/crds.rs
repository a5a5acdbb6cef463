//! `manulctl crds`: the CustomResourceDefinitions of the
//! `projectcalico.org/v3` kinds, generated from the model's types. With
//! `--out DIR` it writes them there (one file per CRD and a
//! `kustomization.yaml`; the repository keeps them in
//! `deploy/kubernetes/base/crds/`), without it prints them as one
//! multi-document YAML stream.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};

#[derive(Debug, clap::Args)]
pub struct CrdsArgs {
    /// Write the files into this folder instead of printing them.
    #[arg(long)]
    out: Option<PathBuf>,
}

pub fn run(args: &CrdsArgs) -> Result<ExitCode> {
    let files = manul_model::crd::files().context("cannot generate the CRD schemas")?;
    match &args.out {
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            for (name, text) in &files {
                let path = dir.join(name);
                std::fs::write(&path, text)
                    .with_context(|| format!("cannot write {}", path.display()))?;
                println!("wrote {}", path.display());
            }
        }
        None => {
            for (name, text) in files.iter().filter(|(n, _)| n != "kustomization.yaml") {
                print!("---\n# {name}\n{text}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
