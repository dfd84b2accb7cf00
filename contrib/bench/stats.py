"""Samples, figures and the report: min / median / max, ratio to a reference, target met."""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field


@dataclass(slots=True)
class Series:
    """Repeated measurements of one quantity, in `unit`."""

    unit: str
    values: list[float] = field(default_factory=list)

    def add(self, value: float) -> None:
        self.values.append(value)

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    def text(self) -> str:
        if not self.values:
            return "-"
        low, mid, high = min(self.values), self.median, max(self.values)
        return f"{_num(low)} / {_num(mid)} / {_num(high)} {self.unit} (n={len(self.values)})"


def _num(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 1:
        return f"{value:.2f}"
    if abs(value) >= 0.01:
        return f"{value:.3f}"
    return f"{value:.2g}"


class Results:
    """Every series measured in a run, by key, with the reasons for what could not be."""

    def __init__(self) -> None:
        self.series: dict[str, Series] = {}
        self.missing: dict[str, str] = {}
        self.notes: list[str] = []

    def get(self, key: str, unit: str) -> Series:
        return self.series.setdefault(key, Series(unit))

    def add(self, key: str, unit: str, value: float) -> None:
        self.get(key, unit).add(value)

    def miss(self, key: str, reason: str) -> None:
        self.missing.setdefault(key, reason)

    def has(self, key: str) -> bool:
        return key in self.series and bool(self.series[key].values)

    def why_missing(self, *keys: str) -> str:
        reasons = [self.missing.get(k, f"{k} not measured in this run") for k in keys]
        return "; ".join(dict.fromkeys(reasons))


# (pazuzu's series, the reference's or None) -> met, or None when it cannot tell.
Check = Callable[[Series, Series | None], bool | None]


@dataclass(frozen=True, slots=True)
class Figure:
    """One row of the report: pazuzu's series, its reference, and the target between them."""

    title: str
    key: str
    reference_key: str | None
    reference_label: str
    target: str
    check: Check | None  # (pazuzu's series, the reference's or None) -> met?


@dataclass(frozen=True, slots=True)
class Row:
    title: str
    pazuzu: str
    reference: str
    ratio: str
    target: str
    met: str


def evaluate(figures: Sequence[Figure], results: Results) -> list[Row]:
    rows = []
    for figure in figures:
        if not results.has(figure.key):
            reason = results.why_missing(figure.key)
            rows.append(
                Row(figure.title, f"not measured: {reason}", "-", "-", figure.target, "n/a")
            )
            continue
        mine = results.series[figure.key]
        reference: Series | None = None
        ref_text = figure.reference_label or "-"
        if figure.reference_key is not None:
            if results.has(figure.reference_key):
                reference = results.series[figure.reference_key]
                ref_text = f"{figure.reference_label}: {reference.text()}"
            else:
                reason = results.why_missing(figure.reference_key)
                ref_text = f"{figure.reference_label}: not measured ({reason})"
        ratio = "-"
        if reference is not None and reference.median > 0:
            ratio = f"{mine.median / reference.median:.2f}x"
        verdict = figure.check(mine, reference) if figure.check is not None else None
        met = "n/a" if verdict is None else "yes" if verdict else "NO"
        rows.append(Row(figure.title, mine.text(), ref_text, ratio, figure.target, met))
    return rows


HEADER = (
    "figure",
    "pazuzu (min / median / max)",
    "reference (min / median / max)",
    "ratio",
    "target",
    "met?",
)


def markdown_table(rows: Sequence[Row]) -> str:
    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    out = [line(HEADER), line(["---"] * len(HEADER))]
    out += [line([r.title, r.pazuzu, r.reference, r.ratio, r.target, r.met]) for r in rows]
    return "\n".join(out)


def terminal_table(rows: Sequence[Row]) -> str:
    """The same rows, one block per figure: wide cells do not fit 80 columns side by side."""
    out = []
    for row in rows:
        out.append(f"{row.title}  [{row.met}]")
        out.append(f"    pazuzu:    {row.pazuzu}")
        out.append(f"    reference: {row.reference}")
        out.append(f"    ratio {row.ratio}; target: {row.target}")
    return "\n".join(out)
