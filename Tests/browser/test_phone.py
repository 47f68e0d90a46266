"""Every page each role can reach, at desktop width and at 390 px: nothing scrolls sideways."""
import re
import urllib.parse

from portal import BASE, TENANT, BrowserTest, same_site_links

SKIP = re.compile(r"(\.csv|/openapi(\?|$)|/logout|/oauth2/|/api/v1/|/\.well-known/)")
UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
# the segment after a collection is an id even when it is not a UUID (team and tenant slugs,
# invoice numbers, invitation tokens); "new" is a page of its own
NAMED = re.compile(r"/(teams|tenants|invoices|apps|apis|plans|subscriptions|webhooks|deliveries|invitations)/(?!new(?:/|$))[^/?#]+")
PER_SHAPE = 2     # pages per URL shape (ids replaced), e.g. two app pages
MAX_PAGES = 45    # a crawl that has pages of a new shape left at this budget fails


def shape_of(url):
    path = urllib.parse.urlsplit(url).path
    return NAMED.sub(r"/\1/:id", UUID.sub(":id", path)) + ("?" if "?" in url else "")


class PhoneWidth(BrowserTest):
    def crawl(self, role, start, prefix, at_least=3):
        seen, shapes, queue, problems, visited = set(), {}, [start], [], 0
        while queue and visited < MAX_PAGES:
            url = queue.pop(0)
            if url in seen or SKIP.search(url) or not url.startswith(prefix):
                continue
            seen.add(url)
            shape = shape_of(url)
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
        # what the budget cut off: pages the crawl would still have opened
        left, budget = [], dict(shapes)
        for url in queue:
            shape = shape_of(url)
            if url in seen or url in left or SKIP.search(url) or not url.startswith(prefix) or budget.get(shape, 0) >= PER_SHAPE:
                continue
            budget[shape] = budget.get(shape, 0) + 1
            left.append(url)
        self.assertEqual(left, [], f"{role}: {MAX_PAGES} pages crawled and {len(left)} of new shapes left unvisited")
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
