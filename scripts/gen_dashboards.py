#!/usr/bin/env python3
"""Generate the Grafana dashboards in dashboards/ (the committed JSON is what users import).

Run after changing a panel: `python3 scripts/gen_dashboards.py`. tests/sre_stack.rs runs every
query of the committed JSON against a real Prometheus scraping a real proxy, and
tests/dashboards.rs checks the JSON is what this script generates.
"""
import json
import os
import sys

SCHEMA_VERSION = 41  # Grafana 11.3+ / 12
DS = {"type": "prometheus", "uid": "${datasource}"}
RATE = "$__rate_interval"

AGENT = 'agent=~"$agent"'
ROUTE = 'route=~"$route"'
MODEL = 'model=~"$model"'
# `$model` lists served models (tokenwarden_tokens_total's `model`): the GenAI series are
# filtered by their served model too, or a dated name (gpt-4o-2024-08-06 served for gpt-4o)
# would empty their panels.
GEN_AI = 'agent=~"$agent", gen_ai_response_model=~"$model"'


def variables(with_route=True, with_model=True):
    v = [
        {
            "name": "datasource",
            "label": "Data source",
            "type": "datasource",
            "query": "prometheus",
            "current": {},
            "hide": 0,
            "refresh": 1,
        },
        label_var("agent", "Agent", "tokenwarden_requests_total", "agent"),
    ]
    if with_model:
        v.append(label_var("model", "Model", "tokenwarden_tokens_total", "model"))
    if with_route:
        v.append(label_var("route", "Route", "tokenwarden_requests_total", "route"))
    return v


def label_var(name, label, metric, lbl):
    q = f"label_values({metric}, {lbl})"
    return {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": DS,
        "query": {"query": q, "refId": f"{name}-values"},
        "definition": q,
        "includeAll": True,
        "allValue": ".*",
        "multi": True,
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        "refresh": 2,
        "sort": 1,
        "hide": 0,
    }


class Board:
    def __init__(self, uid, title, description, tags, **var_opts):
        self.uid, self.title, self.description, self.tags = uid, title, description, tags
        self.panels = []
        self.y = 0
        self.x = 0
        self.row_h = 0
        self.next_id = 1
        self.vars = variables(**var_opts)

    def row(self, title):
        self._newline()
        self.panels.append({
            "id": self._id(), "type": "row", "title": title, "collapsed": False,
            "gridPos": {"h": 1, "w": 24, "x": 0, "y": self.y}, "panels": [],
        })
        self.y += 1

    def _newline(self):
        if self.x:
            self.y += self.row_h
            self.x, self.row_h = 0, 0

    def _id(self):
        i = self.next_id
        self.next_id += 1
        return i

    def panel(self, title, targets, unit="short", kind="timeseries", w=12, h=8,
              description="", stack=False, decimals=None, exemplar=False):
        if self.x + w > 24:
            self._newline()
        p = {
            "id": self._id(),
            "type": kind,
            "title": title,
            "description": description,
            "datasource": DS,
            "gridPos": {"h": h, "w": w, "x": self.x, "y": self.y},
            "targets": [
                {"refId": chr(ord("A") + i), "datasource": DS, "expr": expr,
                 "legendFormat": legend, "range": True, "editorMode": "code"}
                for i, (expr, legend) in enumerate(targets)
            ],
            "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
            "options": {},
        }
        if exemplar:
            # The proxy's OpenMetrics exposition carries each bucket's trace; the data source's
            # exemplarTraceIdDestinations turns it into a link (deploy/grafana/provisioning).
            for t in p["targets"]:
                t["exemplar"] = True
        if decimals is not None:
            p["fieldConfig"]["defaults"]["decimals"] = decimals
        if kind == "timeseries":
            p["fieldConfig"]["defaults"]["custom"] = {
                "drawStyle": "line", "lineWidth": 1, "fillOpacity": 10,
                "stacking": {"mode": "normal" if stack else "none", "group": "A"},
                "showPoints": "never", "spanNulls": True,
            }
            p["options"] = {"legend": {"displayMode": "table", "placement": "bottom",
                                       "calcs": ["mean", "max"], "showLegend": True},
                            "tooltip": {"mode": "multi", "sort": "desc"}}
        elif kind == "stat":
            p["options"] = {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "",
                                              "values": False},
                            "colorMode": "value", "graphMode": "area", "textMode": "auto"}
        self.panels.append(p)
        self.x += w
        self.row_h = max(self.row_h, h)

    def json(self):
        return {
            "uid": self.uid,
            "title": self.title,
            "description": self.description,
            "tags": self.tags,
            "schemaVersion": SCHEMA_VERSION,
            "version": 1,
            "editable": True,
            "graphTooltip": 1,
            "timezone": "browser",
            "refresh": "30s",
            "time": {"from": "now-1h", "to": "now"},
            "timepicker": {},
            "fiscalYearStartMonth": 0,
            "liveNow": False,
            "weekStart": "",
            "annotations": {"list": [{
                "builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                "enable": True, "hide": True, "iconColor": "rgba(0, 211, 255, 1)",
                "name": "Annotations & Alerts", "type": "dashboard",
            }]},
            "links": [{"title": "tokenwarden dashboards", "type": "dashboards",
                       "tags": ["tokenwarden"], "asDropdown": True, "includeVars": True,
                       "keepTime": True}],
            "templating": {"list": self.vars},
            "panels": self.panels,
        }


