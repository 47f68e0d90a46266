"""The main journeys through the portal, as a person clicks them."""
import secrets
import urllib.request

from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions as EC

from portal import TENANT, BrowserTest


class Flows(BrowserTest):
    def test_signup_then_sign_in_again(self):
        email = f"browser-{secrets.token_hex(4)}@example.com"
        password = "correct horse battery " + secrets.token_hex(4)
        self.open("/signup")
        self.find("#display_name").send_keys("Browser Person")
        self.find("#email").send_keys(email)
        self.find("#password").send_keys(password)
        self.find("#password_confirmation").send_keys(password)
        self.submit(self.find("form button[type=submit]"))
        self.assertIn("Welcome", self.page_text())
        self.assertIn("Browser Person", self.page_text())
        self.submit(self.find("header form button[type=submit]"))  # sign out
        self.login(email, password)
        self.assertIn("Browser Person", self.page_text())

    def create_app(self):
        self.open("/apps")
        self.find("#name").send_keys("Browser app " + secrets.token_hex(3))
        self.submit(self.form_with("#name"))
        self.assertRegex(self.driver.current_url, r"/apps/[0-9A-Fa-f-]{36}$")
        return self.driver.current_url

    def test_app_secret_is_shown_once(self):
        self.login("developer@demo.test")
        self.create_app()
        secret = self.find("#new-secret").text
        self.assertGreater(len(secret), 30)
        self.assertNotIn(secret, self.driver.current_url)
        self.driver.refresh()
        self.wait(lambda d: d.execute_script("return document.readyState") == "complete")
        self.assertEqual(self.driver.find_elements(By.CSS_SELECTOR, "#new-secret"), [])
        self.assertNotIn(secret, self.driver.page_source)
        # a new API key: shown once, and a reload does not create a second key
        self.find("#key_name").clear()
        self.find("#key_name").send_keys("ci")
        self.submit(self.form_with("#key_name"))
        self.assertTrue(self.find("#new-secret").text)
        keys_before = self.page_text().count("\nci ")
        self.driver.refresh()
        self.wait(lambda d: d.execute_script("return document.readyState") == "complete")
        self.assertEqual(self.driver.find_elements(By.CSS_SELECTOR, "#new-secret"), [])
        self.assertEqual(self.page_text().count("\nci "), keys_before)

    def test_subscribe_free_then_pro_waits_for_approval(self):
        self.login("developer@demo.test")
        self.create_app()
        self.select_option("#plan_id", "Free")
        self.submit(self.form_with("#plan_id"))
        self.assertRegex(self.driver.current_url, r"/subscriptions/[0-9A-Fa-f-]{36}")
        subscription = self.driver.current_url.split("?")[0]
        self.assertIn("active", self.page_text())
        # change to Pro (manual approval): the subscription waits, still on Free
        self.select_option("#plan_id", "Pro")
        self.submit(self.form_with("#plan_id"))
        text = self.page_text()
        self.assertIn("Plan: Free", text)
        self.assertIn("waits for the provider", text)
        # the provider approves with a reason
        self.driver.delete_all_cookies()
        self.login("provider@demo.test")
        self.open(subscription)
        approve = self.find("form input[name=action][value=approve]").find_element(By.XPATH, "./ancestor::form")
        approve.find_element(By.CSS_SELECTOR, "input[name=reason]").send_keys("Welcome to Pro")
        self.submit(approve)
        text = self.page_text()
        self.assertIn("Plan: Pro", text)
        self.assertIn("State: active", text)
        self.assertIn("Welcome to Pro", text)

    def open_echo_as_provider(self):
        self.login("provider@demo.test")
        self.open("/catalog")
        link = self.wait(EC.element_to_be_clickable((By.PARTIAL_LINK_TEXT, "Echo")))
        link.click()
        self.find("h1")
        return self.driver.current_url

    def test_gateway_policy_with_two_origins_on_two_lines(self):
        self.open_echo_as_provider()
        origins = self.find("#cors_origins")
        origins.clear()
        # real key presses: the browser sends the text area with CRLF line ends
        origins.send_keys("https://one.example", Keys.ENTER, "https://two.example")
        self.submit(self.form_with("#cors_origins"))
        self.assertIn("Gateway policy saved.", self.page_text())
        saved = self.find("#cors_origins").get_attribute("value").splitlines()
        self.assertEqual(saved, ["https://one.example", "https://two.example"])
        # a bad origin: the message sits next to the field and what was typed stays
        origins = self.find("#cors_origins")
        origins.clear()
        origins.send_keys("https://three.example", Keys.ENTER, "not an origin/")
        self.submit(self.form_with("#cors_origins"))
        self.assertTrue(self.find("#cors_origins-error").text)
        self.assertIn("https://three.example", self.find("#cors_origins").get_attribute("value"))
        self.assertNotIn("cors.allowed_origins", self.page_text())

    def test_plan_revision(self):
        api = self.open_echo_as_provider()
        revise = self.wait(EC.element_to_be_clickable((By.PARTIAL_LINK_TEXT, "revise")))
        before = revise.text
        revise.click()
        rate = self.find("#rate_per_second")
        value = int(rate.get_attribute("value") or "1")
        rate.clear()
        rate.send_keys(str(value + 1))
        burst = self.find("#burst")
        burst.clear()
        burst.send_keys(str(value + 1))  # burst is at least the rate
        self.submit(self.form_with("#rate_per_second"))
        self.assertNotIn("/catalog/plans/", self.driver.current_url, self.page_text()[:1500])
        self.open(api)
        after = self.wait(EC.element_to_be_clickable((By.PARTIAL_LINK_TEXT, "revise"))).text
        self.assertNotEqual(before, after, "the plan's version did not change")
        self.assertIn(f"{value + 1}/s", self.page_text())

    def test_finance_page_and_csv_download(self):
        self.login("finance@demo.test")
        self.open("/finance")
        self.assertIn("Finance", self.find("h1").text)
        link = self.find("a[href*='invoices.csv']").get_attribute("href")
        request = urllib.request.Request(link, headers={"Cookie": self.cookie_header()})
        with urllib.request.urlopen(request, timeout=20) as response:
            self.assertEqual(response.status, 200)
            self.assertIn("text/csv", response.headers.get("Content-Type", ""))
            first = response.read().decode().splitlines()[0]
        self.assertIn("invoice", first.lower())
