"""The dashboard in a real browser: headless Debian chromium (Selenium) against a real `client ui`
process, a real worker, Redis and the SQL store. Screenshots of each page go under the test's tmp_path."""
from __future__ import annotations

import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import BIN

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


@pytest.fixture
def browser(tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--disable-background-networking", "--disable-component-update", "--disable-sync",
                     "--no-first-run", "--window-size=1280,1000", f"--user-data-dir={tmp_path / 'chromium'}"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    driver.set_page_load_timeout(60)
    driver.shots = tmp_path / "screenshots"
    driver.shots.mkdir()
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


def test_an_sd_job_from_the_form_succeeds_live_on_the_jobs_page_and_shows_its_images(genq, start_ui, browser, tiny_model):
    # Given a worker and the dashboard
    genq.start_worker()
    ui = start_ui()
    ui.open_printed_url(browser)
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
    shoot(browser, "jobs")
    # And its page shows both images, loaded, with the settings from their PNG text chunks
    browser.get(f"{ui.url}/jobs/{job_id}")
    wait_for(browser, lambda d: images_loaded(d, ".artifact-image img"), 60, "the images to load")
    assert len(by_css(browser, ".artifact-image img")) == 3  # image-0, image-1 and the grid
    settings = [element.text for element in by_css(browser, "pre.settings")]
    assert any(SCRIPT_PROMPT in text and "Seed: 7" in text for text in settings), settings
    assert no_alert(browser)
    shoot(browser, "job-sd")


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_train_vae_job_shows_its_loss_chart_and_a_running_job_is_cancelled_with_its_button(genq, start_ui, browser,
                                                                                          tiny_model):
    # Given a finished train-vae job
    genq.start_worker({"GENQ_TORCH_THREADS": "1"})
    ui = start_ui()
    ui.open_printed_url(browser)
    trained = genq.client_json("submit", "train-vae", *TINY_TRAINING, "--wait", "--timeout", str(WAIT_S))
    assert trained["status"] == "succeeded"
    # Then its page shows the loss chart
    browser.get(f"{ui.url}/jobs/{trained['id']}")
    wait_for(browser, lambda d: images_loaded(d, 'img.chart[alt="train_loss_per_image"]'), 60, "the loss chart")
    shoot(browser, "job-train-vae")
    # Given a long sd job that is running
    long_job = genq.client("submit", "sd", "--prompt", "a long one", "--model", str(tiny_model), *LONG_SD).stdout.strip()
    genq.wait_until(lambda: genq.store().get(long_job).status == "running", 120, what="the long job to run")
    # When its Cancel button is pressed
    browser.get(f"{ui.url}/jobs/{long_job}")
    shoot(browser, "job-running")
    by_css(browser, "#cancel")[0].click()
    # Then the page follows it to cancelled
    wait_for(browser, lambda d: text_of(d, "#job-status") == "cancelled", 120, "the job to show cancelled")
    assert genq.store().get(long_job).status == "cancelled"
    shoot(browser, "job-cancelled")
    browser.get(f"{ui.url}/workers")
    assert by_css(browser, "#workers tbody tr")
    shoot(browser, "workers")


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
