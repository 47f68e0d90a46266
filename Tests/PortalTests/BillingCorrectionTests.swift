import Billing
import Foundation
import HummingbirdTesting
import PostgresNIO
import Testing

@testable import Portal

/// Closing, voiding and re-issuing as finance does them (JSON API and pages): reasons, the link
/// between a void invoice and its replacement, the reconciliation, the audit log, and plans whose
/// arithmetic does not fit.
@Suite struct BillingCorrectionTests {
    struct Finance {
        var billed: InvoiceTests.Billed
        var tenant: Tenant
        var token: String
        var developer: String
    }

    static func finance(_ portal: TestPortal, _ client: some TestClientProtocol, calls: Int = 1_100) async throws -> Finance {
        let b = try await InvoiceTests.proSubscription(portal, client)
        try await InvoiceTests.calls(portal, b, count: calls)
        let tenant = try #require(try await portal.database.withPlatform { try await TenantRepository(logger: TestDatabase.logger).find(slug: "acme", on: $0) })
        let fin = try await Fixtures.user(portal.database, tenant: tenant, email: "fin@example.com", roles: [.finance])
        let token = try await APITests.token(portal, tenant: tenant, user: fin, scopes: [.read, .write])
        let dev = try #require(try await portal.database.withTenant(tenant.id) { try await UserRepository(logger: TestDatabase.logger).find(email: "dev@example.com", on: $0) })
        return Finance(billed: b, tenant: tenant, token: token, developer: try await APITests.token(portal, tenant: tenant, user: dev, scopes: [.read, .write]))
    }

    static func audit(_ portal: TestPortal, _ tenant: UUID) async throws -> [(action: String, actor: String, target: String, details: String)] {
        try await portal.database.withTenant(tenant) { c in
            var events: [(String, String, String, String)] = []
            for try await row in try await c.query(
                "SELECT action, actor, coalesce(target, ''), details::text FROM audit_events WHERE action LIKE 'invoice.%' ORDER BY at, id", logger: TestDatabase.logger
            ).decode((String, String, String, String).self) { events.append(row) }
            return events.map { (action: $0.0, actor: $0.1, target: $0.2, details: $0.3) }
        }
    }

