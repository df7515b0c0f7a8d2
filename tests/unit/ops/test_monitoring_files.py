"""The Grafana dashboard and Prometheus alert rules in deployments/monitoring/ load and query real metrics.

A query naming a metric nobody exports draws an empty panel, or an alert that can never fire, and
nothing says so. Every metric named must be one of ours (``serve_app.ops.metrics``, exported
by Ray with a ``ray_`` prefix) or one of Ray's that Ray's own shipped Grafana panels query.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import ray
import yaml
from support import ROOT

from serve_app.ops.metrics import METRIC_NAMES

MONITORING = ROOT / "deployments" / "monitoring"
DASHBOARD = MONITORING / "raydiffusion_grafana_dashboard.json"
RULES = MONITORING / "raydiffusion_alerts.yml"
PROMETHEUS = MONITORING / "prometheus.yml"
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
METRIC = re.compile(r"\bray_[a-z0-9_]+")


def ray_documented_metrics() -> set[str]:
    """Metric names in the Grafana panels Ray ships for its Default and Serve dashboards."""
    panels = Path(ray.__file__).parent / "dashboard" / "modules" / "metrics" / "dashboards"
    names: set[str] = set()
    for name in (
        "default_dashboard_panels.py",
        "serve_dashboard_panels.py",
        "serve_deployment_dashboard_panels.py",
    ):
        names |= set(METRIC.findall((panels / name).read_text()))
    return names


def known(metric: str, ray_metrics: set[str]) -> bool:
    if metric in ray_metrics:
        return True
    base = metric.removeprefix("ray_")
    return base in METRIC_NAMES or any(
        base.endswith(suffix) and base.removesuffix(suffix) in METRIC_NAMES for suffix in HISTOGRAM_SUFFIXES
    )


def dashboard_queries() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]


def rule_queries() -> list[str]:
    return [rule["expr"] for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]


def test_ray_panels_list_the_metrics_we_rely_on() -> None:
    """The reference set itself is real: if Ray moved its panels, this test says so first."""
    assert {"ray_serve_deployment_replica_healthy", "ray_node_gpus_available"} <= ray_documented_metrics()


@pytest.mark.parametrize("source", ["dashboard", "rules"])
def test_every_query_names_a_metric_that_exists(source: str) -> None:
    queries = dashboard_queries() if source == "dashboard" else rule_queries()
    ray_metrics = ray_documented_metrics()
    assert queries
    for query in queries:
        named = METRIC.findall(query)
        assert named, query
        unknown = [metric for metric in named if not known(metric, ray_metrics)]
        assert not unknown, (unknown, query)


def test_the_dashboard_shows_every_metric_of_ours_and_the_cluster() -> None:
    queries = " ".join(dashboard_queries())
    for name in METRIC_NAMES:
        assert f"ray_{name}" in queries, name
    assert "ray_serve_deployment_replica_healthy" in queries  # replicas over time
    assert "ray_node_gpus_available" in queries  # GPU nodes over time
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and dashboard["title"]
    assert {v["name"] for v in dashboard["templating"]["list"]} >= {"datasource"}
    assert all(panel["datasource"]["uid"] == "${datasource}" for panel in dashboard["panels"])


def test_alert_rules_cover_the_obvious_pages() -> None:
    rules = {
        rule["alert"]: rule
        for group in yaml.safe_load(RULES.read_text())["groups"]
        for rule in group["rules"]
    }
    exprs = " ".join(rule["expr"] for rule in rules.values())
    assert 'ray_raydiffusion_jobs_total{outcome="failed"}' in exprs  # failure ratio
    assert "ray_raydiffusion_queue_wait_seconds_bucket" in exprs
    assert "ray_raydiffusion_discord_edit_failures_total" in exprs
    assert "ray_serve_deployment_replica_healthy" in exprs  # replicas at max
    for rule in rules.values():
        assert rule["labels"]["severity"] in {"page", "warn"}
        assert rule["annotations"]["summary"]
    prometheus = yaml.safe_load(PROMETHEUS.read_text())
    assert [MONITORING / f for f in prometheus["rule_files"]] == [RULES]
    [files] = [c["file_sd_configs"][0]["files"] for c in prometheus["scrape_configs"]]
    assert files == ["/tmp/ray/prom_metrics_service_discovery.json"]


def test_each_metric_of_ours_is_documented_once() -> None:
    assert len(set(METRIC_NAMES)) == len(METRIC_NAMES)
    assert all(name.startswith("raydiffusion_") for name in METRIC_NAMES)


GRID_COLUMNS = 24  # Grafana's dashboard grid is 24 columns wide
PANEL_TYPES = {"timeseries", "stat", "gauge", "bargauge", "heatmap", "table", "text", "row", "histogram"}


def test_the_dashboard_is_a_well_formed_grafana_dashboard() -> None:
    """What Grafana needs to import it and draw every panel where it belongs, checked field by field."""
    dashboard = json.loads(DASHBOARD.read_text())
    assert isinstance(dashboard["schemaVersion"], int) and dashboard["panels"]
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(set(ids)) == len(ids), ids
    cells: set[tuple[int, int]] = set()
    for panel in dashboard["panels"]:
        assert panel["type"] in PANEL_TYPES and panel["title"], panel.get("title")
        grid = panel["gridPos"]
        assert all(isinstance(grid[k], int) and grid[k] >= 0 for k in ("x", "y", "w", "h")), grid
        assert grid["w"] > 0 and grid["h"] > 0 and grid["x"] + grid["w"] <= GRID_COLUMNS, grid
        columns = range(grid["x"], grid["x"] + grid["w"])
        panel_cells = {(x, y) for x in columns for y in range(grid["y"], grid["y"] + grid["h"])}
        assert not cells & panel_cells, f"panel {panel['title']!r} overlaps another"
        cells |= panel_cells
        ref_ids = [target["refId"] for target in panel["targets"]]
        assert ref_ids and len(set(ref_ids)) == len(ref_ids), panel["title"]
        for target in panel["targets"]:
            expr = target["expr"]
            # Unbalanced brackets are a query Prometheus rejects: the panel would only show an error.
            for opening, closing in ("()", "{}", "[]"):
                assert expr.count(opening) == expr.count(closing), expr
