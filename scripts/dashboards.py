#!/usr/bin/env python3
"""Manul's Grafana dashboards: the one source of deploy/dashboards/*.json.

Each dashboard is a list of rows of panels; each panel names its PromQL
queries. `render()` turns them into Grafana dashboard JSON (schemaVersion
39, a `datasource` template variable of type prometheus, a fixed uid), so
they import into any Grafana. `python3 scripts/dashboards.py --write`
rewrites the files; scripts/check-manifests.py fails when they differ from
this source or name a metric the code does not register, and
local-cluster/tests/dashboards.rs runs every query against a real
Prometheus scraping a local cluster and fails when one returns nothing.

Queries may use only these Grafana variables (the test substitutes them):
`$__rate_interval`, `$__range` and `$instance` (a regex, `.+` for All).
"""

import json
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "deploy/dashboards"
SCHEMA_VERSION = 39
DS = {"type": "prometheus", "uid": "${datasource}"}
RATE = "$__rate_interval"
I = 'instance=~"$instance"'


def q(expr, legend=""):
    return {"expr": expr, "legend": legend}


def panel(title, queries, kind="timeseries", unit="short", description="", width=8):
    return {
        "title": title,
        "queries": queries,
        "kind": kind,
        "unit": unit,
        "description": description,
        "width": width,
    }


def stat(title, expr, description="", unit="short"):
    return panel(title, [q(expr)], kind="stat", unit=unit, description=description, width=6)


def quantiles(metric, by, selector=""):
    """p50, p90 and p99 of a histogram, per `by` labels."""
    sel = "{" + selector + "}" if selector else ""
    group = ", ".join(["le"] + by)
    legend = " ".join("{{" + b + "}}" for b in by)
    return [
        q(
            f"histogram_quantile({p}, sum by ({group}) (rate({metric}_bucket{sel}[{RATE}])))",
            f"p{int(p * 100)} {legend}".strip(),
        )
        for p in (0.5, 0.9, 0.99)
    ]


FELIX = {
    "uid": "manul-felix",
    "title": "Manul / Felix",
    "description": "Felix on each node: what it holds, how fast it computes and programs, whether it is in sync.",
    "instance_metric": "felix_resync_state",
    "rows": [
        (
            "Cluster (as Felix sees it)",
            [
                stat("Endpoints", f"max(felix_cluster_num_workload_endpoints{{{I}}})", "Workload and host endpoints in the cluster"),
                stat("Policies", f"max(felix_cluster_num_policies{{{I}}})", "Policies in the cluster"),
                stat("Network sets", f"max(felix_cluster_num_network_sets{{{I}}})"),
                stat("Felix in sync", f"count(felix_resync_state{{{I}}} == 3)", "Felix instances in sync with Typha"),
            ],
        ),
        (
            "This node",
            [
                panel("Active local endpoints", [q(f"felix_active_local_endpoints{{{I}}}", "{{instance}}")]),
                panel(
                    "Active local policies and profiles",
                    [
                        q(f"felix_active_local_policies{{{I}}}", "policies {{instance}}"),
                        q(f"felix_active_local_profiles{{{I}}}", "profiles {{instance}}"),
                    ],
                ),
                panel("IP sets (selectors and named sets)", [q(f"felix_ipsets_calico{{{I}}}", "{{instance}}")]),
            ],
        ),
        (
            "Latency",
            [
                panel(
                    "Calculation graph update time",
                    quantiles("felix_calc_graph_update_time_seconds", ["instance"], I),
                    unit="s",
                    width=12,
                ),
                panel(
                    "Dataplane apply time",
                    quantiles("felix_int_dataplane_apply_time_seconds", ["instance"], I),
                    unit="s",
                    width=12,
                ),
            ],
        ),
        (
            "Sync and resyncs",
            [
                panel(
                    "Sync state",
                    [q(f"felix_resync_state{{{I}}}", "{{instance}}")],
                    description="1 waiting, 2 resyncing, 3 in sync",
                ),
                panel(
                    "Resyncs",
                    [q(f"sum by (instance, target) (increase(felix_resyncs_started_total{{{I}}}[{RATE}]))", "{{target}} {{instance}}")],
                    description="datastore: a new stream from Typha; dataplane: the driver resent the whole state after a failed batch",
                ),
                panel("Revision applied", [q(f"felix_sync_revision{{{I}}}", "{{instance}}")]),
                panel(
                    "Dataplane operations",
                    [q(f"rate(felix_int_dataplane_operations_total{{{I}}}[{RATE}])", "{{instance}}")],
                    unit="ops",
                ),
                panel(
                    "Dataplane failures and repairs",
                    [
                        q(f"increase(felix_int_dataplane_failures_total{{{I}}}[{RATE}])", "failures {{instance}}"),
                        q(f"increase(felix_int_dataplane_repairs_total{{{I}}}[{RATE}])", "repairs {{instance}}"),
                    ],
                ),
                panel("Dataplane out of sync", [q(f"felix_int_dataplane_out_of_sync{{{I}}}", "{{instance}}")]),
            ],
        ),
        (
            "Conntrack (eBPF dataplane)",
            [
                panel("Conntrack entries", [q(f"felix_conntrack_entries{{{I}}}", "{{instance}}")], width=12),
                panel(
                    "Conntrack table use",
                    [q(f"felix_conntrack_entries{{{I}}} / felix_conntrack_capacity{{{I}}}", "{{instance}}")],
                    unit="percentunit",
                    width=12,
                ),
            ],
        ),
    ],
}

