"""The Grafana dashboard and the Compose `monitoring` profile (Prometheus, Grafana), read against what runs.

Every panel's PromQL is taken apart into its tokens: each selector's metric name must be a sample that
``/metrics`` really exports (scraped here, with every metric that appears only after an event made to
appear), each label it matches on must be one that metric carries, and each function or aggregation must be
PromQL's. Docker cannot run here, so the Compose file and the provisioning are checked for what would break
them: mounts of files that do not exist, a scrape target or a datasource naming no service, a job name the
queries do not select.
"""

from __future__ import annotations

import json
import re

import pytest
import yaml

from tests.conftest import ROOT

DASHBOARD = json.loads((ROOT / "deploy/grafana/dashboards/gridtoken.json").read_text())
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
PROMETHEUS = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())

FUNCTIONS = {
    "abs", "absent", "absent_over_time", "avg_over_time", "ceil", "changes", "clamp", "clamp_max", "clamp_min",
    "count_over_time", "delta", "deriv", "exp", "floor", "histogram_quantile", "idelta", "increase", "irate",
    "label_replace", "last_over_time", "ln", "max_over_time", "min_over_time", "predict_linear",
    "quantile_over_time", "rate", "resets", "round", "scalar", "sort", "sort_desc", "sqrt", "sum_over_time",
    "time", "timestamp", "vector",
}  # fmt: skip
AGGREGATIONS = {"sum", "min", "max", "avg", "count", "stddev", "stdvar", "topk", "bottomk", "quantile", "group"}
GROUPING = {"by", "without", "on", "ignoring", "group_left", "group_right"}  # followed by a list of label names
KEYWORDS = {"and", "or", "unless", "bool", "offset", "atan2"}
# Series Prometheus writes itself for every target, not /metrics.
SCRAPE_SERIES = {"up": {"job", "instance"}}
TARGET_LABELS = {"job", "instance"}  # attached by the scrape to every series

TOKEN = re.compile(
    r"""(?P<space>\s+)|(?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)|(?P<range>\[[^\]]*\])"""
    r"""|(?P<duration>(?:\d+(?:ms|[smhdwy]))+\b)|(?P<number>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)"""
    r"""|(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)"""
    r"""|(?P<op>=~|!~|!=|==|>=|<=|[-+*/%^<>=(){},])"""
)


def tokens(expr: str) -> list[tuple[str, str]]:
    """(kind, text) of each PromQL token; anything the lexer does not know fails the test."""
    found, position = [], 0
    while position < len(expr):
        match = TOKEN.match(expr, position)
        assert match, f"cannot read {expr[position:]!r} in {expr!r}"
        if match.lastgroup != "space":
            found.append((match.lastgroup, match.group()))
        position = match.end()
    return found


def selectors(expr: str) -> list[tuple[str, set[str]]]:
    """Each vector selector's metric name and the label names it matches on; functions and aggregations
    must be PromQL's, and label lists after by/without/on/ignoring are labels, not metrics."""
    found: list[tuple[str, set[str]]] = []
    items = tokens(expr)
    i = 0
    while i < len(items):
        kind, text = items[i]
        following = items[i + 1][1] if i + 1 < len(items) else None
        if kind != "name":
            i += 1
        elif text in GROUPING:  # its label list, when it has one, names labels, not metrics
            i = next(j for j in range(i, len(items)) if items[j][1] == ")") + 1 if following == "(" else i + 1
        elif text in KEYWORDS:
            i += 1
        elif following == "(" or (text in AGGREGATIONS and following in GROUPING):
            assert text in FUNCTIONS | AGGREGATIONS, f"{text}() is not a PromQL function: {expr}"
            i += 1
        else:
            labels: set[str] = set()
            i += 1
            if following == "{":
                close = next(j for j in range(i, len(items)) if items[j][1] == "}")
                matcher = items[i + 1 : close]
                labels = {matcher[k][1] for k in range(0, len(matcher), 4)}  # name op "value" ,
                i = close + 1
            found.append((text, labels))
    return found


