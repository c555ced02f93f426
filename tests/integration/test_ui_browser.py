"""The dashboard in a real browser: headless Debian chromium (Selenium) against a real `client ui`
process, a real worker, Redis and the SQL store. Screenshots of each page go under the test's tmp_path."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import BIN, POSTGRES_ADMIN_URL, REDIS_URL, Genq, migrated

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(not Path("/usr/bin/chromium").exists(), reason="needs Debian's chromium")]

SCRIPT_PROMPT = "<script>alert(1)</script>"
UI_START_TIMEOUT_S = 60
WAIT_S = 300
TINY_TRAINING = ["--epochs", "1", "--train-limit", "256", "--capacity", "4"]
LONG_SD = ["--width", "256", "--height", "256", "--steps", "150"]


class Ui:
    def __init__(self, genq, env: dict[str, str] | None = None) -> None:
        self.log = genq.home / f"ui-{time.monotonic_ns()}.log"
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen([str(BIN / "client"), "ui", "--port", "0"], env={**genq.env, **(env or {})},
                                            cwd=genq.home, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + UI_START_TIMEOUT_S
        while not (lines := [l for l in self.log.read_text().splitlines() if l.startswith("genq ui: ")]):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"client ui did not start:\n{self.log.read_text()}")
            time.sleep(0.1)
        self.printed = lines[0].split()[2]  # with the home's token once, unless GENQ_UI_TOKEN is set
        self.url = self.printed.split("?")[0].rstrip("/")

    def open_printed_url(self, driver) -> None:
        """As the user does: the token in the printed URL becomes a cookie, and the address loses it."""
        driver.get(self.printed)
        assert "token=" not in driver.current_url and "<h1>Jobs</h1>" in driver.page_source

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def start_ui(genq):
    started = []

    def start(env=None) -> Ui:
        started.append(Ui(genq, env))
        return started[-1]
    yield start
    for ui in started:
        ui.stop()


def new_driver(folder: Path, width: int = 1280, height: int = 1000):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--disable-background-networking", "--disable-component-update", "--disable-sync",
                     "--no-first-run", f"--window-size={width},{height}", "--hide-scrollbars",
                     f"--user-data-dir={folder / 'chromium'}"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    driver.set_page_load_timeout(60)
    driver.shots = folder / "screenshots"
    driver.shots.mkdir(exist_ok=True)
    return driver


@pytest.fixture
def browser(tmp_path):
    driver = new_driver(tmp_path)
    yield driver
    driver.quit()
    shutil.rmtree(tmp_path / "chromium", ignore_errors=True)


def shoot(driver, name: str) -> None:
    assert driver.save_screenshot(str(driver.shots / f"{name}.png"))


def wait_for(driver, condition, timeout: float = WAIT_S, what: str = "condition"):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.25).until(lambda d: condition(d), message=what)


def by_css(driver, selector: str):
    from selenium.webdriver.common.by import By

    return driver.find_elements(By.CSS_SELECTOR, selector)


def text_of(driver, selector: str) -> str | None:
    """Read in one script call: the polled rows are replaced every second (no stale element to hold)."""
    return driver.execute_script("const e = document.querySelector(arguments[0]); return e ? e.textContent : null",
                                 selector)


def fill(driver, field: str, value: str) -> None:
    element = by_css(driver, f"#field-{field}")[0]
    element.clear()
    element.send_keys(value)


def images_loaded(driver, selector: str) -> bool:
    images = by_css(driver, selector)
    return bool(images) and all(driver.execute_script("return arguments[0].complete && arguments[0].naturalWidth", image)
                                for image in images)


def no_alert(driver) -> bool:
    from selenium.common.exceptions import NoAlertPresentException

    try:
        driver.switch_to.alert
    except NoAlertPresentException:
        return True
    return False


def test_an_sd_job_from_the_form_succeeds_live_on_the_jobs_page_and_shows_its_images(bed, tiny_model):
    # Given a worker and the dashboard
    ui, browser = bed.ui, bed.driver
    # When an sd job whose prompt is markup is submitted from the form
    browser.get(f"{ui.url}/submit?kind=sd")
    fill(browser, "prompt", SCRIPT_PROMPT)
    fill(browser, "model", str(tiny_model))
    for field, value in (("width", "64"), ("height", "64"), ("steps", "2"), ("num_images", "2"), ("seed", "7")):
        fill(browser, field, value)
    shoot(browser, "submit-form")
    by_css(browser, "#submit")[0].click()
    wait_for(browser, lambda d: "/jobs/" in d.current_url, 60, "the redirect to the job")
    job_id = browser.current_url.rsplit("/", 1)[1]
    # Then the jobs page shows it reach succeeded without a reload, its prompt as text
    browser.get(f"{ui.url}/")
    browser.execute_script("window.notReloaded = true")
    wait_for(browser, lambda d: text_of(d, f'tr[data-id="{job_id}"] td.status') == "succeeded",
             what="the job to show succeeded")
    assert browser.execute_script("return window.notReloaded") is True
    assert text_of(browser, f'tr[data-id="{job_id}"] td.prompt') == SCRIPT_PROMPT
    assert no_alert(browser)
    shoot(browser, "jobs-from-the-form")
    # And its page shows both images, loaded, with the settings from their PNG text chunks
    browser.get(f"{ui.url}/jobs/{job_id}")
    wait_for(browser, lambda d: images_loaded(d, ".artifact-image img"), 60, "the images to load")
    assert len(by_css(browser, ".artifact-image img")) == 3  # image-0, image-1 and the grid
    settings = [element.text for element in by_css(browser, "pre.settings")]
    assert any(SCRIPT_PROMPT in text and "Seed: 7" in text for text in settings), settings
    assert no_alert(browser)
    shoot(browser, "job-sd-from-the-form")


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_with_a_token_a_request_without_it_is_refused_and_bad_input_shows_next_to_its_field(genq, start_ui, browser):
    ui = start_ui({"GENQ_UI_TOKEN": "a-long-test-token"})
    assert "token=" not in ui.printed  # the variable's token is not echoed
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{ui.url}/api/jobs", timeout=10)
    assert refused.value.code == 401
    request = urllib.request.Request(f"{ui.url}/api/jobs", headers={"Authorization": "Bearer a-long-test-token"})
    assert urllib.request.urlopen(request, timeout=10).status == 200
    browser.get(f"{ui.url}/")
    assert "a valid token is required" in by_css(browser, "body")[0].text
    shoot(browser, "refused")
    browser.get(f"{ui.url}/submit?kind=sd&token=a-long-test-token")  # sets the cookie, then the page without it
    assert "token=" not in browser.current_url
    fill(browser, "prompt", "a boat")
    fill(browser, "steps", "0")
    by_css(browser, "#submit")[0].click()
    wait_for(browser, lambda d: by_css(d, "#error-steps"), 30, "the error next to steps")
    assert "greater than or equal to 1" in by_css(browser, "#error-steps")[0].text
    shoot(browser, "submit-error")
    assert os.listdir(browser.shots)


# -- one installation per store, shared by the tests below: one worker, one dashboard, one browser, a few jobs --------
BED_TRAINING = ["--epochs", "2", "--train-limit", "256", "--capacity", "4"]
LONG_TRAINING = ["--epochs", "3", "--capacity", "32", "--batch-size", "64"]  # ~900 steps an epoch: many seconds
CANCEL_WITHIN_S = 5.0


@dataclass
class Bed:
    genq: Genq
    ui: Ui
    driver: object
    sweep: dict  # the group of two train-vae jobs (beta 1 and 4)
    jobs: dict[str, str]  # a finished job of each kind: kind -> id


def store_database(store: str, tmp: Path, postgres_admin_url: str) -> tuple[str, object]:
    """A database of the bed's own (not the per-test one other tests empty): a SQLite file, or a fresh PostgreSQL
    database; and how to drop it."""
    from sqlalchemy import create_engine, text

    if store == "sqlite":
        return migrated(f"sqlite:///{tmp / 'genq.sqlite3'}"), lambda: None
    name = f"genq_ui_{uuid.uuid4().hex[:10]}"
    admin = create_engine(postgres_admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))

    def drop():
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
    return migrated(admin.url.set(database=name).render_as_string(hide_password=False)), drop


@pytest.fixture(scope="module", params=[("sqlite", "folder"), ("postgresql", "s3")], ids=["sqlite-folder", "postgresql-s3"])
def bed(request, tmp_path_factory, mnist_root, tiny_model):
    """SQLite with a folder artifact store, PostgreSQL with an S3 one (moto): each runs the same tests."""
    store, artifacts = request.param
    tmp = tmp_path_factory.mktemp(f"ui-{store}")
    home = tmp / "home"
    home.mkdir()
    database_url, drop = store_database(store, tmp, POSTGRES_ADMIN_URL)
    artifact_env = {}
    if artifacts == "s3":
        server = request.getfixturevalue("s3_server")
        artifact_env = {"GENQ_ARTIFACT_ROOT": f"s3://{server.new_bucket()}/artifacts", **server.env}
    env = {**os.environ, **artifact_env, "GENQ_HOME": str(home), "GENQ_DATABASE_URL": database_url,
           "GENQ_BROKER_URL": REDIS_URL, "GENQ_QUEUE": f"genq-test-{uuid.uuid4().hex[:12]}",
           "GENQ_DATA_ROOT": str(mnist_root), "GENQ_HEARTBEAT_INTERVAL": "0.5", "GENQ_DEVICE": "cpu",
           "HF_HUB_OFFLINE": "1", "GENQ_TORCH_THREADS": "1"}
    genq = Genq(env=env, home=home)
    ui = driver = None
    try:
        genq.start_worker()
        ui = Ui(genq)
        driver = new_driver(tmp, 1280, 800)
        print(f"\nscreenshots of the {store} pages: {driver.shots}")
        ui.open_printed_url(driver)
        sweep = genq.client_json("submit", "train-vae", *BED_TRAINING, "--sweep", "beta=1,4", "--group-name", "ui-betas")
        trained = sweep["jobs"][0]["id"]
        jobs = {"train-vae": trained}
        for kind, extra in (("interpolate", ["--from-digit", "3", "--to-digit", "8"]), ("sample-vae", ["--count", "16"])):
            jobs[kind] = genq.client("submit", kind, "--model", trained, *extra).stdout.strip()
        jobs["sd"] = genq.client("submit", "sd", "--prompt", "a lighthouse at dusk", "--model", str(tiny_model),
                                 "--width", "64", "--height", "64", "--steps", "2", "--num-images", "2",
                                 "--seed", "7").stdout.strip()
        for job_id in [*jobs.values(), sweep["jobs"][1]["id"]]:
            genq.wait_until(lambda: genq.store().get(job_id).status in ("succeeded", "failed", "cancelled"), WAIT_S,
                            what=f"job {job_id} to end")
            assert genq.store().get(job_id).status == "succeeded", genq.client("show", job_id).stdout
        yield Bed(genq, ui, driver, sweep, jobs)
    finally:
        if driver is not None:
            driver.quit()
        if ui is not None:
            ui.stop()
        genq.stop_workers()
        drop()


def file_width(ui: Ui, job_id: str, name: str) -> int:
    """The width of the artifact's file as the dashboard serves it (its PNG header, read here, not by the browser)."""
    import io

    from PIL import Image

    token = ui.printed.split("token=")[1]
    request = urllib.request.Request(f"{ui.url}/jobs/{job_id}/artifacts/{name}", headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=30) as answer, Image.open(io.BytesIO(answer.read())) as image:
        return image.width


