#!/usr/bin/env python3
"""Checks the Kubernetes install under deploy/ (run by scripts/test.sh).

- `kubectl kustomize deploy/kubernetes` equals deploy/manul.yaml and
  `kubectl kustomize deploy/kubernetes/monitoring` equals
  deploy/manul-monitoring.yaml (`--write` rewrites both from the sources);
  both dataplane overlays render and set the dataplane they are named for.
- Every rendered object is valid against the Kubernetes 1.33 schemas
  (kubernetes-validate, strict: unknown fields are errors), except the kinds
  in NOT_IN_SCHEMAS.
- deploy/kubernetes/monitoring/prometheusrule.yaml is built from the plain
  rule file deploy/prometheus/manul-rules.yaml (the one source of the
  alerts), and deploy/dashboards/*.json from scripts/dashboards.py;
  `--write` rewrites them, before rendering.
- The manifests agree with the code: every flag passed to typha and felix
  is one their main.rs declares, the CNI configuration's status directory
  is Felix's, and every metric the alerts and the dashboards name is one
  the code registers.
"""

import difflib
import json
import pathlib
import re
import subprocess
import sys

import kubernetes_validate
import yaml

import dashboards

ROOT = pathlib.Path(__file__).resolve().parent.parent
KUBERNETES_VERSION = "1.33"
RENDERED = {
    "deploy/kubernetes": "deploy/manul.yaml",
    "deploy/kubernetes/monitoring": "deploy/manul-monitoring.yaml",
}
OVERLAYS = {"bpf": "BPF", "iptables": "Iptables"}
# Kinds the Kubernetes schemas do not describe: the Prometheus Operator's
# custom resources (monitoring.coreos.com) and custom resources of Manul's
# own CRDs (projectcalico.org, operator.tigera.io). Any other kind without
# a schema is an error.
NOT_IN_SCHEMAS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("monitoring.coreos.com/v1", "PrometheusRule"),
}
NOT_IN_SCHEMAS_GROUPS = ("projectcalico.org/", "operator.tigera.io/")
# Where each binary's flags are declared, and where metrics are registered.
FLAG_SOURCES = {"typha": "typha/src/main.rs", "felix": "felix/src/main.rs"}
METRIC_SOURCES = ["felix/src", "typha/src"]
LISTENER_METRICS = "listen/src/slots.rs"

RULES = "deploy/prometheus/manul-rules.yaml"
PROMETHEUS_RULE = "deploy/kubernetes/monitoring/prometheusrule.yaml"
PROMETHEUS_RULE_HEAD = f"""# Manul's alerts as the Prometheus Operator's PrometheusRule. Generated
# from {RULES} by `python3 scripts/check-manifests.py --write`:
# edit that file, not this one.
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: manul
  namespace: manul-system
spec:
"""

errors = []


def error(msg):
    errors.append(msg)


def kustomize(path):
    out = subprocess.run(
        ["kubectl", "kustomize", str(ROOT / path)], capture_output=True, text=True
    )
    if out.returncode != 0:
        error(f"kubectl kustomize {path} failed:\n{out.stderr}")
        return None
    return out.stdout


def documents(text):
    return [d for d in yaml.safe_load_all(text) if d is not None]


def prometheus_rule():
    """The PrometheusRule: the rule file's groups (its comments kept) as
    the spec; the file's leading comment stays behind."""
    lines = (ROOT / RULES).read_text().splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("groups:")), None)
    if start is None:
        error(f"{RULES} has no top-level `groups:`")
        return None
    body = "".join(f"  {line}\n" if line else "\n" for line in lines[start:])
    return PROMETHEUS_RULE_HEAD + body


def check_generated(write):
    generated = {f"deploy/dashboards/{name}": text for name, text in dashboards.render().items()}
    rule = prometheus_rule()
    if rule is not None:
        generated[PROMETHEUS_RULE] = rule
    for dest, text in generated.items():
        path = ROOT / dest
        if write:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            print(f"wrote {dest}")
        elif not path.exists() or path.read_text() != text:
            error(f"{dest} is stale; regenerate it with `python3 scripts/check-manifests.py --write`")


def check_rendered(write):
    rendered = {}
    for src, dest in RENDERED.items():
        text = kustomize(src)
        if text is None:
            continue
        rendered[src] = text
        path = ROOT / dest
        if write:
            path.write_text(text)
            print(f"wrote {dest}")
            continue
        have = path.read_text() if path.exists() else ""
        if have != text:
            diff = "".join(
                difflib.unified_diff(
                    have.splitlines(True), text.splitlines(True), dest, f"kubectl kustomize {src}"
                )
            )
            error(
                f"{dest} is not the render of {src}; regenerate it with "
                f"`python3 scripts/check-manifests.py --write`:\n{diff}"
            )
    for name, dataplane in OVERLAYS.items():
        src = f"deploy/kubernetes/overlays/{name}"
        text = kustomize(src)
        if text is None:
            continue
        rendered[src] = text
        felix = [
            c
            for d in documents(text)
            if d.get("kind") == "DaemonSet"
            for c in d["spec"]["template"]["spec"]["containers"]
            if c["name"] == "felix"
        ]
        args = [a for c in felix for a in c.get("args", []) if a.startswith("--dataplane")]
        if args != ["--dataplane=kernel"]:
            error(f"{src}: Felix's dataplane flags are {args}, expected ['--dataplane=kernel'] (bpfEnabled decides)")
        installs = [
            (d.get("metadata", {}).get("name"), d.get("spec", {}).get("calicoNetwork", {}).get("linuxDataplane"))
            for d in documents(text)
            if d.get("kind") == "Installation"
        ]
        if installs != [("default", dataplane)]:
            error(f"{src}: the Installations are {installs}, expected [('default', {dataplane!r})]")
    return rendered