def q(p, metric, by, where):
    return (f"histogram_quantile({p}, sum by (le{', ' + by if by else ''}) "
            f"(rate({metric}_bucket{{{where}}}[{RATE}])))")


def overview():
    b = Board("tokenwarden-overview", "tokenwarden / Overview",
              "LLM traffic through the tokenwarden sidecars: requests, errors, latency, time to "
              "first token, tokens and cost.", ["tokenwarden", "llm"])
    b.row("Traffic")
    b.panel("Requests per second", [(
        f"sum by (route) (rate(tokenwarden_requests_total{{{AGENT}, {ROUTE}}}[{RATE}]))",
        "{{route}}")], unit="reqps", w=8)
    b.panel("Error rate", [(
        f'sum(rate(tokenwarden_requests_total{{{AGENT}, {ROUTE}, status=~"5xx|error"}}[{RATE}]))'
        f" / sum(rate(tokenwarden_requests_total{{{AGENT}, {ROUTE}}}[{RATE}]))",
        "errors / requests")], unit="percentunit", w=8,
        description="Share of calls that ended in a 5xx or a broken response.")
    b.panel("Requests by status", [(
        f"sum by (status) (rate(tokenwarden_requests_total{{{AGENT}, {ROUTE}}}[{RATE}]))",
        "{{status}}")], unit="reqps", w=8, stack=True)
    b.row("Latency")
    b.panel("LLM call duration p50 / p95 / p99", [
        (q(0.5, "gen_ai_client_inference_duration_seconds", "", GEN_AI), "p50"),
        (q(0.95, "gen_ai_client_inference_duration_seconds", "", GEN_AI), "p95"),
        (q(0.99, "gen_ai_client_inference_duration_seconds", "", GEN_AI), "p99"),
    ], unit="s", w=8, exemplar=True,
       description="Exemplar dots link a slow call to its trace.")
    b.panel("Time to first token p50 / p95", [
        (q(0.5, "gen_ai_client_inference_time_to_first_chunk_seconds", "", GEN_AI), "p50"),
        (q(0.95, "gen_ai_client_inference_time_to_first_chunk_seconds", "", GEN_AI), "p95"),
    ], unit="s", w=8, exemplar=True,
       description="Streamed calls: request to first output chunk. Exemplar dots link to the trace.")
    b.panel("Sidecar overhead p99", [
        (q(0.99, "tokenwarden_overhead_seconds", "route", ROUTE), "{{route}}"),
    ], unit="s", w=8, description="Time spent in the sidecar itself, upstream time excluded.")
    b.row("Tokens and cost")
    b.panel("Tokens per second, in and out", [(
        f'sum by (type) (rate(tokenwarden_tokens_total{{{AGENT}, {MODEL}, type=~"input|output"}}[{RATE}]))',
        "{{type}}")], unit="short", w=8)
    b.panel("Cost per hour (USD)", [(
        f"sum(rate(tokenwarden_cost_usd_total{{{AGENT}, {MODEL}}}[{RATE}])) * 3600",
        "USD / hour")], unit="currencyUSD", w=8, decimals=4)
    b.panel("Upstream errors by kind", [(
        f"sum by (kind) (rate(tokenwarden_upstream_errors_total{{{ROUTE}}}[{RATE}]))",
        "{{kind}}")], unit="reqps", w=8, stack=True)
    b.panel("Tokens per call p95, in and out", [
        (q(0.95, "gen_ai_client_inference_operation_input_tokens", "", GEN_AI), "input"),
        (q(0.95, "gen_ai_client_inference_operation_output_tokens", "", GEN_AI), "output"),
    ], unit="short", w=12, exemplar=True,
       description="What drives cost: tokens per inference call. Exemplar dots link a costly "
                   "call to its trace.")
    b.panel("Cost per call p50 / p95 (USD)", [
        (q(0.5, "tokenwarden_call_cost_usd", "", f"{AGENT}, {MODEL}"), "p50"),
        (q(0.95, "tokenwarden_call_cost_usd", "", f"{AGENT}, {MODEL}"), "p95"),
    ], unit="currencyUSD", w=12, decimals=4, exemplar=True,
       description="Priced calls (budgets with a pricing table). Exemplar dots link a costly "
                   "call to its trace.")
    b.panel("Time per output chunk p95", [
        (q(0.95, "gen_ai_client_inference_time_per_output_chunk_seconds", "", GEN_AI), "p95"),
    ], unit="s", w=12)
    b.panel("Tokens by source", [(
        f"sum by (source) (rate(tokenwarden_tokens_total{{{AGENT}, {MODEL}}}[{RATE}]))",
        "{{source}}")], unit="short", w=12,
        description="provider: stated by the provider; injected: usage the proxy asked for; "
                    "estimated: counted by the proxy where no usage was stated.")
    return b