TYPHA = {
    "uid": "manul-typha",
    "title": "Manul / Typha",
    "description": "Typha replicas: Raft (leader, term, commit and apply) and the fan-out to Felix (connections, snapshots, deltas).",
    "instance_metric": "typha_raft_term",
    "rows": [
        (
            "Raft",
            [
                stat("Leader", f"max(typha_raft_leader_id{{{I}}})", "Node id of the leader (0: none)"),
                stat("Replicas leading", f"sum(typha_raft_is_leader{{{I}}})", "1 when the cluster has a leader"),
                stat("Term", f"max(typha_raft_term{{{I}}})"),
                stat("Commit index", f"max(typha_raft_commit_index{{{I}}})"),
                panel("Term", [q(f"typha_raft_term{{{I}}}", "{{instance}}")]),
                panel(
                    "Commit and apply lag",
                    [
                        q(f"scalar(max(typha_raft_commit_index)) - typha_raft_commit_index{{{I}}}", "commit lag {{instance}}"),
                        q(f"typha_raft_commit_index{{{I}}} - typha_raft_applied_index{{{I}}}", "apply lag {{instance}}"),
                    ],
                    description="Commit lag: entries behind the highest commit index of any replica; apply lag: committed but not yet applied",
                ),
                panel(
                    "Log since the last snapshot",
                    [q(f"typha_raft_applied_index{{{I}}} - typha_raft_snapshot_index{{{I}}}", "{{instance}}")],
                ),
                panel(
                    "Refused messages and apply errors",
                    [
                        q(f"increase(typha_raft_refused_messages_total{{{I}}}[{RATE}])", "refused {{instance}}"),
                        q(f"increase(typha_raft_apply_errors_total{{{I}}}[{RATE}])", "apply errors {{instance}}"),
                    ],
                    width=16,
                ),
            ],
        ),
        (
            "Fan-out",
            [
                panel("Connections", [q(f"typha_connections_active{{{I}}}", "{{instance}}")]),
                panel(
                    "Connections accepted and dropped",
                    [
                        q(f"increase(typha_connections_accepted_total{{{I}}}[{RATE}])", "accepted {{instance}}"),
                        q(f"sum by (instance, reason) (increase(typha_connections_dropped_total{{{I}}}[{RATE}]))", "dropped {{reason}} {{instance}}"),
                    ],
                ),
                panel(
                    "Snapshot sends",
                    [
                        q(f"increase(typha_snapshots_generated_total{{{I}}}[{RATE}])", "generated {{instance}}"),
                        q(f"increase(typha_snapshots_reused_total{{{I}}}[{RATE}])", "reused {{instance}}"),
                        q(f"increase(typha_client_snapshot_send_secs_count{{{I}}}[{RATE}])", "sent {{instance}}"),
                    ],
                ),
                panel(
                    "Snapshot send time",
                    quantiles("typha_client_snapshot_send_secs", ["instance"], I),
                    unit="s",
                ),
                panel(
                    "Breadcrumbs (revision published)",
                    [q(f"typha_breadcrumb_seq_number{{{I}}}", "{{instance}}")],
                ),
                panel("Deltas published", [q(f"rate(typha_updates_total{{{I}}}[{RATE}])", "{{instance}}")], unit="ops"),
                panel("Delta history", [q(f"typha_history_bytes{{{I}}}", "{{instance}}")], unit="bytes"),
            ],
        ),
    ],
}

