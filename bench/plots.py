"""The figures of `bench/run.py --plot`: cost per parameter against sweep size, throughput against fleet size.

The benchmarks `record` their points as they make their tables (scale.py:
milliseconds per parameter by sweep size, for each fleet; fleet.py:
tasks per second by number of minions, for each engine); `draw` saves
`scale.png` and `fleet.png` beside bench/RESULTS.md, with matplotlib's Agg
backend, as `minion-status --plot` does.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

#: figure -> series -> [(x, y)]
POINTS: dict[str, dict[str, list[tuple[float, float]]]] = defaultdict(lambda: defaultdict(list))
LABELS = {
    "scale": ("parameters in the sweep", "ms per parameter", "execo queue: cost per parameter by sweep size"),
    "fleet": ("minions", "tasks per second", "aggregate throughput by fleet size (10 ms tasks)"),
}


def record(figure: str, series: str, x: float, y: float) -> None:
    POINTS[figure][series].append((x, y))


def draw(directory: Path) -> list[Path]:
    """Save a PNG per figure that has points; the paths written."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    written = []
    for name, series in POINTS.items():
        xlabel, ylabel, title = LABELS[name]
        figure = Figure(figsize=(8, 5), layout="constrained")
        FigureCanvasAgg(figure)
        axes = figure.subplots()
        for label, points in sorted(series.items()):
            xs, ys = zip(*sorted(points), strict=True)
            axes.plot(xs, ys, marker="o", label=label)
        axes.set_xscale("log")
        axes.set_ylim(bottom=0)
        axes.set_xlabel(xlabel)
        axes.set_ylabel(ylabel)
        axes.set_title(title)
        axes.grid(True, alpha=0.3)
        axes.legend()
        path = directory / f"{name}.png"
        figure.savefig(path, format="png", dpi=100)
        written.append(path)
    return written
