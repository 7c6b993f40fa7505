"""Shared pieces of the dashboards: selectors, template variables, panel kinds and the layout."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.builders import prometheus, stat, statetimeline, table, timeseries
from grafana_foundation_sdk.cog.builder import Builder
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models.dashboard import (
    DashboardCursorSync,
    DashboardLinkType,
    DataSourceRef,
    DataTransformerConfig,
    DynamicConfigValue,
    Threshold,
    ThresholdsMode,
    ValueMap,
    ValueMapping,
    ValueMappingResult,
    VariableModel,
    VariableRefresh,
    VariableSort,
)
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

TAG = "mlops-watchdog"
DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")
RATE_INTERVAL = "$__rate_interval"
REF_IDS = "ABCDEFGH"
# Reference lines (SLOs, limits, totals) are dashed so they never read as a measurement.
DASHED = DynamicConfigValue(id_val="custom.lineStyle", value={"fill": "dash", "dash": [10, 10]})

Query = tuple[str, str]  # (expr, legend)
States = Mapping[int, tuple[str, str]]  # value: (text, colour)
Steps = Sequence[tuple[float | None, str]]  # (from value, colour); None is the base
P = TypeVar("P", timeseries.Panel, stat.Panel, statetimeline.Panel, table.Panel)
Panel = timeseries.Panel | stat.Panel | statetimeline.Panel | table.Panel


def selector(metric: str, *labels: str) -> str:
    """`metric{job=~"$job",node=~"$node",instance=~"$instance",...}`: each label follows its
    variable."""
    matchers = ",".join(f'{label}=~"${label}"' for label in ("job", "node", "instance", *labels))
    return f"{metric}{{{matchers}}}"


def over_interval(function: str, series: str) -> str:
    """`rate(...)`, `increase(...)`: always over $__rate_interval, which tracks the scrape interval."""
    return f"{function}({series}[{RATE_INTERVAL}])"


def quantile(q: float, histogram: str, *labels: str, by: str) -> str:
    """The q-quantile of a histogram per `by`, from series filtered by the variables `labels`."""
    buckets = over_interval("rate", selector(f"{histogram}_bucket", *labels))
    return f"histogram_quantile({q}, sum by ({by}, le) ({buckets}))"


def query_variable(name: str, label: str, query: str) -> dash.QueryVariable:
    # ".*" for All rather than a list of values: series that appear later still match.
    return (
        dash.QueryVariable(name)
        .label(label)
        .datasource(DATASOURCE)
        .query(query)
        .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(VariableSort.ALPHABETICAL_ASC)
        .multi(True)
        .include_all(True)
        .all_value(".*")
    )


def base_variables() -> list[Builder[VariableModel]]:
    return [
        dash.DatasourceVariable("datasource").label("Data source").type("prometheus"),
        query_variable("job", "Job", "label_values(mlops_watchdog_build_info, job)"),
        # The machine a watchdog speaks for (`node:` in its config), then the watchdog itself.
        query_variable(
            "node", "Node", 'label_values(mlops_watchdog_build_info{job=~"$job"}, node)'
        ),
        query_variable(
            "instance",
            "Instance",
            'label_values(mlops_watchdog_build_info{job=~"$job",node=~"$node"}, instance)',
        ),
    ]


def _setup(
    panel: P,
    title: str,
    unit: str,
    queries: Sequence[Query],
    span: int,
    height: int,
    description: str,
) -> P:
    if len(queries) > len(REF_IDS):
        raise ValueError(f"{title}: at most {len(REF_IDS)} queries")
    panel.title(title).unit(unit).datasource(DATASOURCE).span(span).height(height)
    if description:
        panel.description(description)
    for ref_id, (expr, legend) in zip(REF_IDS, queries, strict=False):
        target = prometheus.Dataquery().expr(expr).ref_id(ref_id).datasource(DATASOURCE)
        if legend:
            target.legend_format(legend)
        if isinstance(panel, stat.Panel | table.Panel):
            target.instant()
        if isinstance(panel, table.Panel):
            target.format(PromQueryFormat.TABLE)
        panel.with_target(target)
    return panel


def graph(
    title: str,
    unit: str,
    *queries: Query,
    span: int = 12,
    height: int = 8,
    description: str = "",
    dashed: Sequence[str] = (),
    ratio: bool = False,
    bars: bool = False,
) -> timeseries.Panel:
    """A time series; `dashed` names the refIds that are reference lines."""
    panel = _setup(timeseries.Panel(), title, unit, queries, span, height, description)
    for ref_id in dashed:
        panel.override_by_query(ref_id, [DASHED])
    if ratio:
        panel.min(0).max(1)
    if bars:
        panel.draw_style(common.GraphDrawStyle.BARS).fill_opacity(60)
    return panel


def single(
    title: str,
    unit: str,
    *queries: Query,
    span: int = 6,
    height: int = 8,
    description: str = "",
    steps: Steps = (),
    states: States | None = None,
) -> stat.Panel:
    """A stat: the latest value of each series, coloured by `steps` or named by `states`."""
    panel = _setup(stat.Panel(), title, unit, queries, span, height, description)
    panel.text_mode(common.BigValueTextMode.VALUE_AND_NAME).graph_mode(
        common.BigValueGraphMode.NONE
    ).reduce_options(common_builders.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
    if steps:
        panel.thresholds(_thresholds(steps))
    if states is not None:
        panel.mappings(_mappings(states))
    return panel


def timeline(
    title: str,
    unit: str,
    *queries: Query,
    states: States,
    span: int = 24,
    height: int = 8,
    description: str = "",
) -> statetimeline.Panel:
    """A state timeline of 0/1 (or small integer) series, each state named and coloured."""
    panel = _setup(statetimeline.Panel(), title, unit, queries, span, height, description)
    return panel.mappings(_mappings(states)).show_value(common.VisibilityMode.NEVER)


def listing(
    title: str,
    unit: str,
    query: Query,
    *,
    columns: Mapping[str, str],
    sort_by: str = "",
    span: int = 24,
    height: int = 8,
    description: str = "",
) -> table.Panel:
    """A table of one instant query's series; `columns` maps label (or Value) to header, in order."""
    panel = _setup(table.Panel(), title, unit, [query], span, height, description)
    # Only the named columns, in that order: job, __name__ and Time would be noise.
    keep = {"include": {"names": list(columns)}}
    order = {
        "indexByName": {name: i for i, name in enumerate(columns)},
        "renameByName": dict(columns),
    }
    panel.transformations(
        [
            DataTransformerConfig(id_val="filterFieldsByName", options=keep),
            DataTransformerConfig(id_val="organize", options=order),
        ]
    )
    if sort_by:
        panel.sort_by([common_builders.TableSortByFieldState().display_name(sort_by).desc(True)])
    return panel


