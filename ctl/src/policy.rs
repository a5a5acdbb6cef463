//! `manulctl policy promote KIND/[NAMESPACE/]NAME`: makes a staged policy
//! its enforced kind in one atomic write (see `manul_model::promote`):
//! `Set` writes the enforced policy and deletes the staged one; `Delete`
//! deletes the enforced policy and the staged one.

use std::process::ExitCode;

use anyhow::Result;
use clap::{Args, Subcommand};
use manul_model::promote::promote;
use manul_model::{Kind, ResourceKey};

use crate::BadInput;
use crate::client::{ServerArgs, failure};

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Enforce a staged policy: KIND/NAMESPACE/NAME (or KIND/NAME for a
    /// StagedGlobalNetworkPolicy); the staged policy is deleted in the
    /// same write, as Calico does.
    Promote(PromoteArgs),
}

#[derive(Debug, Args)]
pub struct PromoteArgs {
    /// e.g. stagednetworkpolicy/shop/lock-down, sgnp/deny-all, sknp/shop/web.
    pub policy: String,
}

/// The staged policy's key from `KIND/NS/NAME` or `KIND/NAME`.
pub fn parse_key(text: &str) -> Result<ResourceKey, BadInput> {
    let parts: Vec<&str> = text.split('/').collect();
    let kind_word = parts.first().copied().unwrap_or_default();
    let kind = Kind::from_cli(kind_word).ok_or_else(|| {
        BadInput(format!(
            "unknown kind {kind_word:?} in {text:?}: use stagednetworkpolicy (snp), stagedglobalnetworkpolicy (sgnp) or stagedkubernetesnetworkpolicy (sknp)"
        ))
    })?;
    if !matches!(
        kind,
        Kind::StagedNetworkPolicy
            | Kind::StagedGlobalNetworkPolicy
            | Kind::StagedKubernetesNetworkPolicy
    ) {
        return Err(BadInput(format!(
            "{kind} is not a staged policy kind: only staged policies are promoted"
        )));
    }
    let (namespace, name) = match (kind.namespaced(), &parts[1..]) {
        (true, [ns, name]) if !ns.is_empty() && !name.is_empty() => {
            (Some((*ns).to_string()), (*name).to_string())
        }
        (false, [name]) if !name.is_empty() => (None, (*name).to_string()),
        (true, _) => {
            return Err(BadInput(format!(
                "{text:?}: a {kind} is named KIND/NAMESPACE/NAME"
            )));
        }
        (false, _) => return Err(BadInput(format!("{text:?}: a {kind} is named KIND/NAME"))),
    };
    Ok(ResourceKey {
        kind,
        namespace,
        name,
    })
}

pub async fn run(server: &ServerArgs, cmd: &PolicyCommand) -> Result<ExitCode> {
    let PolicyCommand::Promote(args) = cmd;
    let key = parse_key(&args.policy)?;
    let c = server.client().await?;
    let staged = match server.call(|| c.get(&key)).await {
        Ok(Some((resource, _))) => resource,
        Ok(None) => {
            eprintln!("error: {key} not found");
            return Ok(ExitCode::from(crate::EXIT_BAD_INPUT));
        }
        Err(e) => return failure(e),
    };
    let promotion = promote(&staged).map_err(|e| BadInput(e.to_string()))?;
    let result = match &promotion.write {
        Some(enforced) => {
            let items = [(enforced, None)];
            server
                .call(|| c.apply_and_delete(&items, &promotion.deletes))
                .await
                .map(|_| ())
        }
        None => server
            .call(|| c.delete_all(&promotion.deletes, None))
            .await
            .map(|_| ()),
    };
    if let Err(e) = result {
        return failure(e);
    }
    match &promotion.write {
        Some(enforced) => println!("{} written; {key} deleted", enforced.key()),
        None => {
            for k in &promotion.deletes {
                println!("{k} deleted");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_of_staged_policies_parse_and_others_are_refused() {
        let k = parse_key("snp/shop/lock-down").unwrap();
        assert_eq!(k.kind, Kind::StagedNetworkPolicy);
        assert_eq!(k.namespace.as_deref(), Some("shop"));
        assert_eq!(k.name, "lock-down");
        let g = parse_key("stagedglobalnetworkpolicy/deny-all").unwrap();
        assert_eq!(
            (g.kind, g.namespace),
            (Kind::StagedGlobalNetworkPolicy, None)
        );
        assert_eq!(
            parse_key("sknp/a/b").unwrap().kind,
            Kind::StagedKubernetesNetworkPolicy
        );
        for bad in [
            "networkpolicy/shop/x",
            "snp/x",
            "sgnp/a/b",
            "bogus/a",
            "snp//x",
            "",
        ] {
            assert!(parse_key(bad).is_err(), "{bad}");
        }
    }
}
