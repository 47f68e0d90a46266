"""Every page each role can reach, at desktop width and at 390 px: nothing scrolls sideways."""
import re
import urllib.parse

from portal import BASE, TENANT, BrowserTest, same_site_links

SKIP = re.compile(r"(\.csv|/openapi(\?|$)|/logout|/oauth2/|/api/v1/|/\.well-known/)")
UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
PER_SHAPE = 2     # pages per URL shape (ids replaced), e.g. two app pages
MAX_PAGES = 45


class PhoneWidth(BrowserTest):
    def crawl(self, role, start, prefix, at_least=3):
        seen, shapes, queue, problems, visited = set(), {}, [start], [], 0
        while queue and visited < MAX_PAGES:
            url = queue.pop(0)
            if url in seen or SKIP.search(url) or not url.startswith(prefix):
                continue
            seen.add(url)
            shape = UUID.sub(":id", urllib.parse.urlsplit(url).path) + ("?" if "?" in url else "")
            if shapes.get(shape, 0) >= PER_SHAPE:
                continue
            shapes[shape] = shapes.get(shape, 0) + 1
            self.set_phone(False)
            self.open(url)
            visited += 1
            name = f"{role}{urllib.parse.urlsplit(url).path.replace(prefix, '') or '-home'}"
            self.screenshot(f"desktop-{name}")
            queue.extend(same_site_links(self.driver))
            self.set_phone(True)
            self.open(url)
            overflow = self.sideways_overflow()
            self.screenshot(f"phone-{name}")
            if overflow > 0:
                problems.append(f"{url} is {overflow}px wider than {390}px")
        self.set_phone(False)
        self.assertGreaterEqual(visited, at_least, f"{role}: crawled only {visited} pages")
        self.assertEqual(problems, [], f"{role}: pages scroll sideways at 390 px")

    def test_anonymous(self):
        self.crawl("anonymous", TENANT + "/", TENANT)

    def test_developer(self):
        self.login("developer@demo.test")
        self.crawl("developer", TENANT + "/", TENANT)

    def test_provider(self):
        self.login("provider@demo.test")
        self.crawl("provider", TENANT + "/", TENANT)

    def test_finance(self):
        self.login("finance@demo.test")
        self.crawl("finance", TENANT + "/", TENANT)

    def test_admin(self):
        self.login("admin@demo.test")
        self.crawl("admin", TENANT + "/", TENANT)

    def test_platform_admin(self):
        self.open(BASE + "/platform/login")
        self.find("#email").send_keys("platform@tollgate.test")
        self.find("#password").send_keys(self.creds["platform@tollgate.test"])
        self.submit(self.find("form button[type=submit]"))
        self.crawl("platform", BASE + "/platform/", BASE + "/platform", at_least=2)
