"""Render the generated dashboard from a live Prometheus into a PNG: what Grafana will show.

    python dashboards/render.py --prometheus http://127.0.0.1:9090 --namespace local \
        --instance frauddemo --minutes 10 --out dashboards/frauddemo-dashboard.png

Every panel runs its own PromQL (variables filled in as Grafana does), over the same grid; panels
that repeat per store are laid out side by side. tests/test_observability_live.py renders one after
running Scenario 1 against a local stack (artifacts/frauddemo-dashboard.png).
"""

from __future__ import annotations

import argparse
import io
import json
import math
import pathlib
import re
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime

import matplotlib

matplotlib.use("Agg")
import matplotlib.dates as mdates  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402
from PIL import Image  # noqa: E402  (matplotlib's own dependency)

DASHBOARD = pathlib.Path(__file__).resolve().parent / "frauddemo-dashboard.json"
BG, PANEL, TEXT, DIM, GRID = "#111217", "#181b1f", "#ccccdc", "#8e8e9e", "#2c3235"
PALETTE = [
    "#73bf69",
    "#f2cc0c",
    "#8ab8ff",
    "#ff780a",
    "#f2495c",
    "#5794f2",
    "#b877d9",
    "#705da0",
    "#37872d",
    "#fade2a",
    "#ff9830",
    "#c4162a",
]
COLORS = {"green": "#73bf69", "red": "#f2495c", "orange": "#ff9830", "yellow": "#fade2a", "blue": "#5794f2"}


# --- values as Grafana formats them ------------------------------------------------------------------


def fmt(v: float, unit: str, decimals: int | None = None) -> str:
    if v is None or math.isnan(v):
        return "NaN"
    if v == 0:
        return "$0" if unit == "currencyUSD" else "0"
    if unit == "s":
        for scale, suffix in ((1, " s"), (1e-3, " ms"), (1e-6, " µs")):
            if abs(v) >= scale or scale == 1e-6:
                return f"{v / scale:.{2 if decimals is None else decimals}f}".rstrip("0").rstrip(".") + suffix
    d = 2 if decimals is None else decimals
    if unit == "currencyUSD":
        return f"${v:,.{d}f}"
    text = short(v, d)
    return {"ops": f"{text} ops/s", "opm": f"{text} /min"}.get(unit, text)


def plain(text: str) -> str:
    """Text for matplotlib, which reads "$...$" as math."""
    return text.replace("$", r"\$")


def short(v: float, d: int) -> str:
    for scale, suffix in ((1e9, " Bil"), (1e6, " Mil"), (1e3, " K")):
        if abs(v) >= scale:
            return f"{v / scale:.1f}{suffix}"
    return f"{v:.{d}f}".rstrip("0").rstrip(".") if d else f"{v:.0f}"


# --- Prometheus --------------------------------------------------------------------------------------


def api(prom: str, path: str, **params) -> dict:
    url = f"{prom}{path}?{urllib.parse.urlencode(params)}"
    with urllib.request.urlopen(url, timeout=30) as r:
        body = json.loads(r.read())
    if body.get("status") != "success":
        raise RuntimeError(f"{path}: {body}")
    return body["data"]


def interpolate(expr: str, variables: dict[str, str]) -> str:
    """Grafana's variable substitution, for the variables this dashboard uses."""
    return re.sub(r"\$\{?(\w+)\}?", lambda m: variables.get(m.group(1), m.group(0)), expr)


def legend_of(fmt_: str, labels: dict) -> str:
    if fmt_ in ("__auto", ""):
        return ", ".join(f"{k}={v}" for k, v in sorted(labels.items())) or "value"
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), fmt_)


@dataclass
class Series:
    name: str
    times: list
    values: list


def query_range(prom: str, target: dict, variables: dict, start: float, end: float, step: float) -> list[Series]:
    data = api(
        prom,
        "/api/v1/query_range",
        query=interpolate(target["expr"], variables),
        start=f"{start:.3f}",
        end=f"{end:.3f}",
        step=f"{step:g}",
    )
    out = []
    for r in data["result"]:
        pts = [(float(t), float(v)) for t, v in r["values"]]
        out.append(
            Series(
                legend_of(target.get("legendFormat", ""), r["metric"]),
                [mdates.date2num(datetime.fromtimestamp(t, UTC)) for t, _ in pts],
                [v for _, v in pts],
            )
        )
    return out


# --- layout ------------------------------------------------------------------------------------------


