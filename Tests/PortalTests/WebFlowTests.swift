import Foundation
import HTTPTypes
import Hummingbird
import NIOEmbedded
import PostgresNIO
import Prometheus
import HummingbirdTesting
import Testing

@testable import Portal

/// The HTML portal driven like a browser: forms, cookies, CSRF.
@Suite struct WebFlowTests {
    @Test func signupSignsInAndShowsTheDashboard() async throws {
        try await TestPortal.with { portal in
            _ = try await Fixtures.tenant(portal.database, slug: "acme")
            try await portal.application().test(.router) { client in
                var browser = Browser()
                // act
                let response = try await browser.submit(
                    client, "/t/acme/signup", from: "/t/acme/signup",
                    fields: [
                        ("display_name", "Grace"), ("email", "Grace@Example.com"), ("password", "a long passphrase"),
                        ("password_confirmation", "a long passphrase"),
                    ])
                // assert
                #expect(response.status == .seeOther)
                #expect(browser.cookies["tg_session"] != nil)
                let home = try await browser.get(client, "/t/acme/")
                #expect(home.text.contains("Welcome, Grace"))
                #expect(home.text.contains("Developer"))
            }
        }
    }

    @Test func signupShowsFieldErrorsAndKeepsInput() async throws {
        try await TestPortal.with { portal in
            _ = try await Fixtures.tenant(portal.database, slug: "acme")
            try await portal.application().test(.router) { client in
                var browser = Browser()
                let response = try await browser.submit(
                    client, "/t/acme/signup", from: "/t/acme/signup",
                    fields: [("display_name", "Grace"), ("email", "not-an-email"), ("password", "short"), ("password_confirmation", "other")])
                #expect(response.status == .unprocessableContent)
                #expect(response.text.contains("Enter a valid email address."))
                #expect(response.text.contains("Use at least 10 characters."))
                #expect(response.text.contains("value=\"not-an-email\""))
            }
        }
    }

    @Test func inviteOnlyTenantRefusesSignup() async throws {
        try await TestPortal.with { portal in
            _ = try await Fixtures.tenant(portal.database, slug: "closed", policy: .inviteOnly)
            try await portal.application().test(.router) { client in
                var browser = Browser()
                let form = try await browser.get(client, "/t/closed/signup")
                #expect(form.text.contains("invitation-only"))
                let response = try await browser.submit(
                    client, "/t/closed/signup", from: "/t/closed/signup",
                    fields: [("display_name", "E"), ("email", "e@example.com"), ("password", "a long passphrase"), ("password_confirmation", "a long passphrase")])
                #expect(response.status == .forbidden)
            }
        }
    }

    @Test func loginFailureIsGenericAndAudited() async throws {
        try await TestPortal.withAcmeAdmin { portal in
            try await portal.application().test(.router) { client in
                var browser = Browser()
                let wrongPassword = try await browser.signIn(client, tenant: "acme", email: "ada@example.com", password: "wrong password!")
                let unknownEmail = try await browser.signIn(client, tenant: "acme", email: "nobody@example.com", password: "wrong password!")
                #expect(wrongPassword.status == .unauthorized)
                #expect(unknownEmail.status == .unauthorized)
                #expect(wrongPassword.text.contains("Email or password is incorrect."))
                #expect(unknownEmail.text.contains("Email or password is incorrect."))
                #expect(browser.cookies["tg_session"] == nil)
                let ok = try await browser.signIn(client, tenant: "acme", email: "ada@example.com")
                #expect(ok.status == .seeOther)
                let audit = try await browser.get(client, "/t/acme/admin/audit")
                #expect(audit.text.contains("login.failed"))
                #expect(audit.text.contains("login.succeeded"))
            }
        }
    }

    @Test func repeatedFailuresThrottleTheAccount() async throws {
        try await TestPortal.withAcmeAdmin { portal in
            try await portal.application().test(.router) { client in
                var browser = Browser()
                for _ in 0..<5 {
                    let failed = try await browser.signIn(client, tenant: "acme", email: "ada@example.com", password: "guess guess guess")
                    #expect(failed.status == .unauthorized)
                }
                // even the right password is refused while throttled
                let throttled = try await browser.signIn(client, tenant: "acme", email: "ada@example.com")
                #expect(throttled.status == .tooManyRequests)
                #expect(throttled.headers[.retryAfter].flatMap(Int.init).map { $0 > 0 } == true)
                #expect(browser.cookies["tg_session"] == nil)
            }
        }
    }

