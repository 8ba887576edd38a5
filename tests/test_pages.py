"""The results pages: written by `report`, and opened in a real browser (headless Chromium
through chromedriver): every model is in the leaderboard, a click on a header sorts it, the
filters and the baseline work, a model page opens, and the console shows no error."""
import math
import os
import shutil
from pathlib import Path

import pytest

from genvar_bench import cli, pages, tables
from genvar_bench.results import read_results

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
DRIVER = shutil.which("chromedriver")


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """A copy of the committed digits table and a sweep table, reported into pages."""
    out = tmp_path_factory.mktemp("site") / "results"
    for folder in ("digits/quick", "sweeps/dae-noise/digits/quick"):
        shutil.copytree(REPO / "results" / folder, out / folder,
                        ignore=shutil.ignore_patterns("index.html", "pages", "figures"))
    assert cli.main(["report", "--out", str(out)]) == 0
    return out


def summary_models(folder: Path) -> list[str]:
    return list(tables.summarize(tables.finished(read_results(folder)), folder)["model"])


def test_report_writes_a_page_per_folder_and_per_model(site):
    for folder in (site / "digits" / "quick", site / "sweeps" / "dae-noise" / "digits" / "quick"):
        text = (folder / "index.html").read_text()
        models = summary_models(folder)
        assert text.count('<tr data-model="') == len(models) > 0
        for model in models:
            page = folder / "pages" / f"{pages.slug(model)}.html"
            assert page.is_file(), model
            assert f"<h1>{pages._e(model)}</h1>" in page.read_text()
    root = (site / "index.html").read_text()
    assert root.count('<tr data-model="') == sum(len(summary_models(f)) for f in tables.results_folders(site))
    assert "http://" not in root and "https://" not in root  # offline: nothing fetched


def test_a_model_page_gives_the_exact_commands_of_its_kept_models(site, monkeypatch):
    monkeypatch.chdir(site.parent)
    assert cli.main(["report", "--out", "results"]) == 0
    folder = site / "digits" / "quick"
    text = (folder / "pages" / f"{pages.slug('iwae-dreg k=5')}.html").read_text()
    assert "python -m genvar_bench score results/digits/quick/models/" in text
    assert "--plugin" in text  # a plug-in's model names the plug-in it needs
    line = next(line for line in text.splitlines() if "genvar_bench sample results" in line)
    artifact = line.split("models/")[1].split(".safetensors")[0]
    assert (folder / "models" / f"{artifact}.safetensors").is_file()


def test_baseline_gives_every_models_paired_difference_to_it(site, capsys):
    assert cli.main(["report", "--out", str(site), "--baseline", "vae k=1"]) == 0
    summary = tables.summarize(read_results(site / "digits" / "quick"), site / "digits" / "quick",
                               baseline="vae k=1")
    assert summary.loc[summary["model"] == "vae k=1", "vs_baseline"].item() == 0.0
    pairs = summary.attrs["pairs"]
    iwae = summary.loc[summary["model"] == "iwae k=50"].iloc[0]
    assert iwae["vs_baseline"] == pytest.approx(pairs["iwae k=50"]["vae k=1"][0])
    assert iwae["vs_baseline"] == pytest.approx(-pairs["vae k=1"]["iwae k=50"][0])
    assert math.isfinite(iwae["vs_baseline_ci95"]) and iwae["vs_baseline_ci95"] > 0
    assert "vs vae k=1" in (site / "digits" / "quick" / "results.md").read_text()
    with pytest.raises(SystemExit, match="--baseline 'nosuch' is no model"):
        cli.main(["report", "--out", str(site), "--baseline", "nosuch"])


@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None or DRIVER is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI needs Chromium and chromedriver for the page tests "
                        "(apt-get install chromium chromium-driver)")
        pytest.skip("needs Chromium and chromedriver (apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1300,1000"):
        options.add_argument(argument)
    options.binary_location = CHROMIUM
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    yield driver
    driver.quit()


