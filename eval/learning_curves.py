"""Learning curves of training runs against steps or training minutes, as one plot and a table.

    python eval/learning_curves.py 'runs={base: logs/ar_tiny, c512: logs_exp/c512/ar_tiny}' \
        'metrics=[val/loss,val/acc]' x=minutes out=docs/img/ar_curves.png

``runs`` maps each label to a run folder (``logs/<name>``, holding ``csv/version_*/metrics.csv``; the
versions of a resumed run are read in order, a later launch's rows winning for the same step). With
``x=minutes`` the x axis is ``time/train_minutes`` (logged by ``speech.lit.callbacks.TrainingClock``,
interpolated at each logged step); runs logged before that callback existed fall back to steps. Prints a
markdown table of every metric at each logged step and writes the plot (PNG) to ``out``
(``configs/entry/learning_curves.yaml``).
"""

from __future__ import annotations

import csv
from collections.abc import Mapping
from pathlib import Path

import hydra
import numpy as np
from omegaconf import DictConfig, OmegaConf

CLOCK = "time/train_minutes"
X_AXES = ("minutes", "step")


def read_metrics(run_dir: str | Path) -> dict[str, dict[int, float]]:
    """``metric -> {step: value}`` of every ``csv/version_*/metrics.csv`` under a run folder.

    Raises:
        FileNotFoundError: no metrics file, naming the folder looked at.
    """
    files = sorted(Path(run_dir).glob("csv/version_*/metrics.csv"), key=lambda p: int(p.parent.name[8:]))
    if not files:
        raise FileNotFoundError(f"no csv/version_*/metrics.csv under {run_dir}: is it a train.py run folder?")
    metrics: dict[str, dict[int, float]] = {}
    for path in files:
        with path.open() as f:
            for row in csv.DictReader(f):
                step = int(float(row["step"]))
                for key, value in row.items():
                    if key not in ("step", "epoch") and value not in ("", None):
                        metrics.setdefault(key, {})[step] = float(value)
    return metrics


def minutes_at(metrics: dict[str, dict[int, float]], steps) -> np.ndarray:
    """Training minutes at ``steps``, interpolated from the clock's logged values."""
    clock = sorted(metrics[CLOCK].items())
    return np.interp(np.asarray(steps, dtype=float), [s for s, _ in clock], [m for _, m in clock])


def curve(metrics: dict[str, dict[int, float]], name: str, x: str) -> tuple[np.ndarray, np.ndarray]:
    """``(x, y)`` of one metric, x in steps or in training minutes (when the run logged its clock)."""
    points = sorted(metrics.get(name, {}).items())
    steps = np.array([s for s, _ in points], dtype=float)
    values = np.array([v for _, v in points], dtype=float)
    if x == "minutes" and CLOCK in metrics:
        steps = minutes_at(metrics, steps)
    return steps, values


def table(runs: dict[str, dict], names: list[str]) -> str:
    """Markdown: one line per (run, logged step) with each metric, and training minutes when logged."""
    lines = ["| run | step | minutes | " + " | ".join(names) + " |", "|---|---:|---:|" + "---:|" * len(names)]
    for label, metrics in runs.items():
        steps = sorted({s for n in names for s in metrics.get(n, {})})
        minutes = minutes_at(metrics, steps) if CLOCK in metrics else [None] * len(steps)
        for step, minute in zip(steps, minutes, strict=True):
            cells = [f"{metrics[n][step]:.4g}" if step in metrics.get(n, {}) else "" for n in names]
            clock = "" if minute is None else f"{minute:.1f}"
            lines.append(f"| {label} | {step} | {clock} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def figure(runs: dict[str, dict], names: list[str], x: str):
    """One panel per metric, one color per run in every panel (a run that did not log a metric keeps its
    color in the others), and a legend of every run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    colors = {label: f"C{i % 10}" for i, label in enumerate(runs)}
    fig, axes = plt.subplots(1, len(names), figsize=(5 * len(names), 3.6), squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        for label, metrics in runs.items():
            xs, ys = curve(metrics, name, x)
            if len(xs):
                ax.plot(xs, ys, marker="o", markersize=3, label=label, color=colors[label])
        ax.set_title(name)
        ax.set_xlabel("training minutes" if x == "minutes" else "step")
        ax.grid(alpha=0.3)
    handles = [
        Line2D([], [], color=color, marker="o", markersize=3, label=label) for label, color in colors.items()
    ]
    axes[0][0].legend(handles=handles)
    fig.tight_layout()
    return fig


def plot(runs: dict[str, dict], names: list[str], x: str, out: str | Path) -> Path:
    """``figure`` written to ``out`` (PNG)."""
    import matplotlib.pyplot as plt

    fig = figure(runs, names, x)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def learning_curves(
    runs: Mapping[str, str], metrics: list[str], x: str = "minutes", out: str | None = None
) -> str:
    """A markdown table of ``metrics`` per run (``label -> run folder``), printed; the plot goes to ``out``.

    Raises:
        SystemExit: ``runs`` is not a ``{label: folder}`` mapping, an unknown ``x``, or no run logged any of
            ``metrics`` (naming what they logged).
        FileNotFoundError: a folder without metrics files.
    """
    if not isinstance(runs, Mapping) or not runs:
        raise SystemExit(
            f"runs: expected {{label: <run folder>, ...}}, e.g. 'runs={{base: logs/ar_tiny}}'; got {runs!r}"
        )
    if x not in X_AXES:
        raise SystemExit(f"x={x!r}: expected one of {' | '.join(X_AXES)}")
    logged = {label: read_metrics(path) for label, path in runs.items()}
    missing = [(label, n) for label, m in logged.items() for n in metrics if n not in m]
    if len(missing) == len(logged) * len(metrics):
        known = sorted({k for m in logged.values() for k in m})
        raise SystemExit(f"none of the runs logged {metrics}; logged: {known}")
    text = table(logged, metrics)
    print(text)
    if out:
        print(f"wrote {plot(logged, metrics, x, out)}")
    return text


@hydra.main(config_path="../configs", config_name="entry/learning_curves", version_base="1.3")
def main(cfg: DictConfig) -> str:
    args = OmegaConf.to_container(cfg, resolve=True)  # runs as a plain dict (or what was given instead)
    return learning_curves(args["runs"], list(args["metrics"]), args["x"], args["out"])


if __name__ == "__main__":
    main()