    @Test func aVoidNeedsAReasonAndTheNextCloseIssuesItsLinkedReplacementThroughTheAPI() async throws {
        try await TestPortal.with { portal in
            try await portal.application().test(.router) { client in
                // setup
                let f = try await Self.finance(portal, client)
                let api = "/t/acme/api/v1"
                // act: close, then void without and with a reason
                let closed = try APITests.json(try await APITests.call(client, .post, api + "/billing/close", token: f.token, body: #"{"period":"2026-10"}"#))
                #expect(closed["issued"] as? [String] == ["ACME-000001"])
                let invoices = try APITests.json(try await APITests.call(client, .get, api + "/invoices?period=2026-10", token: f.token))
                let first = try #require((invoices["items"] as? [[String: Any]])?.first)
                let id = try #require(first["id"] as? String)
                #expect(first["replaces"] == nil && first["replaced_by"] == nil && first["voided_at"] == nil)
                let blank = try await APITests.call(client, .post, api + "/invoices/\(id)/void", token: f.token, body: #"{"reason":"   "}"#)
                #expect(blank.status == .unprocessableContent)
                #expect(blank.headers[.contentType] == "application/problem+json")
                #expect(try await APITests.call(client, .post, api + "/invoices/\(id)/void", token: f.developer, body: #"{"reason":"x"}"#).status == .forbidden)
                let voided = try APITests.json(try await APITests.call(client, .post, api + "/invoices/\(id)/void", token: f.token, body: #"{"reason":"wrong plan"}"#))
                // assert: void, with who and when, and nothing replacing it yet
                #expect(voided["status"] as? String == "void")
                #expect(voided["voided_by"] as? String == "fin@example.com")
                #expect(voided["voided_at"] is String)
                #expect(voided["replaced_by"] == nil)
                // the reconciliation says so instead of "balanced"
                let unbalanced = try APITests.json(try await APITests.call(client, .get, api + "/reconciliation?period=2026-10", token: f.token))
                #expect(unbalanced["balanced"] as? Bool == false)
                #expect((unbalanced["unreplaced_voids"] as? [String])?.first?.contains("ACME-000001") == true)
                // the next close issues the replacement, linked both ways
                let again = try APITests.json(try await APITests.call(client, .post, api + "/billing/close", token: f.token, body: #"{"period":"2026-10"}"#))
                #expect(again["issued"] as? [String] == ["ACME-000002"])
                let all = try #require(try APITests.json(try await APITests.call(client, .get, api + "/invoices?period=2026-10", token: f.token))["items"] as? [[String: Any]])
                #expect(all.first { $0["number"] as? String == "ACME-000002" }?["replaces"] as? String == "ACME-000001")
                #expect(all.first { $0["number"] as? String == "ACME-000001" }?["replaced_by"] as? String == "ACME-000002")
                let balanced = try APITests.json(try await APITests.call(client, .get, api + "/reconciliation?period=2026-10", token: f.token))
                #expect(balanced["balanced"] as? Bool == true)
                // refresh is in the API too; every step is in the audit log with who and why
                let refreshed = try APITests.json(try await APITests.call(client, .post, api + "/billing/refresh", token: f.token, body: #"{"period":"2026-11"}"#))
                #expect(refreshed["period"] as? String == "2026-11")
                let events = try await Self.audit(portal, f.tenant.id)
                #expect(events.map(\.action) == ["invoice.period_closed", "invoice.voided", "invoice.period_closed", "invoice.drafts_refreshed"])
                #expect(events.allSatisfy { $0.actor == "fin@example.com" })
                #expect(events[1].target == "ACME-000001" && events[1].details.contains("wrong plan"))
            }
        }
    }

    @Test func theBookAndTheCLIRefuseABlankReason() async throws {
        try await TestPortal.with { portal in
            try await portal.application().test(.router) { client in
                let f = try await Self.finance(portal, client)
                let b = f.billed
                _ = try await InvoiceTests.inTenant(portal, b) { book, c in try await book.close(tenant: b.tenant, period: "2026-10", on: c) }
                await #expect(throws: InvoiceError.blankReason) {
                    try await InvoiceTests.inTenant(portal, b) { book, c in
                        try await book.void(tenant: b.tenant, number: "ACME-000001", reason: " \r\n ", by: "test", on: c)
                    }
                }
                #expect(throws: (any Error).self) { try BillingCommand.validate(reason: "  ") }
                #expect(throws: (any Error).self) { try BillingCommand.Void.parse(["--tenant", "acme", "--invoice", "ACME-000001", "--reason", " "]) }
                #expect(throws: Never.self) { try BillingCommand.validate(reason: "duplicate") }
            }
        }
    }

    /// Plans saved before terms were bounded (or written by SQL): the invoice fails with an
    /// error, the process keeps running, the other periods are still refreshed.
    @Test func aPlanWhoseAmountsDoNotFitFailsItsInvoiceNotTheProcess() async throws {
        try await TestPortal.with { portal in
            try await portal.application().test(.router) { client in
                // setup: 10^18 included requests (× 31 days overflowed), then a price of 10^17 micros a call
                let f = try await Self.finance(portal, client, calls: 200)
                let b = f.billed
                try await portal.database.withSystemScope { c in
                    try await c.query(
                        "UPDATE plans SET monthly_quota = NULL, included_requests = 1000000000000000000 WHERE id = \(b.plan)", logger: TestDatabase.logger)
                }
                // act + assert: the draft refresh is a typed error for that period
                await #expect {
                    try await InvoiceTests.inTenant(portal, b) { book, c in try await book.refreshDrafts(tenant: b.tenant, period: "2026-10", on: c) }
                } throws: { error in
                    guard case .overflow(let period, let what) = error as? InvoiceError else { return false }
                    return period == "2026-10" && what.contains("included requests")
                }
                try await portal.database.withSystemScope { c in
                    try await c.query(
                        #"UPDATE plans SET included_requests = 0, tier_mode = 'flat', tiers = '[{"up_to": null, "unit_price_micros": 100000000000000000}]' WHERE id = \#(b.plan)"#,
                        logger: TestDatabase.logger)
                }
                // the background refresher logs and carries on (a trap would end the test process)
                let refresher = DraftInvoiceRefresher(database: portal.database, interval: .seconds(60), logger: TestDatabase.logger)
                await refresher.refreshAll(now: try #require(ISO8601DateFormatter().date(from: "2026-11-02T08:00:00Z")))
                let drafts = try await InvoiceTests.inTenant(portal, b) { book, c in try await book.list(tenant: b.tenant, status: .draft, on: c) }
                #expect(drafts.map(\.period) == ["2026-11"])  // November has no calls and still gets its draft
                // finance sees a clear problem, on the API and the pages
                let api = try await APITests.call(client, .post, "/t/acme/api/v1/billing/close", token: f.token, body: #"{"period":"2026-10"}"#)
                #expect(api.status == .unprocessableContent)
                #expect(api.text.contains("cannot be computed") && api.text.contains("requests beyond the included"))
                var browser = Browser()
                _ = try await browser.signIn(client, tenant: "acme", email: "fin@example.com")
                let page = try await browser.submit(client, "/t/acme/finance/refresh", from: "/t/acme/finance?period=2026-10", fields: [("period", "2026-10")])
                #expect(page.status == .unprocessableContent)
                #expect(page.text.contains("cannot be computed"))
                #expect(try await browser.get(client, "/t/acme/finance?period=2026-10").status == .ok)
            }
        }
    }

    @Test func financePagesConfirmVoidsShowWhoWhenAndTheReplacementAndRedirectAfterEveryForm() async throws {
        try await TestPortal.with { portal in
            try await portal.application().test(.router) { client in
                // setup
                let f = try await Self.finance(portal, client)
                var browser = Browser()
                _ = try await browser.signIn(client, tenant: "acme", email: "fin@example.com")
                let overview = "/t/acme/finance?period=2026-10"
                // act: close from the page: it asks for confirmation first
                let unconfirmed = try await browser.submit(client, "/t/acme/finance/close", from: overview, fields: [("period", "2026-10")])
                #expect(unconfirmed.status == .unprocessableContent)
                let closed = try await browser.submit(client, "/t/acme/finance/close", from: overview, fields: [("period", "2026-10"), ("confirm", "yes")])
                #expect(closed.status == .seeOther || closed.status == .found)
                let location = try #require(closed.headers[.location])
                #expect(!location.contains("notice="))
                let listing = try await browser.get(client, location)
                #expect(listing.text.contains("1 invoice issued."))
                #expect(listing.text.contains("<p>1 invoice, 49.00 EUR"))
                #expect(!listing.text.contains("1 invoices"))
                let issued = try #require(
                    try await InvoiceTests.inTenant(portal, f.billed) { book, c in try await book.find(tenant: f.billed.tenant, number: "ACME-000001", on: c) })
                let page = "/t/acme/invoices/\(issued.id)"
                let before = try await browser.get(client, page)
                #expect(!before.text.contains("Replaces"))
                #expect(before.text.contains(#"name="confirm""#))
                #expect(before.text.contains("day") && before.text.contains("1.58064516 EUR / day"))
                // void without confirming keeps the reason; then confirmed
                let kept = try await browser.submit(client, page + "/void", from: page, fields: [("reason", "wrong plan")])
                #expect(kept.status == .unprocessableContent)
                #expect(kept.text.contains(#"value="wrong plan""#) && kept.text.contains("Tick the box"))
                let voided = try await browser.submit(client, page + "/void", from: page, fields: [("reason", "wrong plan"), ("confirm", "yes")])
                #expect(voided.status == .seeOther || voided.status == .found)
                let void = try await browser.get(client, try #require(voided.headers[.location]))
                #expect(void.text.contains("by fin@example.com: wrong plan"))
                #expect(void.text.contains("Nothing replaces it yet"))
                let reconcile = try await browser.get(client, "/t/acme/finance/reconcile?period=2026-10")
                #expect(reconcile.text.contains("Not balanced") && reconcile.text.contains("ACME-000001"))
                // closing again issues the replacement; both pages show the link
                _ = try await browser.submit(client, "/t/acme/finance/close", from: overview, fields: [("period", "2026-10"), ("confirm", "yes")])
                let replaced = try await browser.get(client, page)
                #expect(replaced.text.contains("Replaced by <a href=\"/t/acme/invoices/"))
                #expect(replaced.text.contains(">ACME-000002</a>"))
                let replacement = try #require(
                    try await InvoiceTests.inTenant(portal, f.billed) { book, c in try await book.find(tenant: f.billed.tenant, number: "ACME-000002", on: c) })
                #expect(try await browser.get(client, "/t/acme/invoices/\(replacement.id)").text.contains("Replaces ACME-000001."))
                // the web's steps are audited as the signed-in person
                let events = try await Self.audit(portal, f.tenant.id)
                #expect(events.map(\.action) == ["invoice.period_closed", "invoice.voided", "invoice.period_closed"])
                #expect(events.allSatisfy { $0.actor == "fin@example.com" })
            }
        }
    }

    @Test func usageFiltersChooseByNameAndABadFilterStaysOnTheForm() async throws {
        try await TestPortal.with { portal in
            try await portal.application().test(.router) { client in
                // setup
                let f = try await Self.finance(portal, client, calls: 5)
                var browser = Browser()
                _ = try await browser.signIn(client, tenant: "acme", email: "fin@example.com")
                // act
                let form = try await browser.get(client, "/t/acme/finance/usage?from=2026-10-01&to=2026-11-01&app_id=\(f.billed.app)")
                let bad = try await browser.get(client, "/t/acme/finance/usage?from=yesterday&to=2026-11-01")
                // assert: selects with names, the chosen one selected; date inputs; the bad day next to its field, kept
                #expect(form.status == .ok)
                #expect(form.text.contains(#"<select id="team_id" name="team_id">"#))
                #expect(form.text.contains(#"<option value="\#(f.billed.app.uuidString)" selected>"#))
                #expect(form.text.contains(#"type="date""#))
                #expect(form.text.contains("<td>5</td>"))
                #expect(bad.status == .badRequest)
                #expect(bad.text.contains(#"value="yesterday""#))
                #expect(bad.text.contains(#"<span class="field-error">from must be a day"#))
                #expect(bad.text.contains(#"<select id="app_id""#))
            }
        }
    }
}
