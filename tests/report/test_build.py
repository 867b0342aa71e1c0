"""The posterior report: every section there, self-contained, failures marked, and the page
loads in headless Chromium with every image decoded and no script error."""

import dataclasses
import os
import re
import shutil
import subprocess

import pytest
from matplotlib.image import imread

from mergelaw.bayes.fit import Fit
from mergelaw.bayes.posterior import Posterior
from mergelaw.plan import stopping
from mergelaw.report import build_report, write_report

SECTIONS = ("data", "diagnostics", "curves", "parameters", "size", "spread", "checks",
            "planning", "compare")  # fmt: skip


@pytest.fixture(scope="module")
def report_path(fake_fit_path, tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "report.html"
    write_report(fake_fit_path, out, targets=[2.2], epsilon=0.01)
    return out


def test_every_section_is_there_and_nothing_is_fetched(report_path, fake_fit):
    text = report_path.read_text()
    for anchor in SECTIONS:
        assert f'id="{anchor}"' in text
    # fitted-curve figures: one per (arch, method); then forest, size, spread, p-values, Pareto k
    groups = fake_fit.families.groupby(["arch", "method"]).ngroups
    images = re.findall(r"<img src='([^']*)'", text)
    assert len(images) == groups + 5
    assert all(src.startswith("data:image/png;base64,") for src in images)
    assert not re.search(r"""(src|href)=["'](https?:)?//""", text)  # nothing from a network
    assert "<link" not in text


def test_numbers_shown_are_the_fits(report_path, fake_fit):
    text = report_path.read_text()
    d = fake_fit.diagnostics
    assert f"{d.divergences} of {d.n_draws}" in text
    assert f"{d.max_rhat:.4f}" in text
    # the stopping table's decision for a family is the plan module's answer at the largest size
    post = Posterior.from_fit(fake_fit)
    answer = stopping(post, n_b=max(post.sizes_b), epsilon=0.01)
    rows = answer.table[answer.table["quantity"] == "stop at k (expected gain < threshold)"]
    for estimate in rows["estimate"]:
        assert re.search(rf">\s*{re.escape(f'{estimate:.3g}')}\s*</td>", text)
    assert "experts for a loss of 2.2" in text


def test_failed_diagnostics_are_highlighted(fake_fit):
    failing = dataclasses.replace(
        fake_fit.diagnostics, divergences=7, failures=["7 divergent transitions"]
    )
    broken = Fit(fake_fit.idata, fake_fit.spec, fake_fit.meta, failing)
    text = build_report(broken, targets=[2.2])
    assert 'class="flag failed">FAILED: 7 divergent transitions' in text
    assert re.search(r"<tr class='fail'><td>divergent transitions</td><td>7 of", text)
    assert '<section id="diagnostics" class="failed">' in text
    ok_text = build_report(fake_fit, targets=[2.2])
    assert '<section id="diagnostics" class="">' in ok_text or not fake_fit.diagnostics.ok


def test_cli_writes_the_report_atomically(fake_fit_path, tmp_path):
    from typer.testing import CliRunner

    from mergelaw.cli import app

    out = tmp_path / "r.html"
    result = CliRunner().invoke(app, ["report", str(fake_fit_path), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert out.is_file() and f"report: {out.resolve()}" in result.output
    assert [p.name for p in tmp_path.iterdir()] == ["r.html"]  # no temporary left behind
    missing = CliRunner().invoke(app, ["report", str(tmp_path / "nope.nc"), "--out", str(out)])
    assert missing.exit_code != 0 and "no such fit file" in missing.output


def test_two_reports_of_one_fit_are_byte_identical(report_path, fake_fit_path, tmp_path):
    """No timestamp, no random table ids, no PNG metadata: the same fit gives the same bytes.
    A temporary left by an earlier, killed write of the same target is removed."""
    again = tmp_path / "report.html"
    stale = tmp_path / ".report.html.999999999.deadbeef.tmp"
    stale.write_text("half a report")
    write_report(fake_fit_path, again, targets=[2.2], epsilon=0.01)
    assert again.read_bytes() == report_path.read_bytes()
    assert [p.name for p in tmp_path.iterdir()] == ["report.html"]


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def test_report_loads_in_headless_chromium(report_path, tmp_path):
    browser = _chromium()
    if browser is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed (make test installs Debian's chromium)")
        pytest.skip("chromium is not installed")
    args = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr", "--v=0",
            "--virtual-time-budget=10000"]  # fmt: skip
    url = report_path.resolve().as_uri()
    dom = subprocess.run([*args, "--dump-dom", url], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert 'data-broken-images="0"' in dom.stdout  # the page's own check ran: every image decoded
    console = [line for line in dom.stderr.splitlines() if "CONSOLE" in line]
    assert not [line for line in console if re.search(r"Uncaught|Error", line)], console
    shot = tmp_path / "report.png"
    subprocess.run([*args, "--window-size=1400,2000", f"--screenshot={shot}", url],
                   capture_output=True, timeout=120, check=True)  # fmt: skip
    pixels = imread(shot)  # the page as drawn: not blank, and some of it is figure
    assert pixels.shape[:2] == (2000, 1400)
    assert pixels[..., :3].std() > 0.1
