"""The home page, the charts and the history in a real browser: Playwright driving Debian's
chromium against a live uvicorn (issue 16). The clock is moved before the browser looks: a
license device in its protective period, an AXIS grace period ending, an apartment license
lapsing -- all derived when the page is read."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from conftest import PASSWORD
from conftest_browser import open_page, sign_in
from test_portal_home import AXIS_PRODUCT, build_scenario

pytest_plugins = ["conftest_browser"]

pytestmark = pytest.mark.browser


def _no_axe_violations(page) -> None:
    from axe_playwright_python import sync_playwright as axe  # a dev dependency: never skipped

    results = axe.Axe().run(page)
    where = [(v["id"], n["target"], n.get("failureSummary", "")) for v in results.response["violations"]
             if v.get("impact") in ("serious", "critical") for n in v["nodes"]]
    assert not where, where


def _chart_has_its_text(page, chart_id: str) -> None:
    figure = page.locator(f'figure[data-chart="{chart_id}"]')
    expect(figure).to_be_visible()
    svg = figure.locator("svg[role=img]")
    expect(svg).to_be_visible()
    assert svg.get_attribute("aria-labelledby") == f"{chart_id}-title {chart_id}-desc"
    expect(figure.locator("svg > title")).not_to_have_text("")
    # The figures, for anyone who would rather read them, behind the disclosure.
    table = figure.locator(f'table[data-chart-table="{chart_id}"]')
    expect(table).to_be_hidden()
    figure.locator("summary").click()
    expect(table).to_be_visible()
    assert table.locator("tbody tr").count() >= 1


def test_the_home_page_says_what_needs_doing_and_links_to_where_it_is_fixed(world, live_server, chromium):
    sc = build_scenario(world)
    page, console = open_page(chromium)
    sign_in(page, live_server.url, "ann@example.com", PASSWORD)
    expect(page.get_by_role("heading", name="Acme", level=1)).to_be_visible()
    attention = page.locator("#attention")
    expect(attention.get_by_role("heading", name="Attention")).to_be_visible()

    protective = attention.locator('li[data-kind="ac.protective_period"]')
    expect(protective).to_contain_text("The license device LD-1 of Plant is disconnected")
    expect(protective.locator('[data-field="time-left"]')).to_have_text("in 22 h")
    grace = attention.locator('li[data-kind="axis.grace_ending"]')
    expect(grace).to_contain_text("the grace period ends on")
    expect(grace.locator('[data-field="time-left"]')).to_have_text("in 29 days")
    lapsing = attention.locator('li[data-kind="my2n.lapsing"]')
    expect(lapsing).to_contain_text("A1")
    expect(lapsing.locator('[data-field="time-left"]')).to_have_text(re.compile(r"^in 2\d days$"))
    # Most urgent first: the apartment whose devices stopped, then the protective period.
    kinds = attention.locator("li.attention-item").evaluate_all("els => els.map(e => e.dataset.kind)")
    assert kinds[:2] == ["my2n.not_paid", "ac.protective_period"], kinds

    # The tiles of the three models.
    expect(page.locator('tr[data-installation="Plant"] [data-count="devices"]')).to_have_text("2 / 5")
    expect(page.locator(f'tr[data-product="{AXIS_PRODUCT}"] [data-state]')).to_have_text("In grace period")
    expect(page.locator('tr[data-site="Riverside"] [data-field="needing-license"]')).to_have_text("2")
    _chart_has_its_text(page, "chart-wallet")
    _no_axe_violations(page)

    # Each item links to the page that fixes it.
    protective.get_by_role("link", name="Open the License settings").click()
    expect(page.get_by_role("heading", name="Plant: License settings", level=1)).to_be_visible()
    expect(page.locator(".license-state")).to_have_text("Protective period")
    _chart_has_its_text(page, "chart-required-owned")
    _chart_has_its_text(page, "chart-connection")
    assert not [m for m in console if "Content Security Policy" in m], console


def test_the_models_charts_and_the_history_in_sentences(world, live_server, chromium):
    sc = build_scenario(world)
    page, console = open_page(chromium)
    sign_in(page, live_server.url, "ann@example.com", PASSWORD)

    page.goto(f"{live_server.url}/axis/products/{AXIS_PRODUCT}?tab=overview")
    _chart_has_its_text(page, "chart-need-core")
    expect(page.locator('table[data-chart-table="chart-need-core"] tbody tr')).to_have_count(6)
    page.get_by_role("link", name="Product wallet").click()
    _chart_has_its_text(page, "chart-lots")

    page.goto(f"{live_server.url}/my2n/sites/{sc.site}")
    _chart_has_its_text(page, "chart-paid-through")
    _chart_has_its_text(page, "chart-billable")

    # History reads like sentences; the raw record is behind a disclosure; filters narrow it.
    page.goto(f"{live_server.url}/history")
    row = page.locator('tr[data-action="ac.license.added"]')
    expect(row.locator("td.sentence")).to_contain_text(
        "ann@example.com generated a license for Plant on the license device LD-1")
    expect(row.locator("td.sentence").get_by_role("link", name="Plant")).to_have_attribute(
        "href", f"/ac/installations/{sc.installation}")
    raw = row.locator("details.raw dl")
    expect(raw).to_be_hidden()
    row.locator("details.raw summary").click()
    expect(raw).to_contain_text("ac.license.added")
    page.get_by_label("Area").select_option("my2n")
    page.get_by_role("button", name="Show").click()
    expect(page).to_have_url(re.compile(r"area=my2n"))
    expect(page.locator('tr[data-action^="ac."]')).to_have_count(0)
    actions = page.locator("tr[data-action]").evaluate_all("els => els.map(e => e.dataset.action)")
    assert actions and all(a.startswith("my2n.") for a in actions), actions
    with page.expect_download() as download:
        page.get_by_role("link", name="Download as CSV").click()
    assert download.value.suggested_filename == "history-acme.csv"
    _no_axe_violations(page)
    assert not [m for m in console if "Content Security Policy" in m], console
