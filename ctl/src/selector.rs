//! `manulctl selector eval`: JSON lines in, one JSON line out per input
//! line, in order.
//!
//! - `{"selector": S, "labels": {...}}` gives `{"match": true|false}`;
//! - `{"selector": S}` gives `{"canonical": "..."}`;
//! - a selector that does not parse, or a malformed request, gives
//!   `{"error": "..."}`.
//!
//! Blank lines are skipped. A line that is not JSON ends the run with exit
//! code 2.

use std::collections::BTreeMap;
use std::io::{self, BufRead, Write};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Subcommand;
use manul_model::Selector;
use serde_json::{Value, json};

#[derive(Debug, Subcommand)]
pub enum SelectorCommand {
    /// Evaluate or canonicalise selectors given as JSON lines on stdin.
    Eval,
}

pub fn run(cmd: &SelectorCommand) -> Result<ExitCode> {
    match cmd {
        SelectorCommand::Eval => eval(io::stdin().lock(), &mut io::stdout().lock()),
    }
}

/// Answers one request line.
fn answer(request: &Value) -> Value {
    let Some(obj) = request.as_object() else {
        return json!({"error": "each line must be a JSON object with a \"selector\" string"});
    };
    let Some(text) = obj.get("selector").and_then(Value::as_str) else {
        return json!({"error": "missing \"selector\" string"});
    };
    let selector = match Selector::parse(text) {
        Ok(s) => s,
        Err(e) => return json!({"error": e.to_string()}),
    };
    match obj.get("labels") {
        None | Some(Value::Null) => json!({"canonical": selector.canonical()}),
        Some(Value::Object(map)) => {
            let mut labels = BTreeMap::new();
            for (k, v) in map {
                let Some(v) = v.as_str() else {
                    return json!({"error": format!("label {k:?} must have a string value")});
                };
                labels.insert(k.clone(), v.to_string());
            }
            json!({"match": selector.matches(&labels)})
        }
        Some(_) => json!({"error": "\"labels\" must be an object of strings"}),
    }
}

fn eval(input: impl BufRead, out: &mut impl Write) -> Result<ExitCode> {
    for (n, line) in input.lines().enumerate() {
        let line = line.with_context(|| format!("line {}: cannot read (is it UTF-8?)", n + 1))?;
        if line.trim().is_empty() {
            continue;
        }
        let request: Value = match serde_json::from_str(&line) {
            Ok(v) => v,
            Err(e) => {
                eprintln!("error: line {}: not JSON: {e}", n + 1);
                return Ok(ExitCode::from(crate::EXIT_BAD_INPUT));
            }
        };
        writeln!(out, "{}", answer(&request)).context("cannot write output")?;
        out.flush().context("cannot write output")?;
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_lines(input: &str) -> (String, ExitCode) {
        let mut out = Vec::new();
        let code = eval(input.as_bytes(), &mut out).unwrap();
        (String::from_utf8(out).unwrap(), code)
    }

    #[test]
    fn one_answer_per_line_in_order() {
        let (out, code) = run_lines(concat!(
            r#"{"selector": "app == 'api'", "labels": {"app": "api"}}"#,
            "\n",
            r#"{"selector": "app == 'api'", "labels": {}}"#,
            "\n",
            "\n",
            r#"{"selector": "a in {'y', 'x', 'x'}"}"#,
            "\n",
            r#"{"selector": "app == api"}"#,
            "\n",
            r#"{"labels": {}}"#,
            "\n",
        ));
        assert_eq!(code, ExitCode::SUCCESS);
        let lines: Vec<Value> = out
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 5);
        assert_eq!(lines[0], json!({"match": true}));
        assert_eq!(lines[1], json!({"match": false}));
        assert_eq!(lines[2], json!({"canonical": "a in {\"x\", \"y\"}"}));
        assert!(
            lines[3]["error"].as_str().unwrap().contains("position 7"),
            "{}",
            lines[3]
        );
        assert!(lines[4]["error"].is_string());
    }

    #[test]
    fn non_json_input_exits_2_after_earlier_answers() {
        let (out, code) =
            run_lines("{\"selector\": \"all()\"}\nnot json\n{\"selector\": \"all()\"}\n");
        assert_eq!(code, ExitCode::from(2));
        assert_eq!(out.lines().count(), 1);
    }
}
