"""What a student sees in notebooks 04-06, checked on the executed notebooks: tables and figure labels.

- ``test_every_table_column_has_values``: every plain-text table (``format_table``) and markdown table a cell prints
  has a value in every column of every row (notebook 06's sweep table once printed an empty ``critic_value``).
- ``test_figure_labels_fit_and_do_not_overlap``: every plotly figure is drawn by plotly.js in Debian's Chromium (the
  plotly.js bundled with the plotly package, inlined: no network) at its own size; from the bounding boxes in the
  page, no text label (point labels, annotations, legend entries, titles, axis titles) overlaps another, point
  labels and data-anchored annotations lie inside their plot area (a label cut at the edge, like "N=3" for "N=32",
  fails), and nothing leaves the figure. One screenshot per figure goes to artifacts/figures_course/.

The notebooks run in SMOKE mode here (tests/conftest.py sets QGF_SMOKE). To check full-mode outputs instead, point
QGF_EXECUTED_NOTEBOOKS at a folder of executed notebooks (same file names), e.g. those written by
``benchmarks/bench_notebooks.py --keep DIR``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SHOTS = REPO / "artifacts" / "figures_course"
NOTEBOOKS = ["04_test_time_compute", "05_ogbench_manipulation", "06_test_time_vs_training_time"]
CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]
PLOTLY_MIME = "application/vnd.plotly.v1+json"


def _needs(notebook: str):
    if notebook.startswith("05"):
        pytest.importorskip("ogbench", reason="notebook 05 needs the ogbench extra")


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    """{notebook stem: executed notebook (dict)}, run on demand, once per test module."""
    cache: dict = {}
    given = os.environ.get("QGF_EXECUTED_NOTEBOOKS")

    def get(stem: str) -> dict:
        if stem in cache:
            return cache[stem]
        if given:
            path = Path(given) / f"{stem}.ipynb"
            if not path.is_file():
                pytest.skip(f"QGF_EXECUTED_NOTEBOOKS has no {path.name}")
            cache[stem] = json.loads(path.read_text())
            return cache[stem]
        _needs(stem)
        nbformat = pytest.importorskip("nbformat")
        nbclient = pytest.importorskip("nbclient")
        notebook = nbformat.read(REPO / "notebooks" / f"{stem}.ipynb", as_version=4)
        os.environ.setdefault("QGF_SMOKE", "1")
        workdir = tmp_path_factory.mktemp(stem)
        nbclient.NotebookClient(
            notebook, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(workdir)}}
        ).execute()
        cache[stem] = json.loads(nbformat.writes(notebook))
        return cache[stem]

    return get


# --------------------------------------------------------------------------- tables
def _stdout(cell) -> str:
    parts = []
    for output in cell.get("outputs", []):
        if output.get("output_type") == "stream" and output.get("name") == "stdout":
            parts.append("".join(output["text"]))
        elif "data" in output:
            for mime in ("text/markdown", "text/plain"):
                if mime in output["data"]:
                    parts.append("".join(output["data"][mime]))
                    break
    return "".join(parts)


EMPTY = {"", "nan", "None", "-nan"}


def text_tables(text: str):
    """Plain-text tables of ``format_table``: (header, rows), each a list of cell strings, cut at the dash line's
    column spans."""
    lines = text.splitlines()
    for i in range(1, len(lines)):
        if not re.fullmatch(r"-+( {2}-+)*\s*", lines[i]) or not lines[i].strip():
            continue
        spans = [m.span() for m in re.finditer(r"-+", lines[i])]
        cut = lambda line: [
            line[a : (b if k + 1 < len(spans) else None)].strip() if len(line) > a else ""
            for k, (a, b) in enumerate(spans)
        ]
        rows = []
        for k, line in enumerate(lines[i + 1 :], start=i + 1):
            # format_table pads every row to the full width (an empty last value too): a shorter line, a blank
            # one or the header of a next table (followed by its dash line) ends this table.
            following = lines[k + 1] if k + 1 < len(lines) else ""
            if not line.strip() or len(line) < spans[-1][0] or re.fullmatch(r"-+( {2}-+)*\s*", following):
                break
            rows.append(cut(line))
        yield cut(lines[i - 1]), rows


def markdown_tables(text: str):
    lines = [line.strip() for line in text.splitlines()]
    for i in range(1, len(lines)):
        if re.fullmatch(r"\|( *:?-+:? *\|)+", lines[i]):
            header = [c.strip() for c in lines[i - 1].strip("|").split("|")]
            rows = []
            for line in lines[i + 1 :]:
                if not line.startswith("|"):
                    break
                rows.append([c.strip() for c in line.strip("|").split("|")])
            yield header, rows


def empty_cells(header, rows):
    """(row index, column name) of every empty value."""
    return [
        (r, header[c] if c < len(header) else c)
        for r, row in enumerate(rows)
        for c in range(len(header))
        if c >= len(row) or row[c] in EMPTY
    ]


def test_table_parser_finds_an_empty_column():
    from qgf_lite.toy.experiments import format_table

    text = format_table(
        [{"weight": 0.5, "mean_reward": 0.25}, {"weight": 1.0, "mean_reward": 0.5}],
        ["weight", "mean_reward", "critic_value"],
    )
    [(header, rows)] = list(text_tables(text))
    assert header == ["weight", "mean_reward", "critic_value"] and len(rows) == 2
    assert empty_cells(header, rows) == [(0, "critic_value"), (1, "critic_value")]
    [(header, rows)] = list(markdown_tables("| a | b |\n| --- | --- |\n| 1 |  |\n"))
    assert empty_cells(header, rows) == [(0, "b")]


@pytest.mark.parametrize("stem", NOTEBOOKS)
def test_every_table_column_has_values(executed, stem):
    notebook = executed(stem)
    found = 0
    problems = []
    for index, cell in enumerate(notebook["cells"]):
        text = _stdout(cell)
        for header, rows in [*text_tables(text), *markdown_tables(text)]:
            found += 1
            assert rows, f"{stem} cell {index}: a table with no rows under {header}"
            problems += [f"cell {index}: column {col!r} is empty in row {r}" for r, col in empty_cells(header, rows)]
    assert found, f"{stem}: no table found in its outputs"
    assert not problems, f"{stem}: " + "; ".join(problems)


# --------------------------------------------------------------------------- figures in Chromium
MEASURE = """() => {
  const gd = document.getElementById('fig');
  const box = (el) => { const b = el.getBoundingClientRect(); return {x0: b.left, y0: b.top, x1: b.right, y1: b.bottom}; };
  const areas = [...gd.querySelectorAll('.draglayer .nsewdrag')].map(box);
  const texts = [];
  const add = (selector, kind) => gd.querySelectorAll(selector).forEach((el) => {
    const b = box(el);
    if (b.x1 - b.x0 > 0 && b.y1 - b.y0 > 0 && el.textContent.trim()) texts.push({kind, text: el.textContent.trim(), ...b});
  });
  add('.textpoint text', 'point label');
  add('.annotation-text-g text', 'annotation');
  add('.legendtext', 'legend');
  add('.gtitle', 'title');
  add('.g-xtitle text, .g-ytitle text, .g-x2title text, .g-y2title text', 'axis title');
  const figure = box(gd.querySelector('.main-svg'));
  return {areas, texts, figure};
}"""


def _overlap(a, b, tolerance=1.0):
    return (
        min(a["x1"], b["x1"]) - max(a["x0"], b["x0"]) > tolerance
        and min(a["y1"], b["y1"]) - max(a["y0"], b["y0"]) > tolerance
    )


def _inside(inner, outer, tolerance=1.0):
    return (
        inner["x0"] >= outer["x0"] - tolerance
        and inner["x1"] <= outer["x1"] + tolerance
        and inner["y0"] >= outer["y0"] - tolerance
        and inner["y1"] <= outer["y1"] + tolerance
    )


def label_problems(measured) -> list:
    """Overlapping labels, point labels or data annotations cut by their plot area, text outside the figure."""
    problems = []
    texts, areas = measured["texts"], measured["areas"]
    for item in texts:
        if not _inside(item, measured["figure"]):
            problems.append(f"{item['kind']} {item['text']!r} leaves the figure")
        if item["kind"] in ("point label", "annotation"):
            cx, cy = (item["x0"] + item["x1"]) / 2, (item["y0"] + item["y1"]) / 2
            home = [a for a in areas if a["x0"] <= cx <= a["x1"] and a["y0"] <= cy <= a["y1"]]
            if item["kind"] == "point label" and not home:
                problems.append(f"point label {item['text']!r} lies outside every plot area")
            if home and not _inside(item, home[0]):
                problems.append(f"{item['kind']} {item['text']!r} is cut by the edge of its plot area")
    for i, a in enumerate(texts):
        for b in texts[i + 1 :]:
            if _overlap(a, b):
                problems.append(f"{a['kind']} {a['text']!r} overlaps {b['kind']} {b['text']!r}")
    return problems


@pytest.fixture(scope="module")
def page():
    if CHROMIUM is None:
        pytest.skip("chromium is not installed; run scripts/install_browser.sh")
    sync_api = pytest.importorskip("playwright.sync_api", reason="run scripts/install_browser.sh")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        try:
            tab = browser.new_page(viewport={"width": 1000, "height": 900})
            tab.route(re.compile(r"^(?!file:|data:|about:).*"), lambda route: route.abort())  # nothing leaves
            yield tab
        finally:
            browser.close()


def _plotly_js() -> str:
    import plotly

    return (Path(plotly.__file__).parent / "package_data" / "plotly.min.js").read_text(encoding="utf-8")


def draw(page, figure: dict):
    """Draw one plotly figure JSON as the notebook front end would (same size) and return the measured boxes."""
    layout = figure.get("layout", {})
    html = (
        "<html><head><meta charset='utf-8'><script>"
        + _plotly_js().replace("</script>", "<\\/script>")
        + "</script></head><body style='margin:0'><div id='fig'></div></body></html>"
    )
    if not getattr(draw, "_loaded", False) or page.evaluate("typeof Plotly") == "undefined":
        page.set_content(html)
        draw._loaded = True
    page.evaluate(
        "(fig) => Plotly.newPlot('fig', fig.data, fig.layout, {displayModeBar: false})",
        {"data": figure.get("data", []), "layout": layout},
    )
    page.wait_for_timeout(150)
    return page.evaluate(MEASURE)


def test_measure_flags_a_clipped_and_an_overlapping_label(page):
    """The old 04 figure's faults: a point label at the right edge ("N=32" drawn as "N=3") and two labels that fuse."""
    figure = {
        "data": [
            {
                "type": "scatter",
                "x": [0.0, 1.0],
                "y": [0.0, 1.0],
                "mode": "markers+text",
                "text": ["1", "N=32"],
                "textposition": "middle right",
            },
            {
                "type": "scatter",
                "x": [0.002],
                "y": [0.0],
                "mode": "markers+text",
                "text": ["2"],
                "textposition": "middle right",
            },
        ],
        "layout": {"width": 500, "height": 400, "xaxis": {"range": [0, 1]}, "yaxis": {"range": [-0.1, 1.1]}},
    }
    problems = label_problems(draw(page, figure))
    assert any("'N=32'" in p and ("cut" in p or "outside" in p) for p in problems), problems
    assert any("overlaps" in p and "'1'" in p and "'2'" in p for p in problems), problems