def budgets():
    b = Board("tokenwarden-budgets", "tokenwarden / Budgets & cost",
              "Spend by agent and model, budget decisions, breaches, warnings and sessions.",
              ["tokenwarden", "llm", "budgets"], with_route=False)
    b.row("Spend")
    b.panel("Spend per hour by agent (USD)", [(
        f"sum by (agent) (rate(tokenwarden_cost_usd_total{{{AGENT}, {MODEL}}}[{RATE}])) * 3600",
        "{{agent}}")], unit="currencyUSD", w=12, stack=True, decimals=4)
    b.panel("Spend per hour by model (USD)", [(
        f"sum by (model) (rate(tokenwarden_cost_usd_total{{{AGENT}, {MODEL}}}[{RATE}])) * 3600",
        "{{model}}")], unit="currencyUSD", w=12, stack=True, decimals=4)
    b.panel("Cost per call p95 by agent (USD)", [
        (q(0.95, "tokenwarden_call_cost_usd", "agent", f"{AGENT}, {MODEL}"), "{{agent}}"),
    ], unit="currencyUSD", w=12, decimals=4, exemplar=True,
       description="Exemplar dots link a costly call to its trace.")
    b.panel("Spend in range by agent (USD)", [(
        f"sum by (agent) (increase(tokenwarden_cost_usd_total{{{AGENT}, {MODEL}}}[$__range]))",
        "{{agent}}")], unit="currencyUSD", kind="stat", w=12, decimals=4)
    b.panel("Tokens per second by agent", [(
        f"sum by (agent) (rate(tokenwarden_tokens_total{{{AGENT}, {MODEL}, type=~\"input|output\"}}[{RATE}]))",
        "{{agent}}")], w=12, stack=True)
    b.row("Budgets")
    b.panel("Budget decisions", [(
        f"sum by (scope, decision) (rate(tokenwarden_budget_decisions_total[{RATE}]))",
        "{{scope}} {{decision}}")], unit="reqps", w=12, stack=True)
    b.panel("Breaches by scope and agent", [(
        f"sum by (scope, agent) (increase(tokenwarden_budget_exceeded_total{{{AGENT}}}[{RATE}]))",
        "{{scope}} {{agent}}")], w=12, stack=True,
        description="What the TokenwardenBudgetBreach alert fires on.")
    b.panel("Warnings", [(
        f'sum by (scope) (rate(tokenwarden_budget_decisions_total{{decision="warned"}}[{RATE}]))',
        "{{scope}}")], unit="reqps", w=8)
    b.panel("Budget used (agent and global scopes)", [(
        f"max by (scope, agent) (tokenwarden_budget_used_ratio{{{AGENT}}})",
        "{{scope}} {{agent}}")], unit="percentunit", w=8)
    b.panel("Sessions active", [("sum(tokenwarden_sessions_active)", "sessions")],
            kind="stat", w=8)
    return b