def validate(rendered):
    count = skipped = 0
    for src, text in rendered.items():
        for doc in documents(text):
            api, kind = doc.get("apiVersion", ""), doc.get("kind", "")
            name = f"{src}: {kind} {doc.get('metadata', {}).get('name')}"
            if (api, kind) in NOT_IN_SCHEMAS or api.startswith(NOT_IN_SCHEMAS_GROUPS):
                skipped += 1
                continue
            try:
                kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
                count += 1
            except kubernetes_validate.ValidationError as e:
                path = ".".join(str(p) for p in e.path)
                error(f"{name}: {path}: {e.message}")
            except kubernetes_validate.SchemaNotFoundError:
                error(f"{name}: no Kubernetes {KUBERNETES_VERSION} schema for {api} {kind}")
    print(f"validated {count} objects against Kubernetes {KUBERNETES_VERSION} (skipped {skipped} without a schema)")


def declared_flags(source):
    """`--kebab-name` for each `#[arg(long ...)]` field of a clap struct
    (or the name `long = "..."` gives)."""
    flags = set()
    pending = None
    for line in (ROOT / source).read_text().splitlines():
        line = line.strip()
        if line.startswith("#[arg(") and re.match(r"#\[arg\((.*\W)?long\b", line):
            explicit = re.search(r'\blong\s*=\s*"([^"]+)"', line)
            pending = explicit.group(1) if explicit else ""
        elif pending is not None and not line.startswith(("#[", "///")):
            field = re.match(r"(?:pub\s+)?(\w+)\s*:", line)
            if field:
                flags.add("--" + (pending or field.group(1).replace("_", "-")))
            pending = None
    return flags


def containers(text):
    for doc in documents(text):
        spec = doc.get("spec", {}).get("template", {}).get("spec")
        if not spec:
            continue
        for c in spec.get("initContainers", []) + spec.get("containers", []):
            yield doc, c


def check_against_code(rendered):
    base = rendered.get("deploy/kubernetes")
    if base is None:
        return
    flags = {binary: declared_flags(src) for binary, src in FLAG_SOURCES.items()}
    for binary, found in flags.items():
        if not found:
            error(f"no flags found in {FLAG_SOURCES[binary]}: the pattern no longer matches clap's")
    felix_status_dir = None
    for doc, c in containers(base):
        binary = (c.get("command") or [None])[0]
        if binary not in flags:
            continue
        for arg in c.get("args", []):
            flag = arg.split("=", 1)[0]
            if flag not in flags[binary]:
                error(f"{doc['kind']} {doc['metadata']['name']}: {binary} has no flag {flag} ({FLAG_SOURCES[binary]})")
            if binary == "felix" and flag == "--status-dir":
                felix_status_dir = arg.split("=", 1)[1]
    conflist = json.loads((ROOT / "deploy/kubernetes/base/cni/10-manul.conflist").read_text())
    dirs = {p.get("endpoint_status_dir") for p in conflist["plugins"]}
    if dirs != {felix_status_dir}:
        error(f"the conflist's endpoint_status_dir {dirs} is not Felix's --status-dir {felix_status_dir!r}")

    registered = set()
    for d in METRIC_SOURCES:
        for f in (ROOT / d).rglob("*.rs"):
            registered |= set(re.findall(r'register\(\s*"((?:felix|typha)_\w+)"', f.read_text()))
    # manul-listen registers the listeners' families under each process's
    # prefix (`format!("{prefix}_listener_...")`, `ListenerMetrics::register`).
    listener_families = re.findall(
        r'format!\("\{prefix\}_(\w+)"\)', (ROOT / LISTENER_METRICS).read_text()
    )
    if not listener_families:
        error(f"{LISTENER_METRICS} registers no listener metric family")
    registered |= {f"{p}_{family}" for p in ("felix", "typha") for family in listener_families}
    exported = set()
    for name in registered:
        exported |= {name, name + "_total", name + "_bucket", name + "_sum", name + "_count"}
    monitoring = rendered.get("deploy/kubernetes/monitoring", "")
    queried = 0
    for expr in dashboards.queries():
        for metric in re.findall(r"\b(?:felix|typha)_\w+", expr):
            queried += 1
            if metric not in exported:
                error(f"dashboard query {expr!r}: no metric {metric} is registered in {METRIC_SOURCES}")
    named = 0
    for doc in documents(monitoring):
        if doc.get("kind") != "PrometheusRule":
            continue
        for group in doc["spec"]["groups"]:
            for rule in group["rules"]:
                for metric in re.findall(r"\b(?:felix|typha)_\w+", rule["expr"]):
                    named += 1
                    if metric not in exported:
                        error(f"PrometheusRule {rule.get('alert')}: no metric {metric} is registered in {METRIC_SOURCES}")
    if named == 0:
        error("the PrometheusRule names no Manul metric")
    print(
        f"checked container flags against {sum(len(v) for v in flags.values())} declared ones, "
        f"{named} metric references in alerts and {queried} in dashboards"
    )


def main():
    write = "--write" in sys.argv[1:]
    check_generated(write)
    rendered = check_rendered(write)
    validate(rendered)
    check_against_code(rendered)
    for e in errors:
        print(f"error: {e}", file=sys.stderr)
    if errors:
        return 1
    print("manifests ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
