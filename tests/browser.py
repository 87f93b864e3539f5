"""A real headless Chromium for the web pages' tests: Debian's chromium + chromium-driver, driven by Selenium.

`make test` installs both (requirements/apt.txt); the flags keep Chromium off the network it cannot reach here.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage", "--window-size=1280,900", "--lang=zh-CN")


@contextmanager
def chromium() -> Iterator:  # type: ignore[type-arg]
    """Start Chromium with a fresh profile; quit it afterwards."""
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    assert CHROMIUM.exists() and CHROMEDRIVER.exists(), "Chromium is missing: `make test` installs requirements/apt.txt"
    with tempfile.TemporaryDirectory(prefix="callbot-chromium-") as profile:
        options = Options()
        options.binary_location = str(CHROMIUM)
        for flag in (*FLAGS, f"--user-data-dir={profile}"):
            options.add_argument(flag)
        driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
        try:
            yield driver
        finally:
            driver.quit()


def sign_in(driver, base_url: str, username: str, password: str, then: str = "/admin") -> None:  # type: ignore[no-untyped-def]
    """Sign in through the login page as a person would, and wait for the page ``then`` to show who is signed in."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(base_url + "/login?next=" + then)
    driver.find_element(By.ID, "username").send_keys(username)
    driver.find_element(By.ID, "password").send_keys(password)
    driver.find_element(By.ID, "sign-in").click()
    WebDriverWait(driver, 30).until(lambda d: d.find_elements(By.ID, "who") and username in d.find_element(By.ID, "who").text)