    @Test func formsWithoutAValidCSRFTokenAreRefused() async throws {
        try await TestPortal.withAcmeAdmin { portal in
            try await portal.application().test(.router) { client in
                var browser = Browser()
                _ = try await browser.get(client, "/t/acme/login")
                let missing = try await browser.post(client, "/t/acme/login", fields: [("email", "ada@example.com"), ("password", Fixtures.password)])
                #expect(missing.status == .forbidden)
                #expect(missing.text.contains("Form expired"))
                let forged = try await browser.post(
                    client, "/t/acme/login", fields: [("_csrf", "AAAA"), ("email", "ada@example.com"), ("password", Fixtures.password)])
                #expect(forged.status == .forbidden)
                // after login the anonymous token no longer works: tokens are bound to the session
                let anonymousToken = Browser.csrfToken(in: try await browser.get(client, "/t/acme/login").text)
                _ = try await browser.signIn(client, tenant: "acme", email: "ada@example.com")
                let stale = try await browser.post(client, "/t/acme/teams", fields: [("_csrf", anonymousToken ?? ""), ("name", "Team")])
                #expect(stale.status == .forbidden)
            }
        }
    }

    @Test func logoutEndsTheSessionServerSide() async throws {
        try await TestPortal.withAcmeAdmin { portal in
            try await portal.application().test(.router) { client in
                var browser = Browser()
                _ = try await browser.signIn(client, tenant: "acme", email: "ada@example.com")
                let stolen = browser.cookies["tg_session"]
                let out = try await browser.submit(client, "/t/acme/logout", from: "/t/acme/", fields: [])
                #expect(out.status == .seeOther)
                #expect(browser.cookies["tg_session"] == nil)
                // replaying the old cookie does not work
                var attacker = Browser()
                attacker.cookies["tg_session"] = stolen
                let page = try await attacker.get(client, "/t/acme/account")
                #expect(page.status == .seeOther)
                #expect(page.headers[.location]?.hasPrefix("/t/acme/login") == true)
            }
        }
    }

    @Test(arguments: [
        "UPDATE sessions SET last_seen_at = now() - interval '121 minutes'",
        "UPDATE sessions SET expires_at = now() - interval '1 second'",
    ])
    func sessionsExpireWhenIdleOrTooOld(expire: String) async throws {
        try await TestPortal.withAcmeAdmin { portal in
            try await portal.application().test(.router) { client in
                var browser = Browser()
                _ = try await browser.signIn(client, tenant: "acme", email: "ada@example.com")
                #expect(try await browser.get(client, "/t/acme/account").status == .ok)
                // act: age the session past the idle (120 min) or absolute limit
                try await portal.database.withSystemScope { connection in
                    try await connection.query(PostgresQuery(unsafeSQL: expire), logger: portal.database.logger)
                }
                // assert
                let page = try await browser.get(client, "/t/acme/account")
                #expect(page.status == .seeOther)
                #expect(page.headers[.location]?.hasPrefix("/t/acme/login") == true)
            }
        }
    }

    @Test func oneClientGuessingManyAccountsIsThrottledByAddress() async throws {
        try await TestPortal.withAcmeAdmin { portal in
            try await portal.application().test(.router) { client in
                var browser = Browser()
                // 30 failures spread over many accounts stay under each account's limit...
                for i in 0..<30 {
                    _ = try await browser.signIn(client, tenant: "acme", email: "guess\(i)@example.com", password: "wrong password!")
                }
                // ...but the client address is now throttled, even for a real account
                let blocked = try await browser.signIn(client, tenant: "acme", email: "ada@example.com")
                #expect(blocked.status == .tooManyRequests)
            }
        }
    }

    @Test func sessionCookieAndSecurityHeaders() async throws {
        try await TestPortal.withAcmeAdmin { portal in
            try await portal.application().test(.router) { client in
                var browser = Browser()
                let login = try await browser.signIn(client, tenant: "acme", email: "ada@example.com")
                let cookie = login.headers[values: .setCookie].first { $0.hasPrefix("tg_session=") } ?? ""
                #expect(cookie.contains("HttpOnly"))
                #expect(cookie.contains("SameSite=Lax"))
                #expect(cookie.contains("Path=/t/acme"))
                let page = try await browser.get(client, "/t/acme/account")
                #expect(page.headers[.contentSecurityPolicy]?.contains("frame-ancestors 'none'") == true)
                #expect(page.headers[.xFrameOptions] == "DENY")
                #expect(page.headers[.xContentTypeOptions] == "nosniff")
                #expect(page.headers[.referrerPolicy] == "same-origin")
                #expect(page.headers[.xRequestID] != nil)
            }
        }
    }

