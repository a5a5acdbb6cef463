//! `apply`, `get` and `delete` against a Typha replica.

use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use manul_model::load::describe;
use manul_model::{Kind, Resource, ResourceKey};

use crate::client::{ServerArgs, failure};
use crate::input::{FileArgs, load_all};

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Output {
    Table,
    Yaml,
    Json,
}

#[derive(Debug, Args)]
pub struct GetArgs {
    /// Kind: a name such as networkpolicy, gnp, tier, k8s-networkpolicy.
    pub kind: String,
    /// One resource's name; all of the kind when omitted.
    pub name: Option<String>,
    /// Namespace (namespaced kinds; default: every namespace for a list, `default` for one name).
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
    #[arg(short = 'o', long, value_enum, default_value = "table")]
    pub output: Output,
}

#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// Kind and name, or use -f.
    pub kind: Option<String>,
    pub name: Option<String>,
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
    /// Delete the resources these files describe.
    #[arg(short = 'f', long = "filename", num_args = 1..)]
    pub paths: Vec<std::path::PathBuf>,
}

/// Validates locally (nothing is sent when any input is invalid), then
/// applies everything in one atomic batch.
pub async fn apply(server: &ServerArgs, args: &FileArgs) -> Result<ExitCode> {
    let inputs = load_all(args)?;
    if crate::validate::report_errors(&inputs) {
        return Ok(ExitCode::from(crate::EXIT_BAD_INPUT));
    }
    let mut items = Vec::new();
    let mut names = Vec::new();
    for input in &inputs {
        for loaded in &input.outcome.resources {
            names.push(describe(&loaded.resource));
            items.push((
                &loaded.resource,
                format!("{} (document {})", input.origin, loaded.document),
            ));
        }
    }
    if items.is_empty() {
        return Err(crate::BadInput("no resources to apply".into()).into());
    }
    let items: Vec<(&Resource, &str)> = items.iter().map(|(r, o)| (*r, o.as_str())).collect();
    let c = server.client().await?;
    match server.call(|| c.apply_from(&items)).await {
        Ok(_) => {
            for n in names {
                println!("{n} ok");
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => failure(e),
    }
}

fn kind_of(word: &str) -> Result<Kind> {
    Kind::from_cli(word).with_context(|| {
        let known: Vec<_> = Kind::ALL.iter().map(|k| k.key_name()).collect();
        crate::BadInput(format!(
            "unknown kind {word:?}; use one of {}",
            known.join(", ")
        ))
    })
}

pub async fn get(server: &ServerArgs, args: &GetArgs) -> Result<ExitCode> {
    let kind = kind_of(&args.kind)?;
    let c = server.client().await?;
    let entries = match &args.name {
        Some(name) => {
            let key = ResourceKey {
                kind,
                namespace: args.namespace.clone(),
                name: name.clone(),
            };
            match server.call(|| c.get(&key)).await {
                Ok(Some(entry)) => vec![entry],
                Ok(None) => {
                    // As Typha names it: namespaced kinds default to `default`.
                    let key = ResourceKey {
                        namespace: kind
                            .namespaced()
                            .then(|| key.namespace.clone().unwrap_or_else(|| "default".into())),
                        ..key
                    };
                    eprintln!("error: {key} not found");
                    return Ok(ExitCode::from(crate::EXIT_BAD_INPUT));
                }
                Err(e) => return failure(e),
            }
        }
        None => match server
            .call(|| c.list(kind, args.namespace.as_deref()))
            .await
        {
            Ok(entries) => entries,
            Err(e) => return failure(e),
        },
    };
    match args.output {
        Output::Table => {
            if kind.namespaced() {
                println!("{:<20} {:<40} {:>10}", "NAMESPACE", "NAME", "REVISION");
            } else {
                println!("{:<40} {:>10}", "NAME", "REVISION");
            }
            for (resource, revision) in &entries {
                let k = resource.key();
                if kind.namespaced() {
                    let namespace = k.namespace.unwrap_or_default();
                    println!("{:<20} {:<40} {:>10}", namespace, k.name, revision);
                } else {
                    println!("{:<40} {:>10}", k.name, revision);
                }
            }
        }
        Output::Yaml => {
            for (resource, _) in &entries {
                print!("---\n{}", serde_yaml_ng::to_string(resource)?);
            }
        }
        Output::Json => {
            let items: Vec<&Resource> = entries.iter().map(|(r, _)| r).collect();
            let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": items});
            println!("{}", serde_json::to_string_pretty(&list)?);
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn delete(server: &ServerArgs, args: &DeleteArgs) -> Result<ExitCode> {
    let mut keys = Vec::new();
    if !args.paths.is_empty() {
        if args.kind.is_some() {
            return Err(crate::BadInput("give either KIND NAME or -f, not both".into()).into());
        }
        let inputs = load_all(&FileArgs {
            paths: args.paths.clone(),
            recursive: false,
        })?;
        if crate::validate::report_errors(&inputs) {
            return Ok(ExitCode::from(crate::EXIT_BAD_INPUT));
        }
        for input in &inputs {
            keys.extend(input.outcome.resources.iter().map(|l| l.resource.key()));
        }
    } else {
        let (Some(kind), Some(name)) = (&args.kind, &args.name) else {
            eprintln!("error: give KIND NAME, or -f PATH");
            return Ok(ExitCode::from(crate::EXIT_BAD_INPUT));
        };
        keys.push(ResourceKey {
            kind: kind_of(kind)?,
            namespace: args.namespace.clone(),
            name: name.clone(),
        });
    }
    let asked = keys.len();
    let c = server.client().await?;
    match server.call(|| c.delete_all(&keys, None)).await {
        Ok(deleted) => {
            for k in &deleted {
                let ns = match &k.namespace {
                    Some(ns) if !ns.is_empty() => format!("{ns}/"),
                    _ => String::new(),
                };
                println!("{} {ns}{} deleted", k.kind.key_name(), k.name);
            }
            if deleted.len() < asked {
                eprintln!(
                    "error: {} of {asked} resources did not exist",
                    asked - deleted.len()
                );
                return Ok(ExitCode::from(crate::EXIT_BAD_INPUT));
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => failure(e),
    }
}