def test_each_kinds_main_result_opens_its_page_at_the_files_natural_size(bed):
    driver = bed.driver
    for kind, job_id in bed.jobs.items():
        driver.get(f"{bed.ui.url}/jobs/{job_id}")
        wait_for(driver, lambda d: images_loaded(d, ".main-result img"), 60, f"the {kind} results to load")
        shown = driver.execute_script(
            "return [...document.querySelectorAll('.main-result')].map(f => [f.dataset.name, "
            "f.querySelector('img').naturalWidth, f.querySelector('img').getBoundingClientRect().width])")
        names = [name for name, _, _ in shown]
        expected = {"train-vae": ["reconstructions.png"], "interpolate": ["interpolation.png"],
                    "sample-vae": ["samples.png", "manifold.png"], "sd": ["image-0.png", "image-1.png"]}[kind]
        assert names == expected, (kind, names)
        for name, natural, width in shown:
            assert natural == file_width(bed.ui, job_id, name), (kind, name)
            assert width == natural, (kind, name, width)  # not capped, not scaled up: each fits a 1,280 px window
        shoot(driver, f"job-{kind}")
    # An sd job's settings are shown once, with a seed per image and a way to submit it again
    assert len(by_css(driver, "pre.settings")) == 1 and "Seed: 7" in by_css(driver, "#sd-settings")[0].text
    again = by_css(driver, ".main-result a.again")[1].get_attribute("href")
    driver.get(again)
    assert by_css(driver, "#field-seed")[0].get_attribute("value") == "8"  # image 1 was drawn from seed 7 + 1
    assert by_css(driver, "#field-prompt")[0].get_attribute("value") == "a lighthouse at dusk"
    assert by_css(driver, "#field-num_images")[0].get_attribute("value") == "1"