    @Test func changingPasswordSignsOutOtherSessions() async throws {
        try await TestPortal.with { portal in
            let tenant = try await Fixtures.tenant(portal.database, slug: "acme")
            _ = try await Fixtures.user(portal.database, tenant: tenant, email: "ada@example.com", roles: [.developer])
            try await portal.application().test(.router) { client in
                var laptop = Browser()
                var phone = Browser()
                _ = try await laptop.signIn(client, tenant: "acme", email: "ada@example.com")
                _ = try await phone.signIn(client, tenant: "acme", email: "ada@example.com")
                let wrong = try await laptop.submit(
                    client, "/t/acme/account/password", from: "/t/acme/account",
                    fields: [("current_password", "not it at all"), ("new_password", "brand new passphrase"), ("new_password_confirmation", "brand new passphrase")])
                #expect(wrong.status == .unprocessableContent)
                #expect(wrong.text.contains("This is not your current password."))
                let changed = try await laptop.submit(
                    client, "/t/acme/account/password", from: "/t/acme/account",
                    fields: [("current_password", Fixtures.password), ("new_password", "brand new passphrase"), ("new_password_confirmation", "brand new passphrase")])
                #expect(changed.status == .seeOther)
                #expect(try await laptop.get(client, "/t/acme/account").status == .ok)
                #expect(try await phone.get(client, "/t/acme/account").status == .seeOther)
                var fresh = Browser()
                #expect(try await fresh.signIn(client, tenant: "acme", email: "ada@example.com", password: "brand new passphrase").status == .seeOther)
            }
        }
    }

    @Test func invitationLinkCreatesAnAccountWithRolesAndTeam() async throws {
        try await TestPortal.with { portal in
            let tenant = try await Fixtures.tenant(portal.database, slug: "acme", policy: .inviteOnly)
            _ = try await Fixtures.user(portal.database, tenant: tenant, email: "ada@example.com", roles: [.admin])
            try await portal.application().test(.router) { client in
                var admin = Browser()
                _ = try await admin.signIn(client, tenant: "acme", email: "ada@example.com")
                _ = try await admin.submit(client, "/t/acme/teams", from: "/t/acme/teams", fields: [("name", "Payments")])
                let invitePage = try await admin.get(client, "/t/acme/admin/invitations")
                let teamID = invitePage.text.components(separatedBy: "<option value=\"").dropFirst(2).first?.prefix(36).description ?? ""
                let posted = try await admin.submit(
                    client, "/t/acme/admin/invitations", from: "/t/acme/admin/invitations",
                    fields: [("email", "finn@example.com"), ("roles", "finance"), ("roles", "provider"), ("team_id", teamID), ("team_role", "admin")])
                // post/redirect/get: the link shows once on the page the redirect leads to
                #expect(posted.status == .seeOther)
                let shown = try await admin.get(client, "/t/acme/admin/invitations")
                #expect(!(try await admin.get(client, "/t/acme/admin/invitations").text.contains("/t/acme/invitations/")))
                let created = shown
                guard let linkStart = created.text.range(of: "/t/acme/invitations/") else {
                    Issue.record("no invitation link shown")
                    return
                }
                let token = String(created.text[linkStart.upperBound...].prefix { $0 != "<" })
                var invitee = Browser()
                let accept = try await invitee.submit(
                    client, "/t/acme/invitations/\(token)", from: "/t/acme/invitations/\(token)",
                    fields: [("display_name", "Finn"), ("password", "finn's passphrase"), ("password_confirmation", "finn's passphrase")])
                #expect(accept.status == .seeOther)
                let home = try await invitee.get(client, "/t/acme/")
                #expect(home.text.contains("Finance"))
                #expect(home.text.contains("API provider"))
                let team = try await invitee.get(client, "/t/acme/teams/payments")
                #expect(team.status == .ok)
                #expect(team.text.contains("finn@example.com"))
                // one-time: the link is dead now
                var other = Browser()
                #expect(try await other.get(client, "/t/acme/invitations/\(token)").status == .notFound)
            }
        }
    }

    @Test func pagesAreShownByRole() async throws {
        try await TestPortal.with { portal in
            let tenant = try await Fixtures.tenant(portal.database, slug: "acme")
            _ = try await Fixtures.user(portal.database, tenant: tenant, email: "dev@example.com", roles: [.developer])
            try await portal.application().test(.router) { client in
                var dev = Browser()
                _ = try await dev.signIn(client, tenant: "acme", email: "dev@example.com")
                let home = try await dev.get(client, "/t/acme/")
                #expect(!home.text.contains("/admin/audit"))
                #expect(try await dev.get(client, "/t/acme/admin/audit").status == .forbidden)
                #expect(try await dev.get(client, "/t/acme/admin/users").status == .forbidden)
            }
        }
    }

