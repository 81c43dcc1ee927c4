"""The report opened in a real headless browser (Debian's chromium): no script errors, every chart drawn.

CI installs chromium (.ci/run); elsewhere the test skips when no browser is found.
"""

from __future__ import annotations

import os
import shutil
import textwrap

import pytest

from dataflywheel.engine.local import LocalExecutor
from dataflywheel.models.client import Model
from dataflywheel.recipe.validate import validate_file
from dataflywheel.report import write_report
from tests.conftest import ROOT
from tests.engine.test_local import read_jsonl

pytestmark = pytest.mark.slow


def chromium() -> str:
    path = os.environ.get("FLYWHEEL_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("CI must install chromium (see .ci/run)")
        pytest.skip("no chromium on this machine (apt-get install chromium)")
    return path


@pytest.fixture(scope="module")
def report(tmp_path_factory, minilm):
    tmp = tmp_path_factory.mktemp("browser")
    (tmp / "recipe.yaml").write_text(
        textwrap.dedent(f"""
        version: 1
        name: browser
        inputs: [{{path: {ROOT / "examples" / "demo_pool.jsonl"}}}]
        on_error: skip
        shard_size: 16
        models:
          embedder: {{backend: sentence-transformers, model: "embedded:all-minilm-l6-v2", device: cpu}}
        steps:
          - text_stats: {{fields: [instruction, response]}}
          - refusal: {{}}
          - filter: {{column: score_response_refusal, max: 0}}
          - exact_dedup: {{field: conversation}}
          - embed: {{model: embedder, field: conversation, name: minilm}}
          - kcenter_select: {{column: embedding_minilm, k: 12}}
        """)
    )
    recipe, ops, problems = validate_file(tmp / "recipe.yaml")
    assert not problems, problems

    def loader(rec):
        return {n: Model(n, spec, backend=minilm) for n, spec in rec.models.items()}

    result = LocalExecutor(recipe, ops, tmp / "run", progress=False, model_loader=loader).run()
    write_report(result.run_dir)
    return result


def test_report_renders_in_chromium_without_errors(report, tmp_path):
    from playwright.sync_api import sync_playwright

    kept = len(read_jsonl(report.output_path))
    assert kept == 12
    errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=chromium(), args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]
        )
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.on("pageerror", lambda e: errors.append(f"pageerror: {e}"))
        page.on("console", lambda m: errors.append(f"console: {m.text}") if m.type == "error" else None)
        page.goto((report.run_dir / "report.html").as_uri())
        assert page.get_attribute("body", "data-ready") == "yes"  # the script ran to its end

        charts = page.evaluate(
            """() => Array.from(document.querySelectorAll('svg.chart')).map(s => {
                const r = s.getBoundingClientRect();
                return {name: s.dataset.chart, declared: +s.dataset.marks,
                        drawn: s.querySelectorAll('.mark').length, w: r.width, h: r.height};
            })"""
        )
        names = {c["name"] for c in charts}
        assert {"funnel", "map", "hist:score_response_chars", "hist:score_response_refusal"} <= names
        for c in charts:
            assert c["declared"] > 0 and c["drawn"] == c["declared"], c
            assert c["w"] > 100 and c["h"] > 50, c

        # The map: every kept row is a blue point; the pool can be hidden.
        assert page.locator("#plot-map circle.sel").count() == kept
        pool = page.locator("#plot-map circle.pool")
        assert pool.count() > 0 and pool.first.is_visible()
        page.click("#map-pool")
        assert not pool.first.is_visible()

        # Tables sort on a click of their header (numbers as numbers).
        funnel = page.locator("#funnel table").first
        funnel.locator("th", has_text="rows out").click()
        col = page.evaluate(
            "() => Array.from(document.querySelector('#funnel table tbody').rows)"
            ".map(r => +r.cells[3].dataset.v)"
        )
        assert col == sorted(col) and len(col) == len(report.steps)

        # The histogram filter hides charts whose name does not match.
        page.fill("#score-filter", "refusal")
        visible = page.locator("figure.hist:visible").count()
        assert 1 <= visible < len([n for n in names if n.startswith("hist:")])
        page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
        browser.close()
    assert errors == []