def test_the_lightbox_shows_a_picture_full_size_and_steps_through_the_jobs_pictures(bed):
    driver = bed.driver
    driver.get(f"{bed.ui.url}/jobs/{bed.jobs['sample-vae']}")
    wait_for(driver, lambda d: images_loaded(d, ".main-result img"), 60, "the pictures")
    by_css(driver, ".main-result img")[0].click()
    wait_for(driver, lambda d: d.execute_script(
        "const i = document.querySelector('#lightbox img'); return !document.getElementById('lightbox').hidden "
        "&& i.complete && i.naturalWidth > 0"), 10, "the lightbox")
    assert "samples.png" in text_of(driver, "#lightbox figcaption")
    shoot(driver, "lightbox")
    by_css(driver, "#lightbox .next")[0].click()
    assert "manifold.png" in text_of(driver, "#lightbox figcaption")
    by_css(driver, "#lightbox .close")[0].click()
    assert driver.execute_script("return document.getElementById('lightbox').hidden") is True


def chart_series(driver, selector: str) -> list[str]:
    """The labels of the series a uPlot chart drew (its legend, without the x axis)."""
    return driver.execute_script(
        "const box = document.querySelector(arguments[0]); if (!box || !box.chart) return null; "
        "return box.chart.series.slice(1).map(s => s.label)", selector)