    @Test func teamOwnersManageMembersAndKeepAnOwner() async throws {
        try await TestPortal.with { portal in
            let tenant = try await Fixtures.tenant(portal.database, slug: "acme")
            _ = try await Fixtures.user(portal.database, tenant: tenant, email: "owner@example.com", roles: [.developer])
            _ = try await Fixtures.user(portal.database, tenant: tenant, email: "mate@example.com", roles: [.developer])
            try await portal.application().test(.router) { client in
                var owner = Browser()
                _ = try await owner.signIn(client, tenant: "acme", email: "owner@example.com")
                let created = try await owner.submit(client, "/t/acme/teams", from: "/t/acme/teams", fields: [("name", "Demo Devs")])
                #expect(created.headers[.location] == "/t/acme/teams/demo-devs")
                let added = try await owner.submit(
                    client, "/t/acme/teams/demo-devs/members", from: "/t/acme/teams/demo-devs", fields: [("email", "mate@example.com"), ("role", "member")])
                #expect(added.status == .seeOther)
                let unknown = try await owner.submit(
                    client, "/t/acme/teams/demo-devs/members", from: "/t/acme/teams/demo-devs", fields: [("email", "ghost@example.com"), ("role", "member")])
                #expect(unknown.status == .unprocessableContent)
                #expect(unknown.text.contains("Invite them first"))
                // the mate (member) cannot add people
                var mate = Browser()
                _ = try await mate.signIn(client, tenant: "acme", email: "mate@example.com")
                let denied = try await mate.submit(
                    client, "/t/acme/teams/demo-devs/members", from: "/t/acme/teams/demo-devs", fields: [("email", "owner@example.com"), ("role", "member")])
                #expect(denied.status == .forbidden)
                // the only owner cannot be demoted
                let page = try await owner.get(client, "/t/acme/teams/demo-devs")
                #expect(page.text.contains("mate@example.com"))
                let demote = try await owner.submit(
                    client, "/t/acme/teams/demo-devs/members", from: "/t/acme/teams/demo-devs", fields: [("email", "owner@example.com"), ("role", "member")])
                #expect(demote.status == .conflict)
            }
        }
    }

    @Test func tenantResolvesFromHostHeader() async throws {
        try await TestPortal.with { portal in
            // setup: the real router behind the host rewriter (the test clients pin Host to localhost)
            _ = try await Fixtures.tenant(portal.database, slug: "acme")
            try await portal.database.withPlatform { connection in
                try await connection.query("UPDATE tenants SET custom_host = 'developers.acme.test' WHERE slug = 'acme'", logger: portal.database.logger)
            }
            let responder = TenantHostResponder(
                inner: buildRouter(services: portal.services, metrics: PrometheusCollectorRegistry()).buildResponder(), baseDomain: "localhost",
                database: portal.database, tenants: portal.services.tenants)
            for host in ["acme.localhost:8080", "developers.acme.test"] {
                // act
                let request = Request(
                    head: HTTPRequest(method: .get, scheme: "http", authority: host, path: "/login"), body: RequestBody(buffer: ByteBuffer()))
                let context = AppRequestContext(source: .init(channel: EmbeddedChannel(), logger: TestDatabase.logger))
                let response = try await responder.respond(to: request, context: context)
                // assert
                #expect(response.status == .ok, "host \(host)")
                let cookie = response.headers[values: .setCookie].first ?? ""
                #expect(cookie.contains("Path=/;") || cookie.hasSuffix("Path=/"), "links and cookies have no /t/ prefix on \(host)")
            }
            let unknown = Request(
                head: HTTPRequest(method: .get, scheme: "http", authority: "nobody.localhost", path: "/login"), body: RequestBody(buffer: ByteBuffer()))
            let context = AppRequestContext(source: .init(channel: EmbeddedChannel(), logger: TestDatabase.logger))
            #expect(try await responder.respond(to: unknown, context: context).status == .notFound)
        }
    }

    @Test func unknownTenantAndPathAreReadable404s() async throws {
        try await TestPortal.with { portal in
            try await portal.application().test(.router) { client in
                let page = try await client.execute(uri: "/t/nowhere/", method: .get)
                #expect(page.status == .notFound)
                #expect(page.headers[.contentType]?.hasPrefix("text/html") == true)
                #expect(String(buffer: page.body).contains("There is no marketplace at this address."))
                let api = try await client.execute(uri: "/t/nowhere/api/v1/me", method: .get)
                #expect(api.status == .notFound)
                #expect(api.headers[.contentType] == "application/problem+json")
                let nothing = try await client.execute(uri: "/no/such/page", method: .get)
                #expect(nothing.status == .notFound)
            }
        }
    }

    @Test func unsafeReturnPathsAreIgnored() async throws {
        try await TestPortal.withAcmeAdmin { portal in
            try await portal.application().test(.router) { client in
                var browser = Browser()
                let response = try await browser.submit(
                    client, "/t/acme/login", from: "/t/acme/login",
                    fields: [("email", "ada@example.com"), ("password", Fixtures.password), ("next", "https://evil.example/")])
                #expect(response.headers[.location] == "/t/acme/")
            }
        }
    }
}