def placed_panels(dash: dict, stores: list[str]) -> list[tuple[dict, dict, dict]]:
    """(panel, gridPos, extra variables) for every panel Grafana would draw, repeats expanded."""
    out = []
    for p in dash["panels"]:
        if p.get("repeat") == "store" and stores:
            w = max(p["gridPos"]["w"] // len(stores), 24 // p.get("maxPerRow", 4))
            for i, s in enumerate(stores):
                pos = {
                    **p["gridPos"],
                    "w": w,
                    "x": (i * w) % 24,
                    "y": p["gridPos"]["y"] + (i * w) // 24 * p["gridPos"]["h"],
                }
                out.append(({**p, "title": p["title"].replace("$store", s)}, pos, {"store": s}))
        else:
            out.append((p, p["gridPos"], {}))
    return out


def threshold_color(panel: dict, value: float) -> str:
    steps = panel["fieldConfig"]["defaults"].get("thresholds", {}).get("steps", [])
    color = "green"
    for s in steps:
        if s["value"] is None or (value is not None and not math.isnan(value) and value >= s["value"]):
            color = s["color"]
    return COLORS.get(color, color)


def draw_stat(ax, panel, series: list[Series]) -> None:
    d = panel["fieldConfig"]["defaults"]
    unit, decimals = d.get("unit", "short"), d.get("decimals")
    ax.set_xticks([])
    ax.set_yticks([])
    if not series or not series[0].values:
        ax.text(0.5, 0.4, "No data", color=DIM, ha="center", va="center", fontsize=14, transform=ax.transAxes)
        return
    s = series[0]
    last = next((v for v in reversed(s.values) if not math.isnan(v)), float("nan"))
    color = threshold_color(panel, last)
    ys = [0 if math.isnan(v) else v for v in s.values]
    ax.fill_between(s.times, ys, color=color, alpha=0.18, linewidth=0)
    ax.plot(s.times, ys, color=color, linewidth=1, alpha=0.6)
    top = max(ys) if max(ys) > 0 else 1
    ax.set_ylim(0, top * 2.2)
    ax.text(
        0.5,
        0.45,
        plain(fmt(last, unit, decimals)),
        color=color,
        ha="center",
        va="center",
        fontsize=20,
        fontweight="bold",
        transform=ax.transAxes,
    )


def draw_timeseries(ax, panel, series: list[Series], start: float, end: float) -> None:
    d = panel["fieldConfig"]["defaults"]
    unit, decimals = d.get("unit", "short"), d.get("decimals")
    custom = d.get("custom", {})
    stacked = custom.get("stacking", {}).get("mode") == "normal"
    bars = custom.get("drawStyle") == "bars"
    ax.grid(True, color=GRID, linewidth=0.6)
    ax.tick_params(colors=DIM, labelsize=7)
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: plain(fmt(v, unit, 1 if unit != "s" else None))))
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M:%S"))
    ax.xaxis.set_major_locator(mdates.AutoDateLocator(minticks=3, maxticks=8))
    ax.set_xlim(*(mdates.date2num(datetime.fromtimestamp(t, UTC)) for t in (start, end)))
    if not series:
        ax.set_yticks([])
        ax.set_xticks([])
        ax.text(0.5, 0.5, "No data", color=DIM, ha="center", va="center", fontsize=14, transform=ax.transAxes)
        return
    base: dict = {}
    for i, s in enumerate(series):
        color = PALETTE[i % len(PALETTE)]
        ys = [0.0 if math.isnan(v) else v for v in s.values]
        finite = [v for v in s.values if not math.isnan(v)]
        label = plain(
            f"{s.name}   last {fmt(finite[-1], unit, decimals)}   max {fmt(max(finite), unit, decimals)}"
            if finite
            else f"{s.name}   no values"
        )
        if stacked or bars:
            bottom = [base.get(t, 0.0) for t in s.times]
            if bars:
                width = (s.times[1] - s.times[0]) * 0.8 if len(s.times) > 1 else 0.0001
                ax.bar(s.times, ys, width=width, bottom=bottom, color=color, label=label, alpha=0.85)
            else:
                top = [b + y for b, y in zip(bottom, ys)]
                ax.fill_between(s.times, bottom, top, color=color, alpha=0.35, linewidth=0)
                ax.plot(s.times, top, color=color, linewidth=1, label=label)
            for t, y in zip(s.times, ys):
                base[t] = base.get(t, 0.0) + y
        else:
            ax.plot(
                s.times,
                [v if not math.isnan(v) else float("nan") for v in s.values],
                color=color,
                linewidth=1.2,
                label=label,
            )
            ax.fill_between(s.times, ys, color=color, alpha=0.08, linewidth=0)
    peak = max((v for s in series for v in s.values if not math.isnan(v)), default=0)
    ax.set_ylim(0, None if peak > 0 else 1)  # all zero: an axis from 0 to 1, as Grafana draws it
    leg = ax.legend(
        loc="upper center",
        bbox_to_anchor=(0.5, -0.12),
        ncol=2 if len(series) > 3 else 1,
        fontsize=6.5,
        frameon=False,
        labelcolor=TEXT,
        handlelength=1.2,
    )
    leg.set_in_layout(False)


