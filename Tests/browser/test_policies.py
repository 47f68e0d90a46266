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
        # (by the entry's text: the demo's Echo has policies of its own)
        self.submit(self.driver.find_element(By.XPATH, "//li[contains(., '5 requests per 1 s')]//button[text()='Move up']"))
        text = self.page_text()
        self.assertLess(text.index("5 requests per 1 s"), text.index("120 requests per 60 s"))
        for _ in range(2):
            self.submit(self.driver.find_element(By.XPATH, "//li[contains(., 'requests per') and contains(., 'Rate limit per client')]//button[text()='Remove']"))
        self.assertNotIn("requests per 1 s", self.page_text())
        self.assertNotIn("requests per 60 s", self.page_text())

    def test_request_validation_marked_without_a_document_then_added_at_390px(self):
        api = self.open_echo_as_provider()
        self.set_phone(True)
        self.open(api)

        def add_validation(scope_label, refuse_unknown):
            summary = self.find("#add-request-validation > summary")
            if not summary.find_element(By.XPATH, "..").get_attribute("open"):
                summary.click()
            self.select_option("#newvalidation-validate", scope_label)
            box = self.form_with("#newvalidation-validate").find_element(By.NAME, "refuse_unknown_query")
            if box.is_selected() != refuse_unknown:
                box.click()
            self.submit(self.form_with("#newvalidation-validate"))

        # act: no document yet — the choice is marked with why, what was chosen kept
        add_validation("Parameters only", True)
        self.assertTrue(self.find("#newvalidation-validate-error").text.startswith("Upload the API"))
        self.assertEqual(self.find("#newvalidation-validate").get_attribute("aria-invalid"), "true")
        self.assertEqual(self.find("#newvalidation-validate").get_attribute("value"), "parameters")
        self.assertEqual(self.sideways_overflow(), 0, "the validation form scrolls sideways at 390 px")
        self.screenshot("phone-validation-error")
        # a document pasted as a browser sends it (CRLF line ends), then the policy is saved
        self.open(api)
        paste = self.find("#document_text")
        for line in ["openapi: 3.1.0", "info: {title: Echo, version: '1'}", "paths:", "  /hello:", "    get:",
                     "      parameters: [{name: n, in: query, schema: {type: integer}}]", "      responses: {'200': {description: ok}}"]:
            paste.send_keys(line + "\n")
        self.submit(self.form_with("#document_text"))
        self.open(api)
        add_validation("Parameters only", True)
        text = self.page_text()
        self.assertIn("Policies saved.", text)
        self.assertIn("checks path, method and parameters against the API's OpenAPI document; unknown query parameters refused", text)
        self.assertEqual(self.sideways_overflow(), 0)
        self.screenshot("phone-validation-added")
        # removed again (the demo's Echo keeps its calls unchecked for the other tests)
        self.submit(self.driver.find_element(By.XPATH, "//li[contains(., 'Request validation:')]//button[text()='Remove']"))
        self.assertNotIn("unknown query parameters refused", self.page_text())