def agents():
    b = Board("tokenwarden-agents", "tokenwarden / Agents & tools",
              "Agent behaviour seen at the proxy: steps, tasks, tool calls and results, policy "
              "violations, loops, context use and client disconnects.",
              ["tokenwarden", "llm", "agents"])
    b.row("Sessions")
    b.panel("Steps per session p50 / p95", [
        (q(0.5, "tokenwarden_session_steps", "", ""), "p50"),
        (q(0.95, "tokenwarden_session_steps", "", ""), "p95"),
    ], w=8, description="LLM calls per session, recorded when a session ends (idle timeout).")
    b.panel("Session duration p50 / p95", [
        (q(0.5, "tokenwarden_session_duration_seconds", "", ""), "p50"),
        (q(0.95, "tokenwarden_session_duration_seconds", "", ""), "p95"),
    ], unit="s", w=8)
    b.panel("Sessions active", [("sum(tokenwarden_sessions_active)", "sessions")], w=8)
    b.row("Tasks")
    b.panel("Cost per task p50 / p95 (USD)", [
        (q(0.5, "tokenwarden_task_cost_usd", "", AGENT), "p50"),
        (q(0.95, "tokenwarden_task_cost_usd", "", AGENT), "p95"),
    ], unit="currencyUSD", w=8, decimals=4,
        description="Spend per task (one x-task-id, baggage task.id or trace id) as each sidecar "
                    "saw it, recorded when the task ends there (idle timeout), by the agent of "
                    "its first call there: a task whose supervisor and workers run in other pods "
                    "is one observation per sidecar. The shared spend of a task is on the admin "
                    "API (GET /v1/tasks/{id}, from the Redis store).")
    b.panel("Steps per task p50 / p95", [
        (q(0.5, "tokenwarden_task_steps", "", AGENT), "p50"),
        (q(0.95, "tokenwarden_task_steps", "", AGENT), "p95"),
    ], w=8, description="Admitted LLM calls per task through one sidecar (every agent of the "
                        "task that calls through it counted; other pods' sidecars record their own).")
    b.panel("Task duration p50 / p95", [
        (q(0.5, "tokenwarden_task_duration_seconds", "", AGENT), "p50"),
        (q(0.95, "tokenwarden_task_duration_seconds", "", AGENT), "p95"),
    ], unit="s", w=8, description="First call's start to last call's end.")
    b.panel("Tool failures and escalations per task (mean)", [
        (f"sum(rate(tokenwarden_task_tool_failures_sum{{{AGENT}}}[{RATE}])) / "
         f"sum(rate(tokenwarden_task_tool_failures_count{{{AGENT}}}[{RATE}]))", "tool failures"),
        (f"sum(rate(tokenwarden_task_escalations_sum{{{AGENT}}}[{RATE}])) / "
         f"sum(rate(tokenwarden_task_escalations_count{{{AGENT}}}[{RATE}]))", "escalations"),
    ], w=12, description="Failed tool results the agents reported, and calls with a tool call "
                         "needing approval, per ended task.")
    b.panel("Tasks ended and active", [
        (f"sum(rate(tokenwarden_task_steps_count{{{AGENT}}}[{RATE}]))", "ended / s"),
        ("sum(tokenwarden_tasks_active)", "active"),
    ], w=12)
    b.row("Tools")
    b.panel("Tool calls by tool", [(
        f"sum by (tool) (rate(tokenwarden_tool_calls_total{{{AGENT}}}[{RATE}]))",
        "{{tool}}")], unit="reqps", w=12, stack=True)
    b.panel("Tool results by outcome", [(
        f"sum by (tool, outcome) (rate(tokenwarden_tool_results_total{{{AGENT}}}[{RATE}]))",
        "{{tool}} {{outcome}}")], unit="reqps", w=12, stack=True,
        description="Tool results the agent sends back; error = the tool failed.")
    b.row("MCP tool servers")
    b.panel("Tool executions by outcome", [(
        f"sum by (tool, outcome) (rate(tokenwarden_tool_executions_total{{{AGENT}}}[{RATE}]))",
        "{{tool}} {{outcome}}")], unit="reqps", w=8, stack=True,
        description="Tool calls agents executed through MCP routes: ok, error (a JSON-RPC error "
                    "or an isError result) or refused by a policy.")
    b.panel("Tool failure ratio by server", [(
        f'sum by (server) (rate(tokenwarden_tool_executions_total{{{AGENT}, outcome="error"}}[{RATE}]))'
        f' / sum by (server) (rate(tokenwarden_tool_executions_total{{{AGENT}, outcome=~"ok|error"}}[{RATE}]))',
        "{{server}}")], unit="percentunit", w=8,
        description="Failed executed calls over executed calls (refusals left out).")
    b.panel("MCP request duration p95 by method", [
        (q(0.95, "mcp_client_operation_duration_seconds", "mcp_method_name, server", ""),
         "{{server}} {{mcp_method_name}}"),
    ], unit="s", w=8,
        description="From the agent's request to the MCP server's answer (mcp.client.operation.duration).")
    b.row("Policies")
    b.panel("Policy violations by policy", [(
        f"sum by (policy) (rate(tokenwarden_policy_violations_total{{{AGENT}}}[{RATE}]))",
        "{{policy}}")], unit="reqps", w=12, stack=True)
    b.panel("Loops detected", [(
        f'sum by (agent) (increase(tokenwarden_policy_violations_total{{{AGENT}, policy="loop"}}[{RATE}]))',
        "{{agent}}")], w=12)
    b.panel("Approval required (escalations)", [(
        f'sum by (agent) (increase(tokenwarden_policy_violations_total{{{AGENT}, policy="approval_required"}}[{RATE}]))',
        "{{agent}}")], w=8)
    b.panel("Context window used p95", [
        (q(0.95, "tokenwarden_context_utilization_ratio", "model", MODEL), "{{model}}"),
    ], unit="percentunit", w=8,
        description="Estimated input tokens over the model's context window.")
    b.panel("Client disconnects", [(
        f"sum by (route) (rate(tokenwarden_client_disconnects_total{{{ROUTE}}}[{RATE}]))",
        "{{route}}")], unit="reqps", w=8)
    return b


def main():
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "dashboards")
    boards = {"overview.json": overview(), "budgets-and-cost.json": budgets(),
              "agents-and-tools.json": agents()}
    check = "--check" in sys.argv
    stale = []
    for name, board in boards.items():
        text = json.dumps(board.json(), indent=2) + "\n"
        path = os.path.join(out, name)
        if check:
            with open(path) as f:
                if f.read() != text:
                    stale.append(name)
        else:
            with open(path, "w") as f:
                f.write(text)
    if stale:
        sys.exit(f"stale dashboards (run scripts/gen_dashboards.py): {', '.join(stale)}")


if __name__ == "__main__":
    main()
