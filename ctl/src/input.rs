//! Reading resource inputs: files, directories (their `.yaml`, `.yml` and
//! `.json` files) and `-` for standard input, each read with a size bound.

use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Args;
use manul_model::load::{LoadOutcome, MAX_INPUT_BYTES};

/// Where resources come from.
#[derive(Debug, Args)]
pub struct FileArgs {
    /// Files, directories or `-` (standard input); repeatable.
    #[arg(short = 'f', long = "filename", required = true, num_args = 1..)]
    pub paths: Vec<PathBuf>,
    /// Also read directories' subdirectories.
    #[arg(short = 'R', long)]
    pub recursive: bool,
}

fn is_resource_file(p: &Path) -> bool {
    matches!(
        p.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml" | "json")
    )
}

fn expand(path: &Path, recursive: bool, out: &mut Vec<PathBuf>) -> Result<()> {
    if path.as_os_str() == "-" || !path.is_dir() {
        out.push(path.to_path_buf());
        return Ok(());
    }
    let mut entries: Vec<PathBuf> = fs::read_dir(path)
        .with_context(|| crate::BadInput(format!("cannot read directory {}", path.display())))?
        .map(|e| e.map(|e| e.path()))
        .collect::<io::Result<_>>()
        .with_context(|| crate::BadInput(format!("cannot read directory {}", path.display())))?;
    entries.sort();
    for entry in entries {
        if entry.is_dir() {
            if recursive {
                expand(&entry, recursive, out)?;
            }
        } else if is_resource_file(&entry) {
            out.push(entry);
        }
    }
    Ok(())
}

/// Reads at most [`MAX_INPUT_BYTES`] + 1 bytes, so an oversized input is
/// reported without being read whole.
fn read_bounded(mut r: impl Read) -> io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    r.by_ref().take(MAX_INPUT_BYTES + 1).read_to_end(&mut buf)?;
    Ok(buf)
}

/// One input, loaded.
#[derive(Debug)]
pub struct Input {
    pub origin: String,
    pub outcome: LoadOutcome,
}

/// Loads every input named by `args`, in order. Unreadable files are an
/// error for the whole command.
pub fn load_all(args: &FileArgs) -> Result<Vec<Input>> {
    let mut paths = Vec::new();
    for p in &args.paths {
        expand(p, args.recursive, &mut paths)?;
    }
    let mut inputs = Vec::new();
    for path in paths {
        let (origin, bytes) = if path.as_os_str() == "-" {
            let bytes = read_bounded(io::stdin().lock())
                .context(crate::BadInput("cannot read standard input".into()))?;
            ("-".to_string(), bytes)
        } else {
            let file = fs::File::open(&path)
                .with_context(|| crate::BadInput(format!("cannot open {}", path.display())))?;
            let bytes = read_bounded(file)
                .with_context(|| crate::BadInput(format!("cannot read {}", path.display())))?;
            (path.display().to_string(), bytes)
        };
        let outcome = manul_model::load(&origin, &bytes);
        inputs.push(Input { origin, outcome });
    }
    Ok(inputs)
}