FLOWS = {
    "uid": "manul-flows",
    "title": "Manul / Flows",
    "description": "New flows allowed and denied per deciding policy, from the dataplanes that count flows (eBPF).",
    "instance_metric": "felix_resync_state",
    "rows": [
        (
            "Flows per policy",
            [
                stat("Flows allowed", f'sum(increase(felix_policy_flows_total{{action="allow",{I}}}[$__range]))'),
                stat("Flows denied", f'sum(increase(felix_policy_flows_total{{action="deny",{I}}}[$__range]))'),
                panel(
                    "Allowed per policy",
                    [q(f'sum by (policy) (rate(felix_policy_flows_total{{action="allow",{I}}}[{RATE}]))', "{{policy}}")],
                    unit="ops",
                    width=12,
                ),
                panel(
                    "Denied per policy",
                    [q(f'sum by (policy) (rate(felix_policy_flows_total{{action="deny",{I}}}[{RATE}]))', "{{policy}}")],
                    unit="ops",
                    width=12,
                ),
                panel(
                    "Top policies",
                    [q(f"topk(10, sum by (policy, action) (increase(felix_policy_flows_total{{{I}}}[$__range])))", "{{action}} {{policy}}")],
                    kind="table",
                    width=24,
                ),
            ],
        ),
    ],
}

SCALE = {
    "uid": "manul-scale",
    "title": "Manul / Scale",
    "description": "What a scale run watches across every node: propagation from Typha to the slowest Felix, and latency percentiles over all nodes.",
    "instance_metric": None,
    "rows": [
        (
            "Propagation",
            [
                stat("Felix in sync", "count(felix_resync_state == 3)"),
                stat("Felix connected", "count(felix_resync_state)"),
                stat("Endpoints programmed", "sum(felix_active_local_endpoints)"),
                stat("Typha connections", "sum(typha_connections_active)"),
                panel(
                    "Revisions: Typha and the slowest Felix",
                    [
                        q("max(typha_breadcrumb_seq_number)", "Typha"),
                        q("min(felix_sync_revision)", "slowest Felix"),
                        q("max(felix_sync_revision)", "fastest Felix"),
                    ],
                    width=12,
                ),
                panel(
                    "Revisions the slowest Felix trails",
                    [q("max(typha_breadcrumb_seq_number) - min(felix_sync_revision)", "behind")],
                    width=12,
                ),
            ],
        ),
        (
            "Latency over all nodes",
            [
                panel("Calculation graph update time", quantiles("felix_calc_graph_update_time_seconds", []), unit="s"),
                panel("Dataplane apply time", quantiles("felix_int_dataplane_apply_time_seconds", []), unit="s"),
                panel("Snapshot send time", quantiles("typha_client_snapshot_send_secs", []), unit="s"),
                panel("Dataplane operations", [q(f"sum(rate(felix_int_dataplane_operations_total[{RATE}]))", "operations")], unit="ops"),
                panel(
                    "Dataplane failures and resyncs",
                    [
                        q(f"sum(increase(felix_int_dataplane_failures_total[{RATE}]))", "failures"),
                        q(f"sum by (target) (increase(felix_resyncs_started_total[{RATE}]))", "resyncs {{target}}"),
                    ],
                ),
                panel("Deltas published", [q(f"sum(rate(typha_updates_total[{RATE}]))", "deltas")], unit="ops"),
            ],
        ),
    ],
}