def render(
    prom: str,
    out: pathlib.Path,
    variables: dict[str, str],
    stores: list[str],
    start: float,
    end: float,
    dash: dict | None = None,
) -> list[str]:
    """Draw every panel; returns the titles of panels that had no data."""
    dash = dash or json.loads(DASHBOARD.read_text())
    step = max(1.0, (end - start) / 250)
    panels = placed_panels(dash, stores)
    height = max(pos["y"] + pos["h"] for _, pos, _ in panels)
    unit_in = 0.42  # inches per grid row (Grafana: 30 px rows)
    fig = plt.figure(figsize=(18, height * unit_in), facecolor=BG)
    empty = []
    for panel, pos, extra in panels:
        x0, w = pos["x"] / 24, pos["w"] / 24
        y_top = 1 - pos["y"] / height
        h = pos["h"] / height
        if panel["type"] == "row":
            fig.text(
                x0 + 0.005,
                y_top - h / 2,
                plain(panel["title"]),
                color=TEXT,
                fontsize=13,
                fontweight="bold",
                va="center",
            )
            continue
        pad_x, pad_top, pad_bottom = 0.004, 0.9 / height, 0.004  # the title takes about one grid row
        box = fig.add_axes((x0 + pad_x, y_top - h + pad_bottom, w - 2 * pad_x, h - pad_bottom))
        box.set_facecolor(PANEL)
        box.set_xticks([])
        box.set_yticks([])
        for spine in box.spines.values():
            spine.set_color(GRID)
        box.text(
            0.01,
            0.98,
            plain(panel["title"]),
            color=TEXT,
            fontsize=9,
            fontweight="bold",
            va="top",
            transform=box.transAxes,
        )
        series = [s for t in panel["targets"] for s in query_range(prom, t, {**variables, **extra}, start, end, step)]
        if not series:
            empty.append(panel["title"])
        if panel["type"] == "stat":
            ax = fig.add_axes((x0 + pad_x, y_top - h + pad_bottom, w - 2 * pad_x, h - pad_top - 0.01), facecolor="none")
            for spine in ax.spines.values():
                spine.set_visible(False)
            draw_stat(ax, panel, series)
        else:
            legend_rows = min(len(series), 4) if len(series) <= 3 else math.ceil(len(series) / 2)
            frac = min(0.45, 0.07 + 0.055 * legend_rows) if series else 0.05
            ax_h = (h - pad_top) * (1 - frac) - 0.01
            ax = fig.add_axes(
                (x0 + pad_x + w * 0.06, y_top - pad_top - ax_h, w * 0.92 - 2 * pad_x, ax_h), facecolor=PANEL
            )
            for spine in ax.spines.values():
                spine.set_visible(False)
            draw_timeseries(ax, panel, series, start, end)
    buf = io.BytesIO()
    fig.savefig(buf, dpi=80, facecolor=BG)
    plt.close(fig)
    # a 256-colour palette: a third of the bytes, no visible difference on these flat colours
    Image.open(buf).convert("RGB").quantize(256).save(out, optimize=True)
    return empty


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prometheus", default="http://127.0.0.1:9090")
    ap.add_argument("--namespace", default="local")
    ap.add_argument("--instance", default="frauddemo")
    ap.add_argument("--stores", default="", help="comma-separated (default: every store Prometheus knows)")
    ap.add_argument("--minutes", type=float, default=10)
    ap.add_argument("--rate-interval", default="15s", help="what Grafana's $__rate_interval would be")
    ap.add_argument("--out", default="frauddemo-dashboard.png")
    a = ap.parse_args()
    end = time.time()
    start = end - a.minutes * 60
    variables = {
        "namespace": a.namespace,
        "instance": a.instance,
        "__rate_interval": a.rate_interval,
        "__range": f"{int(a.minutes * 60)}s",
        "datasource": "prometheus",
    }
    stores = (
        a.stores.split(",")
        if a.stores
        else sorted(
            api(
                a.prometheus,
                "/api/v1/label/source/values",
                **{
                    "match[]": interpolate(
                        'frauddemo_syncer_up{namespace="$namespace",service=~"$instance-(detector|syncers)"}', variables
                    )
                },
            )
        )
    )
    variables["store"] = "|".join(stores)
    empty = render(a.prometheus, pathlib.Path(a.out), variables, stores, start, end)
    print(f"wrote {a.out}" + (f"; no data: {', '.join(empty)}" if empty else ""))


if __name__ == "__main__":
    main()