def screenshot(driver, tmp_path, name):
    path = tmp_path / name
    driver.save_screenshot(str(path))
    keep = os.environ.get("GENVAR_SCREENSHOTS")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(keep) / name)
    assert path.stat().st_size > 10_000  # a page, not a blank
    return path


def console_errors(driver):
    return [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def visible_rows(driver):
    from selenium.webdriver.common.by import By

    return [row for row in driver.find_elements(By.CSS_SELECTOR, "table.leaderboard tbody tr")
            if row.is_displayed()]


def test_the_leaderboard_in_a_browser(site, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    folder = site / "digits" / "quick"
    browser.get((folder / "index.html").as_uri())
    models = summary_models(folder)
    rows = visible_rows(browser)
    assert sorted(row.get_attribute("data-model") for row in rows) == sorted(models)
    screenshot(browser, tmp_path, "leaderboard.png")

    header = next(h for h in browser.find_elements(By.CSS_SELECTOR, "table.leaderboard th")
                  if h.text.startswith("test NLL"))
    column = [h.text for h in browser.find_elements(By.CSS_SELECTOR, "table.leaderboard th")].index(header.text)

    def values():
        return [float(row.find_elements(By.TAG_NAME, "td")[column].get_attribute("data-value"))
                for row in visible_rows(browser)]

    before = [row.get_attribute("data-model") for row in visible_rows(browser)]
    header.click()
    assert values() == sorted(values())
    assert [row.get_attribute("data-model") for row in visible_rows(browser)] != before
    header.click()
    assert values() == sorted(values(), reverse=True)
    screenshot(browser, tmp_path, "leaderboard-sorted.png")

    family = Select(browser.find_element(By.CSS_SELECTOR, 'select.filter[data-field="family"]'))
    family.select_by_value("IWAE")
    shown = visible_rows(browser)
    assert shown and all(row.get_attribute("data-family") == "IWAE" for row in shown)
    assert len(shown) < len(models)
    family.select_by_value("")
    assert len(visible_rows(browser)) == len(models)

    Select(browser.find_element(By.ID, "baseline")).select_by_value("vae k=1")
    cells = {row.get_attribute("data-model"): row.find_element(By.CSS_SELECTOR, "td.vs-baseline").text
             for row in visible_rows(browser)}
    assert cells["vae k=1"] == "0 (baseline)"
    assert cells["iwae k=50"].startswith(("+", "-")) and "±" in cells["iwae k=50"]
    screenshot(browser, tmp_path, "leaderboard-baseline.png")
    assert console_errors(browser) == []

    link = browser.find_element(By.LINK_TEXT, "iwae k=50")
    link.click()
    assert browser.find_element(By.TAG_NAME, "h1").text == "iwae k=50"
    assert browser.find_elements(By.CSS_SELECTOR, "svg polyline")  # the curves are drawn
    images = browser.find_elements(By.CSS_SELECTOR, "img.figure")
    assert images and all(browser.execute_script("return arguments[0].naturalWidth", image) > 0
                          for image in images)
    screenshot(browser, tmp_path, "model-page.png")
    assert console_errors(browser) == []


def test_the_top_page_lists_every_folder_and_filters_by_dataset(site, browser, tmp_path):
    from selenium.webdriver.common.by import By

    browser.get((site / "index.html").as_uri())
    rows = visible_rows(browser)
    expected = sum(len(summary_models(folder)) for folder in tables.results_folders(site))
    assert len(rows) == expected
    links = [a.get_attribute("href") for a in browser.find_elements(By.CSS_SELECTOR, "ul a")]
    assert len(links) == len(tables.results_folders(site))
    browser.find_element(By.LINK_TEXT, "sweeps/dae-noise/digits/quick").click()
    assert "digits, profile quick" in browser.find_element(By.TAG_NAME, "h1").text
    assert len(visible_rows(browser)) == 7
    screenshot(browser, tmp_path, "top.png")
    assert console_errors(browser) == []
