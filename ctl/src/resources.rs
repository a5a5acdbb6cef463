//! `apply`, `get` and `delete` against a Typha replica.

use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use manul_model::load::describe;
use manul_model::{Kind, Resource};
use manul_proto::v1::resources_client::ResourcesClient;
use manul_proto::v1::{
    ApplyItem, ApplyRequest, DeleteRequest, Entry, GetRequest, ListRequest, ResourceKey,
};

use crate::client::{MAX_MESSAGE, ServerArgs, is_bad_input, status_error};
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

async fn client(server: &ServerArgs) -> Result<ResourcesClient<tonic::transport::Channel>> {
    Ok(ResourcesClient::new(server.connect().await?).max_decoding_message_size(MAX_MESSAGE))
}

fn bad(status: tonic::Status) -> Result<ExitCode> {
    eprintln!("error: {}", status.message());
    Ok(ExitCode::from(crate::EXIT_BAD_INPUT))
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
            items.push(ApplyItem {
                document: serde_json::to_vec(&loaded.resource)?.into(),
                origin: format!("{} (document {})", input.origin, loaded.document),
                expected_revision: None,
            });
        }
    }
    if items.is_empty() {
        return Err(crate::BadInput("no resources to apply".into()).into());
    }
    let c = client(server).await?;
    let request = ApplyRequest { items };
    let answer = server
        .call(|| {
            let (mut c, request) = (c.clone(), request.clone());
            async move { c.apply(request).await }
        })
        .await;
    match answer {
        Ok(_) => {
            for n in names {
                println!("{n} ok");
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(s) if is_bad_input(&s) => bad(s),
        Err(s) => Err(status_error(s)),
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

fn decode(entry: &Entry) -> Result<Resource> {
    let out = manul_model::load("server", &entry.value);
    out.into_result()
        .map_err(|e| anyhow::anyhow!("the server sent an invalid resource: {}", e[0]))?
        .into_iter()
        .next()
        .map(|l| l.resource)
        .context("the server sent an empty value")
}

pub async fn get(server: &ServerArgs, args: &GetArgs) -> Result<ExitCode> {
    let kind = kind_of(&args.kind)?;
    let c = client(server).await?;
    let entries = match &args.name {
        Some(name) => {
            let request = GetRequest {
                key: Some(ResourceKey {
                    kind: kind.key_name().into(),
                    namespace: args.namespace.clone().unwrap_or_default(),
                    name: name.clone(),
                }),
            };
            let answer = server
                .call(|| {
                    let (mut c, request) = (c.clone(), request.clone());
                    async move { c.get(request).await }
                })
                .await;
            match answer {
                Ok(r) => r.into_inner().entry.into_iter().collect(),
                Err(s) if is_bad_input(&s) => return bad(s),
                Err(s) => return Err(status_error(s)),
            }
        }
        None => match server
            .call(|| {
                let mut c = c.clone();
                let request = ListRequest {
                    kind: kind.key_name().into(),
                    namespace: args.namespace.clone().unwrap_or_default(),
                };
                async move { c.list(request).await }
            })
            .await
        {
            Ok(r) => r.into_inner().entries,
            Err(s) if is_bad_input(&s) => return bad(s),
            Err(s) => return Err(status_error(s)),
        },
    };
    match args.output {
        Output::Table => {
            if kind.namespaced() {
                println!("{:<20} {:<40} {:>10}", "NAMESPACE", "NAME", "REVISION");
            } else {
                println!("{:<40} {:>10}", "NAME", "REVISION");
            }
            for e in &entries {
                let k = e.key.clone().unwrap_or_default();
                if kind.namespaced() {
                    println!("{:<20} {:<40} {:>10}", k.namespace, k.name, e.revision);
                } else {
                    println!("{:<40} {:>10}", k.name, e.revision);
                }
            }
        }
        Output::Yaml => {
            for e in &entries {
                print!("---\n{}", serde_yaml_ng::to_string(&decode(e)?)?);
            }
        }
        Output::Json => {
            let items = entries.iter().map(decode).collect::<Result<Vec<_>>>()?;
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
            for l in &input.outcome.resources {
                let k = l.resource.key();
                keys.push(ResourceKey {
                    kind: k.kind.key_name().into(),
                    namespace: k.namespace.unwrap_or_default(),
                    name: k.name,
                });
            }
        }
    } else {
        let (Some(kind), Some(name)) = (&args.kind, &args.name) else {
            eprintln!("error: give KIND NAME, or -f PATH");
            return Ok(ExitCode::from(crate::EXIT_BAD_INPUT));
        };
        keys.push(ResourceKey {
            kind: kind_of(kind)?.key_name().into(),
            namespace: args.namespace.clone().unwrap_or_default(),
            name: name.clone(),
        });
    }
    let asked = keys.len();
    let c = client(server).await?;
    let request = DeleteRequest {
        keys,
        expected_revision: None,
    };
    let answer = server
        .call(|| {
            let (mut c, request) = (c.clone(), request.clone());
            async move { c.delete(request).await }
        })
        .await;
    match answer {
        Ok(r) => {
            let r = r.into_inner();
            for k in &r.deleted {
                let ns = if k.namespace.is_empty() {
                    String::new()
                } else {
                    format!("{}/", k.namespace)
                };
                println!("{} {ns}{} deleted", k.kind, k.name);
            }
            if r.deleted.len() < asked {
                eprintln!(
                    "error: {} of {asked} resources did not exist",
                    asked - r.deleted.len()
                );
                return Ok(ExitCode::from(crate::EXIT_BAD_INPUT));
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(s) if is_bad_input(&s) => bad(s),
        Err(s) => Err(status_error(s)),
    }
}
