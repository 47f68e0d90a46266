"""Shared helpers for the browser tests: one headless Chromium per test class, demo logins,
explicit waits (no sleeps), a screenshot under .data/browser/ for every failure."""
import base64
import os
import re
import unittest
import urllib.parse

from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

BASE = os.environ.get("BROWSER_BASE", "http://127.0.0.1:18180")
TENANT = BASE + "/t/demo"
ARTIFACTS = os.environ.get("BROWSER_ARTIFACTS", ".data/browser")
PHONE_WIDTH = 390


def credentials():
    path = os.environ.get("BROWSER_CREDENTIALS", "")
    found = {}
    with open(path) as f:
        for line in f:
            parts = line.split()
            if len(parts) == 2 and not line.startswith("#"):
                found[parts[0]] = parts[1]
    return found


def new_driver():
    options = webdriver.ChromeOptions()
    options.binary_location = os.environ.get("CHROMIUM", "/usr/bin/chromium")
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1366,900", "--disable-gpu"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver")), options=options)
    driver.set_page_load_timeout(20)
    return driver


class BrowserTest(unittest.TestCase):
    """A fresh browser per test; a failing test leaves a full-page screenshot behind."""

    def setUp(self):
        self.driver = new_driver()
        self.creds = credentials()

    def tearDown(self):
        outcome = getattr(self, "_outcome", None)
        failed = False
        if outcome is not None and getattr(outcome, "result", None) is not None:
            result = outcome.result
            failed = any(test is self for test, _ in list(result.failures) + list(result.errors))
        if failed:
            self.screenshot("FAILED-" + self.id().split(".")[-1])
        self.driver.quit()

    # -- helpers -----------------------------------------------------------------------------
    def screenshot(self, name):
        os.makedirs(ARTIFACTS, exist_ok=True)
        try:
            shot = self.driver.execute_cdp_cmd("Page.captureScreenshot", {"captureBeyondViewport": True, "format": "png"})
            path = os.path.join(ARTIFACTS, re.sub(r"[^A-Za-z0-9_.-]+", "_", name) + ".png")
            with open(path, "wb") as f:
                f.write(base64.b64decode(shot["data"]))
            return path
        except Exception:  # a screenshot must never hide the real failure
            return None

    def wait(self, condition, timeout=10):
        return WebDriverWait(self.driver, timeout).until(condition)

    def open(self, path):
        self.driver.get(path if path.startswith("http") else TENANT + path)
        self.wait(lambda d: d.execute_script("return document.readyState") == "complete")

    def find(self, css):
        return self.wait(EC.presence_of_element_located((By.CSS_SELECTOR, css)))

    def submit(self, form_or_button):
        """Clicks a submit button and waits for the next page: a marker set on this page's window
        is gone once the browser has loaded another document."""
        self.driver.execute_script("window.__tgOldPage = true")
        button = form_or_button
        if form_or_button.tag_name == "form":
            button = form_or_button.find_element(By.CSS_SELECTOR, "button[type=submit]")
        self.driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", button)
        button.click()
        WebDriverWait(self.driver, 15, ignored_exceptions=(WebDriverException,)).until(
            lambda d: d.execute_script("return window.__tgOldPage === undefined && document.readyState === 'complete'"))

    def login(self, email, password=None):
        self.open("/login")
        self.find("#email").send_keys(email)
        self.find("#password").send_keys(password or self.creds[email])
        self.submit(self.find("form button[type=submit]"))
        self.assertNotIn("/login", self.driver.current_url, self.page_text())

    def page_text(self):
        return self.driver.find_element(By.TAG_NAME, "body").text

    def form_with(self, css):
        """The form holding the first element matching `css`."""
        element = self.find(css)
        return element.find_element(By.XPATH, "./ancestor::form")

    def select_option(self, select_css, text_contains):
        select = self.find(select_css)
        for option in select.find_elements(By.TAG_NAME, "option"):
            if text_contains in option.text:
                option.click()
                return option.get_attribute("value")
        self.fail(f"no option with {text_contains!r} in {select_css}: {[o.text for o in select.find_elements(By.TAG_NAME, 'option')]}")

    def cookie_header(self):
        return "; ".join(f"{c['name']}={c['value']}" for c in self.driver.get_cookies())

    def set_phone(self, on):
        if on:
            self.driver.execute_cdp_cmd(
                "Emulation.setDeviceMetricsOverride", {"width": PHONE_WIDTH, "height": 844, "deviceScaleFactor": 1, "mobile": True})
        else:
            self.driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})

    def sideways_overflow(self):
        """How many CSS pixels the page is wider than the viewport (0 when nothing scrolls sideways)."""
        return self.driver.execute_script("return document.documentElement.scrollWidth - window.innerWidth")


def same_site_links(driver):
    hrefs = driver.execute_script("return Array.from(document.querySelectorAll('a[href]')).map(a => a.href)")
    out = []
    for href in hrefs:
        url = urllib.parse.urldefrag(href)[0]
        if url.startswith(BASE + "/"):
            out.append(url)
    return out
