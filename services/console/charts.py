"""Charts as inline SVG drawn on the server: no Node toolchain, no CDN, no script; each page shows the numbers too."""

from collections.abc import Callable, Sequence

from markupsafe import Markup, escape

WIDTH, HEIGHT, GAP = 640, 220, 6
AXIS = 28  # room for the labels under the bars


def bars(
    points: Sequence[tuple[str, float | None]], title: str, *, low: float = 0.0, high: float | None = None
) -> Markup:
    """A bar chart of (label, value); a missing value leaves a gap. `low`/`high` fix the scale (NPS: −100…100)."""
    values = [value for _, value in points if value is not None]
    top = high if high is not None else max([*values, 1.0])
    bottom = min(low, *values) if values else low
    span = (top - bottom) or 1.0
    plot = HEIGHT - AXIS
    zero = plot * top / span if bottom < 0 else plot
    width = min(56.0, (WIDTH - GAP * (len(points) + 1)) / max(len(points), 1))
    parts = [
        f'<svg class="chart" direction="ltr" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{escape(title)}" '
        f'xmlns="http://www.w3.org/2000/svg"><title>{escape(title)}</title>',
        f'<line x1="0" y1="{zero:.1f}" x2="{WIDTH}" y2="{zero:.1f}" class="axis"/>',
    ]
    for index, (label, value) in enumerate(points):
        x = GAP + index * (width + GAP)
        if value is not None:
            size = abs(value) / span * plot
            y = zero - size if value >= 0 else zero
            kind = "bar" if value >= 0 else "bar negative"
            parts.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{width:.1f}" height="{max(size, 1):.1f}" class="{kind}">'
                f"<title>{escape(label)}: {value:g}</title></rect>"
            )
        parts.append(
            f'<text x="{x + width / 2:.1f}" y="{HEIGHT - 8}" class="label" text-anchor="middle">{escape(label)}</text>'
        )
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 - every label and value above is escaped


ROW, LABELS = 24, 210  # a row per label in a lying chart, and the room its labels have on the left


def lying_bars(
    points: Sequence[tuple[str, float]], title: str, *, figure: Callable[[float], str] = "{:g}".format
) -> Markup:
    """Bars lying down, one row per (label, value), the label before the bar and the value after it (written by
    `figure`, in the reader's digits): for many labels or long ones (the ten RFM segments), which crowd each
    other under standing bars."""
    top = max([1.0, *(value for _, value in points)])
    room = WIDTH - LABELS - 64  # and the value's figure after the longest bar
    height = ROW * max(len(points), 1) + GAP
    parts = [
        f'<svg class="chart" direction="ltr" viewBox="0 0 {WIDTH} {height}" role="img" aria-label="{escape(title)}" '
        f'xmlns="http://www.w3.org/2000/svg"><title>{escape(title)}</title>',
        f'<line x1="{LABELS}" y1="0" x2="{LABELS}" y2="{height}" class="axis"/>',
    ]
    for index, (label, value) in enumerate(points):
        y = GAP + index * ROW
        size = max(value, 0) / top * room
        middle = y + (ROW - GAP) / 2 + 4
        parts.append(
            f'<text x="{LABELS - 8}" y="{middle:.1f}" class="label" text-anchor="end">{escape(label)}</text>'
            f'<rect x="{LABELS}" y="{y}" width="{max(size, 1):.1f}" height="{ROW - GAP}" class="bar">'
            f"<title>{escape(label)}: {escape(figure(value))}</title></rect>"
            f'<text x="{LABELS + size + 6:.1f}" y="{middle:.1f}" class="label">{escape(figure(value))}</text>'
        )
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 - every label and value above is escaped


def grouped_bars(labels: Sequence[str], series: Sequence[tuple[str, Sequence[int]]], title: str) -> Markup:
    """Bars side by side per label, one per series (up to four, told apart by colour and by a legend), from 0."""
    top = max([1, *(value for _, values in series for value in values)])
    plot = HEIGHT - AXIS - 16  # and a line for the legend
    group = (WIDTH - GAP * (len(labels) + 1)) / max(len(labels), 1)
    width = min(20.0, group / max(len(series), 1))
    parts = [
        f'<svg class="chart" direction="ltr" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{escape(title)}" '
        f'xmlns="http://www.w3.org/2000/svg"><title>{escape(title)}</title>',
        f'<line x1="0" y1="{16 + plot}" x2="{WIDTH}" y2="{16 + plot}" class="axis"/>',
    ]
    for number, (name, _) in enumerate(series):
        key = GAP + number * 150
        parts.append(f'<rect x="{key}" y="2" width="10" height="10" class="bar s{number}"/>')
        parts.append(f'<text x="{key + 14}" y="11" class="label">{escape(name)}</text>')
    for index, label in enumerate(labels):
        x = GAP + index * (group + GAP)
        for number, (name, values) in enumerate(series):
            size = max(values[index], 0) / top * plot
            parts.append(
                f'<rect x="{x + number * width:.1f}" y="{16 + plot - size:.1f}" width="{width:.1f}" '
                f'height="{max(size, 1):.1f}" class="bar s{number}"><title>{escape(label)} · {escape(name)}: '
                f"{values[index]}</title></rect>"
            )
        parts.append(
            f'<text x="{x + width * len(series) / 2:.1f}" y="{HEIGHT - 8}" class="label" text-anchor="middle">'
            f"{escape(label)}</text>"
        )
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 - every label and value above is escaped


def heat(share: float | None) -> str:
    """The class of a retention heat-map cell: six steps from none to all of the cohort."""
    if share is None:
        return "heat-none"
    return f"heat-{min(5, int(share * 5 + 0.999))}"