def test_place_labels_keeps_labels_apart_and_inside(page):
    import plotly.graph_objects as go

    from qgf_lite.presentation.plots import place_labels

    x = [0.1, 0.102, 0.104, 0.5, 0.98, 0.99]
    y = [0.5, 0.505, 0.5, 0.6, 0.99, 0.2]
    fig = go.Figure(go.Scatter(x=x, y=y, mode="markers"))
    fig.update_layout(width=500, height=400, margin=dict(l=60, r=20, t=40, b=50), showlegend=False)
    place_labels(fig, [dict(x=a, y=b, text=t) for a, b, t in zip(x, y, ["0.5", "1", "2", "w=3", "N=32", "N=16"])])
    assert label_problems(draw(page, json.loads(fig.to_json()))) == []


@pytest.mark.parametrize("stem", NOTEBOOKS)
def test_figure_labels_fit_and_do_not_overlap(executed, page, stem):
    notebook = executed(stem)
    SHOTS.mkdir(parents=True, exist_ok=True)
    drawn, problems = 0, []
    for index, cell in enumerate(notebook["cells"]):
        for output in cell.get("outputs", []):
            figure = output.get("data", {}).get(PLOTLY_MIME)
            if figure is None:
                continue
            drawn += 1
            measured = draw(page, figure)
            page.locator("#fig .main-svg").first.screenshot(path=str(SHOTS / f"{stem}_cell{index:02d}.png"))
            problems += [f"cell {index}: {p}" for p in label_problems(measured)]
    assert drawn, f"{stem}: no plotly figure in its outputs"
    assert not problems, f"{stem}: " + "; ".join(problems)