DASHBOARDS = {
    "manul-felix.json": FELIX,
    "manul-typha.json": TYPHA,
    "manul-flows.json": FLOWS,
    "manul-scale.json": SCALE,
}


def templating(d):
    variables = [
        {
            "name": "datasource",
            "label": "Prometheus",
            "type": "datasource",
            "query": "prometheus",
            "current": {},
            "hide": 0,
            "refresh": 1,
        }
    ]
    if d["instance_metric"]:
        query = f"label_values({d['instance_metric']}, instance)"
        variables.append(
            {
                "name": "instance",
                "label": "Instance",
                "type": "query",
                "datasource": DS,
                "query": {"query": query, "refId": "instance"},
                "definition": query,
                "includeAll": True,
                "multi": True,
                "allValue": ".+",
                "current": {"text": "All", "value": "$__all"},
                "refresh": 2,
                "sort": 1,
                "hide": 0,
            }
        )
    return {"list": variables}


def render_panels(d):
    panels = []
    next_id = 1
    y = 0
    for title, row in d["rows"]:
        panels.append(
            {
                "id": next_id,
                "type": "row",
                "title": title,
                "collapsed": False,
                "gridPos": {"h": 1, "w": 24, "x": 0, "y": y},
                "panels": [],
            }
        )
        next_id += 1
        y += 1
        x = 0
        row_height = 0
        for p in row:
            height = 4 if p["kind"] == "stat" else 8
            if x + p["width"] > 24:
                x = 0
                y += row_height
                row_height = 0
            out = {
                "id": next_id,
                "type": p["kind"],
                "title": p["title"],
                "datasource": DS,
                "gridPos": {"h": height, "w": p["width"], "x": x, "y": y},
                "fieldConfig": {"defaults": {"unit": p["unit"]}, "overrides": []},
                "targets": [
                    {
                        "refId": chr(ord("A") + i),
                        "datasource": DS,
                        "expr": t["expr"],
                        "legendFormat": t["legend"] or "__auto",
                        **({"instant": True, "format": "table"} if p["kind"] == "table" else {}),
                    }
                    for i, t in enumerate(p["queries"])
                ],
                "options": {},
            }
            if p["description"]:
                out["description"] = p["description"]
            if p["kind"] == "stat":
                out["options"] = {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False}}
            panels.append(out)
            next_id += 1
            x += p["width"]
            row_height = max(row_height, height)
        y += row_height
    return panels


def render_one(d):
    return {
        "id": None,
        "uid": d["uid"],
        "title": d["title"],
        "description": d["description"],
        "tags": ["manul"],
        "timezone": "browser",
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "editable": True,
        "graphTooltip": 1,
        "refresh": "30s",
        "time": {"from": "now-1h", "to": "now"},
        "templating": templating(d),
        "annotations": {"list": []},
        "panels": render_panels(d),
    }


def render():
    """{file name: JSON text} of every dashboard."""
    return {name: json.dumps(render_one(d), indent=2) + "\n" for name, d in DASHBOARDS.items()}


def queries():
    """Every PromQL query of every dashboard (panels and variables)."""
    out = []
    for d in DASHBOARDS.values():
        for _, row in d["rows"]:
            for p in row:
                out += [t["expr"] for t in p["queries"]]
    return out


def main():
    write = "--write" in sys.argv[1:]
    stale = []
    for name, text in render().items():
        path = OUT / name
        if write:
            OUT.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            print(f"wrote {path.relative_to(ROOT)}")
        elif not path.exists() or path.read_text() != text:
            stale.append(name)
    if stale:
        print(f"stale dashboards (run scripts/dashboards.py --write): {', '.join(stale)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