def test_a_finished_train_vae_job_charts_train_and_test_loss_together_with_a_log_scale(bed):
    driver = bed.driver
    driver.get(f"{bed.ui.url}/jobs/{bed.jobs['train-vae']}")
    box = '.chart-box[data-chart="loss_per_image"]'
    wait_for(driver, lambda d: chart_series(d, box), 30, "the loss chart")
    assert chart_series(driver, box) == ["train_loss_per_image", "test_loss_per_image"]
    assert driver.execute_script(f"return document.querySelector('{box} canvas').width") > 0
    from selenium.webdriver.common.action_chains import ActionChains

    ActionChains(driver).move_to_element(by_css(driver, f"{box} .u-over")[0]).perform()  # hover: the values show
    wait_for(driver, lambda d: d.execute_script(
        f"return [...document.querySelectorAll('{box} .u-legend .u-value')].slice(1).some(v => /[0-9]/.test(v.textContent))"),
        5, "the hovered values")
    by_css(driver, f"{box} .log-scale")[0].click()
    assert driver.execute_script(f"return document.querySelector('{box}').chart.scales.y.distr") == 3
    assert by_css(driver, "#numbers")  # the result's figures as numbers
    assert "(1 points)" not in driver.page_source
    shoot(driver, "job-train-vae-chart")


def test_the_groups_list_and_a_group_filter_by_name_show_the_sweep(bed):
    driver = bed.driver
    group_id = bed.sweep["id"]
    driver.get(f"{bed.ui.url}/groups")
    row = f'#groups tr[data-id="{group_id}"]'
    assert "ui-betas" in text_of(driver, row) and "2 succeeded" in text_of(driver, row)
    shoot(driver, "groups")
    driver.get(f"{bed.ui.url}/?group=ui-betas")
    listed = [element.get_attribute("data-id") for element in by_css(driver, "#jobs tbody tr[data-id]")]
    assert listed == [job["id"] for job in bed.sweep["jobs"]]
    driver.get(f"{bed.ui.url}/?group={group_id[:6]}")  # an id's prefix, as the CLI takes it
    assert len(by_css(driver, "#jobs tbody tr[data-id]")) == 2
    driver.get(f"{bed.ui.url}/groups/{group_id}")
    assert "None" not in text_of(driver, "#group-table")
    wait_for(driver, lambda d: images_loaded(d, ".group-gallery img"), 60, "the group's pictures")
    shoot(driver, "group")