def _thresholds(steps: Steps) -> dash.ThresholdsConfig:
    return (
        dash.ThresholdsConfig()
        .mode(ThresholdsMode.ABSOLUTE)
        .steps([Threshold(value=value, color=color) for value, color in steps])
    )


def _mappings(states: States) -> list[ValueMapping]:
    options = {
        str(value): ValueMappingResult(text=text, color=color, index=i)
        for i, (value, (text, color)) in enumerate(sorted(states.items()))
    }
    return [ValueMap(options=options)]


def annotation(name: str, expr: str, color: str) -> dash.AnnotationQuery:
    return (
        dash.AnnotationQuery()
        .name(name)
        .datasource(DATASOURCE)
        .expr(expr)
        .enable(True)
        .icon_color(color)
    )


def dashboard(
    title: str,
    uid: str,
    description: str,
    variables: Sequence[Builder[VariableModel]],
    rows: Sequence[tuple[str, Sequence[Panel]]],
    annotations: Sequence[dash.AnnotationQuery] = (),
) -> dict[str, Any]:
    """The dashboard as plain JSON data; ids follow the order of rows and panels, so they are stable."""
    board = (
        dash.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags([TAG])
        .time("now-6h", "now")
        .refresh("1m")
        .timezone("browser")
        .tooltip(DashboardCursorSync.CROSSHAIR)
        .variables(list(variables))
        .link(
            dash.DashboardLink("mlops-watchdog")
            .type(DashboardLinkType.DASHBOARDS)
            .tags([TAG])
            .as_dropdown(True)
            .include_vars(True)
            .keep_time(True)
        )
    )
    for a in annotations:
        board.annotation(a)
    next_id = 1
    for row_title, panels in rows:
        board.with_row(dash.Row(row_title).id(next_id))
        next_id += 1
        for panel in panels:
            board.with_panel(panel.id(next_id))
            next_id += 1
    data: dict[str, Any] = json.loads(json.dumps(board.build(), cls=JSONEncoder))
    return data
