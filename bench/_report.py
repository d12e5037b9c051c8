"""The text report: environment, table, verdicts, method."""

from __future__ import annotations

from typing import Any

from bench._figures import RELATIVE, Figure

HEADERS = ("scenario", "case", "contender", "n", "median", "unit", "ratio", "target", "verdict")


def _number(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.3f}" if value < 1 else f"{value:.2f}"


def _row(figure: Figure) -> tuple[str, ...]:
    ratio = figure.ratio
    if ratio is None:
        ratio_text = "-"
    elif figure.ratio_of in RELATIVE:
        ratio_text = f"{ratio:.3f}x"
    else:
        ratio_text = f"{ratio:.2f} of budget"
    verdict = {True: "ok", False: "MISSED", None: ""}[figure.met]
    return (
        figure.scenario,
        figure.case,
        figure.contender,
        f"{figure.n:,}",
        _number(figure.median),
        figure.unit,
        ratio_text,
        figure.target_text,
        verdict,
    )


def table(figures: list[Figure]) -> str:
    rows = [HEADERS, *(_row(f) for f in figures)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(HEADERS))]
    right = {3, 4, 6}
    lines = []
    for index, row in enumerate(rows):
        cells = [
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
        if index == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def render(result: dict[str, Any], figures: list[Figure]) -> str:
    env = result["environment"]
    packages = ", ".join(f"{k} {v}" for k, v in env["packages"].items())
    out = [
        "Dual-write saga benchmark",
        f"Python: {env['python']} | {env['platform']} | {env['cpus']} CPUs"
        f" | SQLite {env['sqlite']} | {env.get('library', '')}",
        f"Packages: {packages}",
        f"Load average: start {env['load_average_at_start']}, end {env['load_average_at_end']}",
        "",
        table(figures),
        "",
    ]
    for row in result["comparisons"]:
        faster = "yes" if row["saga_faster"] else "NO"
        out.append(
            f"saga faster than {row['alternative']} on {row['scenario']} per record: {faster} "
            f"({row['saga_ms_per_record']:.3f} vs {row['alternative_ms_per_record']:.3f} ms)"
        )
    for name, reason in result["skipped"].items():
        out.append(f"skipped {name}: {reason}")
    for name, error in result["errors"].items():
        out.append(f"ERROR in {name}: {error}")
    out.append("")
    out.append("Method:")
    out.extend(f"- {line}" for line in result["method"])
    out.append(f"Elapsed: {result['elapsed_s']:.0f} s")
    return "\n".join(out)