def test_comparing_two_jobs_overlays_their_curves_beside_their_parameters(bed):
    driver = bed.driver
    first, second = (job["id"] for job in bed.sweep["jobs"])
    driver.get(f"{bed.ui.url}/?group=ui-betas")
    for job_id in (first, second):
        by_css(driver, f'#jobs tr[data-id="{job_id}"] input[name=job]')[0].click()
    by_css(driver, "#compare")[0].click()
    box = '.chart-box[data-metric="train_loss_per_image"]'
    wait_for(driver, lambda d: chart_series(d, box), 30, "the compared curves")
    assert [label[:8] for label in chart_series(driver, box)] == [first[:8], second[:8]]
    assert "beta" in text_of(driver, "#compare-table tr.differs")
    shoot(driver, "compare")


def test_a_running_train_vae_job_moves_within_its_first_epoch_and_its_cancel_button_ends_it_within_seconds(bed):
    driver, genq = bed.driver, bed.genq
    job_id = genq.client("submit", "train-vae", *LONG_TRAINING).stdout.strip()
    driver.get(f"{bed.ui.url}/jobs/{job_id}")
    done = lambda d: d.execute_script("const p = document.querySelector('#job-progress progress'); return p ? p.value : 0")
    first = wait_for(driver, done, 120, "the first progress")
    wait_for(driver, lambda d: done(d) > first, 60, "the progress to move")
    assert (text_of(driver, "#job-progress") or "").strip().startswith("epoch 1/3"), text_of(driver, "#job-progress")
    assert "running for" in text_of(driver, "#job-run")
    shoot(driver, "job-running")
    pressed = time.monotonic()
    by_css(driver, "#cancel")[0].click()
    genq.wait_until(lambda: genq.store().get(job_id).status == "cancelled", 30, 0.1, "the job to be cancelled")
    assert time.monotonic() - pressed < CANCEL_WITHIN_S
    wait_for(driver, lambda d: text_of(d, "#job-status") == "cancelled", 30, "the page to show cancelled")


def test_an_sd_job_shows_a_preview_of_its_latents_before_it_ends(bed, tiny_model):
    driver, genq = bed.driver, bed.genq
    job_id = genq.client("submit", "sd", "--prompt", "a long one", "--model", str(tiny_model), *LONG_SD).stdout.strip()
    driver.get(f"{bed.ui.url}/")
    wait_for(driver, lambda d: images_loaded(d, f'tr[data-id="{job_id}"] img.thumb'), 120, "a preview in the jobs list")
    shoot(driver, "jobs")
    driver.get(f"{bed.ui.url}/jobs/{job_id}")
    wait_for(driver, lambda d: images_loaded(d, "#preview-image"), 30, "the preview on the job's page")
    assert genq.store().get(job_id).status == "running"
    assert 0 < driver.execute_script("return document.getElementById('preview-image').naturalWidth") < 256  # latents
    shoot(driver, "job-sd-preview")
    by_css(driver, "#cancel")[0].click()
    wait_for(driver, lambda d: text_of(d, "#job-status") == "cancelled", 60, "the page to show cancelled")
    assert [a["name"] for a in genq.client_json("artifacts", job_id)] == []  # a preview is not an artifact


def test_the_workers_page_shows_queues_uptime_and_the_queue_charts(bed):
    driver = bed.driver
    driver.get(f"{bed.ui.url}/workers")
    row = text_of(driver, "#workers tbody tr")
    assert bed.genq.workers[0].worker_name in row and bed.genq.env["GENQ_QUEUE"] in row
    assert text_of(driver, "#workers tbody tr td.gpu") == "-"  # a CPU worker has no GPU figures
    wait_for(driver, lambda d: chart_series(d, '#fleet-charts .chart-box[data-series="finished"]'), 30, "the queue charts")
    finished = driver.execute_script(
        "return document.querySelector('#fleet-charts .chart-box[data-series=\"finished\"]').chart.data[1].reduce((a, b) => a + b, 0)")
    assert finished >= len(bed.jobs) + 1  # the bed's jobs ended within the chart's hours
    shoot(driver, "workers")
    driver.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": [{"name": "prefers-color-scheme", "value": "dark"}]})
    background = driver.execute_script("return getComputedStyle(document.body).backgroundColor")
    assert sum(map(int, re.findall(r"\d+", background)[:3])) < 150, background  # dark, as the browser prefers
    shoot(driver, "workers-dark")
    driver.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": []})
    driver.set_window_size(390, 844)  # a phone
    driver.get(f"{bed.ui.url}/jobs/{bed.jobs['interpolate']}")
    assert driver.execute_script("return document.documentElement.scrollWidth <= window.innerWidth + 1")
    shoot(driver, "phone-job")
    driver.set_window_size(1280, 800)