def panel_queries() -> list[tuple[str, str]]:
    return [
        (panel["title"], target["expr"])
        for panel in DASHBOARD["panels"]
        if panel["type"] != "row"
        for target in panel["targets"]
    ]


def test_the_lexer_tells_metrics_from_functions_labels_and_keywords():
    expr = (
        'histogram_quantile(0.95, max by (le, status) (rate(a_bucket{job="x", status=~"f.*"}[5m])))'
        " / on (status) group_left b > bool 1e9 and time() - c offset 5m"
    )
    assert selectors(expr) == [("a_bucket", {"job", "status"}), ("b", set()), ("c", set())]
    with pytest.raises(AssertionError, match="not a PromQL function"):
        selectors("rated(a[5m])")


def test_every_panel_selects_metrics_and_labels_that_metrics_exports(exported_metrics):
    queries = panel_queries()
    assert len(queries) >= 20
    for title, expr in queries:
        found = selectors(expr)
        assert found, f"{title}: no metric in {expr}"
        for name, labels in found:
            carried = SCRAPE_SERIES.get(name) or exported_metrics.get(name)
            assert carried is not None, f"{title}: {name} is not exported by /metrics"
            assert labels <= carried | TARGET_LABELS, f"{title}: {name} has no label {labels - carried - TARGET_LABELS}"


def test_every_panel_reads_the_scrape_job_prometheus_is_configured_with():
    (job,) = [config["job_name"] for config in PROMETHEUS["scrape_configs"]]
    for title, expr in panel_queries():
        assert f'job="{job}"' in expr, title
    panels = [panel for panel in DASHBOARD["panels"] if panel["type"] != "row"]
    assert {panel["datasource"]["uid"] for panel in panels} == {"prometheus"}
    assert all(panel["fieldConfig"]["defaults"]["unit"] for panel in panels)  # every axis has a unit
    assert len({panel["title"] for panel in panels}) == len(panels)


def test_the_monitoring_profile_is_optional_and_wired_to_files_that_exist():
    services = COMPOSE["services"]
    monitoring = {name for name, service in services.items() if "profiles" in service}
    assert monitoring == {"prometheus", "grafana"}
    assert all(services[name]["profiles"] == ["monitoring"] for name in monitoring)
    for name in monitoring:
        for volume in services[name]["volumes"]:
            source, target = volume.split(":")[:2]
            if source.startswith("./"):
                assert (ROOT / source).exists(), f"{name} mounts {source}, which is not in the repository"
            else:
                assert source in COMPOSE["volumes"], f"{name}: volume {source} is not declared"

    prometheus_mounts = dict(volume.split(":")[1::-1] for volume in services["prometheus"]["volumes"])
    assert prometheus_mounts["/etc/prometheus/prometheus.yml"] == "./deploy/prometheus/prometheus.yml"
    for rule_file in PROMETHEUS["rule_files"]:
        assert prometheus_mounts[rule_file] == "./docs/alerts/gridtoken-rules.yml"
    for config in PROMETHEUS["scrape_configs"]:
        for target in config["static_configs"][0]["targets"]:
            host, port = target.split(":")
            assert host in services and config["metrics_path"] == "/metrics"
            assert f"0.0.0.0:{port}" in " ".join(services[host]["command"])  # the service listens there

    grafana_mounts = dict(volume.split(":")[1::-1] for volume in services["grafana"]["volumes"])
    provisioning = ROOT / grafana_mounts["/etc/grafana/provisioning"]
    (datasource,) = yaml.safe_load((provisioning / "datasources/prometheus.yml").read_text())["datasources"]
    assert datasource["uid"] == "prometheus" and datasource["url"] == "http://prometheus:9090"
    (provider,) = yaml.safe_load((provisioning / "dashboards/gridtoken.yml").read_text())["providers"]
    assert grafana_mounts[provider["options"]["path"]] == "./deploy/grafana/dashboards"
    home = services["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == f"{provider['options']['path']}/gridtoken.json"
