"""The API page's policy chain at phone width: add a limit per client with real key presses,
see a mistake marked next to its field, move and remove, nothing scrolling sideways."""
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC

import os

from portal import ARTIFACTS, BrowserTest


class Policies(BrowserTest):
    def open_echo_as_provider(self):
        self.login("provider@demo.test")
        self.open("/catalog")
        self.wait(EC.element_to_be_clickable((By.PARTIAL_LINK_TEXT, "Echo"))).click()
        self.find("h1")
        return self.driver.current_url

    def add_limit(self, requests, per_seconds, header=""):
        summary = self.find("#add-policy > summary")
        if not summary.find_element(By.XPATH, "..").get_attribute("open"):
            summary.click()
        for field, value in (("new-requests", requests), ("new-per_seconds", per_seconds), ("new-key_header", header)):
            element = self.find(f"#{field}")
            element.clear()
            if value:
                element.send_keys(value)
        self.submit(self.form_with("#new-requests"))

    def test_a_limit_per_client_added_moved_and_removed_at_390px(self):
        api = self.open_echo_as_provider()
        self.set_phone(True)
        self.open(api)
        self.assertIn("Before authentication", self.page_text())
        # act: two limits, typed
        self.add_limit("120", "60", "X-Real-IP")
        self.assertIn("Policies saved.", self.page_text())
        self.add_limit("5", "1")
        text = self.page_text()
        self.assertLess(text.index("120 requests per 60 s"), text.index("5 requests per 1 s"))
        self.assertEqual(self.sideways_overflow(), 0, "the policy chain scrolls sideways at 390 px")
        self.screenshot("phone-policies-two")
        # a mistake the browser lets through (numbers are bounded by the inputs themselves): marked
        # next to its field, what was typed kept
        self.add_limit("120", "60", "Not A Header")
        self.assertTrue(self.find("#new-key_header-error").text)
        self.assertEqual(self.find("#new-key_header").get_attribute("aria-invalid"), "true")
        self.assertEqual(self.find("#new-key_header").get_attribute("value"), "Not A Header")
        self.assertEqual(self.sideways_overflow(), 0)
        self.screenshot("phone-policies-error")
        card = self.find("#policies + .card")
        card.screenshot(os.path.join(ARTIFACTS, "phone-policies-error-card.png"))
        # move the second up, then remove both
        self.open(api)
        ups = [b for b in self.driver.find_elements(By.CSS_SELECTOR, "#policies ~ .card button") if b.text == "Move up" and b.is_enabled()]
        self.submit(ups[0])
        text = self.page_text()
        self.assertLess(text.index("5 requests per 1 s"), text.index("120 requests per 60 s"))
        for _ in range(2):
            remove = [b for b in self.driver.find_elements(By.CSS_SELECTOR, "#policies ~ .card button") if b.text == "Remove"][0]
            self.submit(remove)
        self.assertNotIn("requests per 1 s", self.page_text())
        self.assertNotIn("requests per 60 s", self.page_text())
