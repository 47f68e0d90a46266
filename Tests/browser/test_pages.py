"""Long lists come in pages (next / previous / first page links only where such a page exists),
and a one-time secret of the platform console shows once."""
import os
import secrets
import subprocess

from selenium.webdriver.common.by import By

from portal import BASE, BrowserTest


def sql(statement):
    """Runs `statement` on the server's database with the cross-tenant scope (test data only)."""
    subprocess.run(
        ["psql", os.environ["DATABASE_URL"], "-v", "ON_ERROR_STOP=1", "-qAt",
         "-c", "SELECT set_config('tollgate.scope', 'system', false); " + statement],
        check=True, capture_output=True)


class Pages(BrowserTest):
    def links(self):
        return {a.text: a.get_attribute("href") for a in self.driver.find_elements(By.CSS_SELECTOR, "nav.pages a")}

    def team_rows(self):
        return [a.text for a in self.driver.find_elements(By.CSS_SELECTOR, "table a[href*='/teams/']")]

    def test_teams_page_forward_and_back(self):
        # setup: more than a page (50) of teams, made quickly in SQL
        prefix = "pg" + secrets.token_hex(3)
        sql(f"INSERT INTO teams (tenant_id, slug, name) SELECT (SELECT id FROM tenants WHERE slug = 'demo'), "
            f"'{prefix}-' || lpad(i::text, 3, '0'), 'Paged team ' || i FROM generate_series(1, 70) i")
        # gone afterwards: the phone crawl would otherwise spend its page budget on 70 team pages
        self.addCleanup(sql, f"DELETE FROM teams WHERE slug LIKE '{prefix}-%'")
        self.login("admin@demo.test")
        # act + assert: the first page links onwards only
        self.open("/teams")
        first = self.team_rows()
        self.assertEqual(len(first), 50)
        self.assertEqual(set(self.links()), {"Next page"})
        self.screenshot("pages-teams-first-desktop")
        self.set_phone(True)
        self.open("/teams")
        self.assertEqual(self.sideways_overflow(), 0)
        self.screenshot("pages-teams-first-phone")
        self.set_phone(False)
        self.open("/teams")
        self.submit_link("Next page")
        second = self.team_rows()
        self.assertTrue(second)
        self.assertFalse(set(first) & set(second), "the next page repeats rows of the first")
        self.assertIn("Previous page", self.links())
        self.assertIn("First page", self.links())
        self.assertNotIn(first[-1], self.driver.current_url)  # the cursor is opaque
        self.screenshot("pages-teams-second-desktop")
        # to the last page, then all the way back
        pages = 2
        while "Next page" in self.links() and pages < 10:
            self.submit_link("Next page")
            pages += 1
        self.assertNotIn("Next page", self.links())
        while "Previous page" in self.links():
            self.submit_link("Previous page")
            pages -= 1
        self.assertEqual(pages, 1)
        self.assertEqual(self.team_rows(), first)
        self.assertEqual(set(self.links()), {"Next page"})

    def test_a_bad_cursor_is_a_readable_page(self):
        self.login("admin@demo.test")
        self.open("/teams?after=%25%25%25")
        self.assertIn("not valid", self.page_text())
        self.assertEqual(self.driver.find_elements(By.CSS_SELECTOR, "nav.pages"), [])

    def test_the_only_page_has_no_page_links(self):
        self.login("developer@demo.test")
        for path in ("/apps", "/subscriptions", "/account"):
            self.open(path)
            self.assertEqual(self.driver.find_elements(By.CSS_SELECTOR, "nav.pages"), [], path)

    def test_a_platform_token_is_shown_once(self):
        self.open(BASE + "/platform/login")
        self.find("#email").send_keys("platform@tollgate.test")
        self.find("#password").send_keys(self.creds["platform@tollgate.test"])
        self.submit(self.find("form button[type=submit]"))
        self.find("#token_name").clear()
        self.find("#token_name").send_keys("browser")
        self.submit(self.form_with("#token_name"))
        token = self.find("#new-token .secret").text
        self.assertTrue(token.startswith("tgx_"), token)
        self.assertNotIn(token, self.driver.current_url)
        self.screenshot("pages-platform-token-desktop")
        self.driver.refresh()
        self.wait(lambda d: d.execute_script("return document.readyState") == "complete")
        self.assertEqual(self.driver.find_elements(By.CSS_SELECTOR, "#new-token"), [])
        self.assertNotIn(token, self.driver.page_source)

    def submit_link(self, label):
        """Follows the page link `label` and waits for the next page."""
        link = [a for a in self.driver.find_elements(By.CSS_SELECTOR, "nav.pages a") if a.text == label][0]
        self.driver.execute_script("window.__tgOldPage = true")
        self.driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", link)
        link.click()
        self.wait(lambda d: d.execute_script("return window.__tgOldPage === undefined && document.readyState === 'complete'"))
