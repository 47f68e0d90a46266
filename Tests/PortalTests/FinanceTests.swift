import Billing
import Foundation
import HummingbirdTesting
import Testing

@testable import Portal

/// Finance and analytics through the JSON API and the pages: who sees what, the figures, the
/// CSV downloads and bad input.
@Suite struct FinanceTests {
    @Test func financeSeesInvoicesUsageAnalyticsAndReconciliationOthersOnlyTheirOwn() async throws {
        try await TestPortal.with { portal in
            try await portal.application().test(.router) { client in
                // setup: Pro for October with calls, drafts computed; a finance user
                let b = try await InvoiceTests.proSubscription(portal, client)
                try await InvoiceTests.calls(portal, b, count: 1_500)
                try await InvoiceTests.inTenant(portal, b) { book, c in try await book.refreshDrafts(tenant: b.tenant, period: "2026-10", on: c) }
                let tenant = try #require(try await portal.database.withPlatform { try await TenantRepository(logger: TestDatabase.logger).find(slug: "acme", on: $0) })
                let fin = try await Fixtures.user(portal.database, tenant: tenant, email: "fin@example.com", roles: [.finance])
                let finance = try await APITests.token(portal, tenant: tenant, user: fin, scopes: [.read, .write])
                let developer = try await APITests.token(
                    portal, tenant: tenant, user: try #require(try await portal.database.withTenant(tenant.id) {
                        try await UserRepository(logger: TestDatabase.logger).find(email: "dev@example.com", on: $0)
                    }), scopes: [.read])

                // act + assert: finance lists the period's invoice with its lines
                let list = try APITests.json(try await APITests.call(client, .get, "/t/acme/api/v1/invoices?period=2026-10", token: finance))
                let items = try #require(list["items"] as? [[String: Any]])
                #expect(items.count == 1)
                #expect(items.first?["status"] as? String == "draft")
                #expect(items.first?["total"] as? String == "49.00")
                let id = try #require(items.first?["id"] as? String)
                let detail = try APITests.json(try await APITests.call(client, .get, "/t/acme/api/v1/invoices/\(id)", token: finance))
                #expect((detail["lines"] as? [[String: Any]])?.map { $0["kind"] as? String } == ["fee", "included", "usage"])
                // the developer owns the consumer team: sees the invoice; a stranger's id is a 404
                #expect(try await APITests.call(client, .get, "/t/acme/api/v1/invoices/\(id)", token: developer).status == .ok)
                #expect(try await APITests.call(client, .get, "/t/acme/api/v1/invoices/\(UUID())", token: finance).status == .notFound)

                // usage rows and analytics for a custom window
                let usage = try APITests.json(try await APITests.call(client, .get, "/t/acme/api/v1/usage?from=2026-10-01&to=2026-11-01", token: finance))
                #expect((usage["items"] as? [[String: Any]])?.first?["billable_calls"] as? Int == 1_500)
                let analytics = try APITests.json(
                    try await APITests.call(client, .get, "/t/acme/api/v1/analytics?range=custom&from=2026-10-01&to=2026-11-01", token: finance))
                #expect(analytics["calls"] as? Int == 1_500)
                #expect((analytics["series"] as? [Any])?.count == 31)  // daily beyond 7 days
                #expect(analytics["latency_p50_us"] as? Int == 600)  // 500 µs falls in the ≤ 600 µs bucket
                let byApp = try APITests.json(
                    try await APITests.call(client, .get, "/t/acme/api/v1/analytics?range=custom&from=2026-10-08&to=2026-10-15&app_id=\(b.app)", token: developer))
                #expect((byApp["series"] as? [Any])?.count == 7 * 24)  // hourly up to 7 days
                #expect(byApp["calls"] as? Int == 1_500)

                // reconciliation balances: tallies, events, rollups and the draft agree
                let reconciliation = try APITests.json(try await APITests.call(client, .get, "/t/acme/api/v1/reconciliation?period=2026-10", token: finance))
                #expect(reconciliation["balanced"] as? Bool == true)

                // the developer is not finance; bad input is a 400, never a 500
                #expect(try await APITests.call(client, .get, "/t/acme/api/v1/usage", token: developer).status == .forbidden)
                #expect(try await APITests.call(client, .get, "/t/acme/api/v1/analytics", token: developer).status == .forbidden)
                #expect(try await APITests.call(client, .get, "/t/acme/api/v1/reconciliation", token: developer).status == .forbidden)
                for bad in ["/usage?from=2026-13-01", "/usage?from=2026-11-01&to=2026-10-01", "/invoices?period=11-2026", "/invoices?status=paid",
                    "/analytics?range=1y", "/usage?team_id=nope", "/usage?from=2020-01-01&to=2026-01-01"] {
                    let response = try await APITests.call(client, .get, "/t/acme/api/v1" + bad, token: finance)
                    #expect(response.status == .badRequest, "\(bad)")
                }
            }
        }
    }

    @Test func financePagesRenderChartsAndStreamCSV() async throws {
        try await TestPortal.with { portal in
            try await portal.application().test(.router) { client in
                // setup
                let b = try await InvoiceTests.proSubscription(portal, client)
                try await InvoiceTests.calls(portal, b, count: 20)
                let tenant = try #require(try await portal.database.withPlatform { try await TenantRepository(logger: TestDatabase.logger).find(slug: "acme", on: $0) })
                _ = try await Fixtures.user(portal.database, tenant: tenant, email: "fin@example.com", roles: [.finance])
                var browser = Browser()
                _ = try await browser.signIn(client, tenant: "acme", email: "fin@example.com")
                // act: recompute October's drafts through the form (CSRF included), then look
                let refreshed = try await browser.submit(client, "/t/acme/finance/refresh", from: "/t/acme/finance?period=2026-10", fields: [("period", "2026-10")])
                #expect(refreshed.status == .seeOther || refreshed.status == .found, "\(refreshed.status) \(String(buffer: refreshed.body))")
                let overview = String(buffer: try await browser.get(client, "/t/acme/finance?period=2026-10").body)
                // assert
                #expect(overview.contains("<svg"))
                #expect(overview.contains("49.00 EUR"))
                let analytics = try await browser.get(client, "/t/acme/analytics?range=custom&from=2026-10-01&to=2026-11-01")
                #expect(analytics.status == .ok)
                #expect(String(buffer: analytics.body).contains("<rect"))
                #expect(String(buffer: analytics.body).contains("name=\"to\" value=\"2026-11-01\""))  // a custom window keeps its own end day
                // the 24 h view offers tomorrow as the (excluded) end day, so pressing Custom keeps today's calls
                let day = try await browser.get(client, "/t/acme/analytics?range=24h")
                let tomorrow = DisplayDate.day(Date(timeIntervalSince1970: (Date().timeIntervalSince1970 / 86_400).rounded(.down) * 86_400 + 86_400))
                #expect(String(buffer: day.body).contains("name=\"to\" value=\"\(tomorrow)\""))
                let csv = try await browser.get(client, "/t/acme/finance/usage.csv?from=2026-10-01&to=2026-11-01")
                #expect(csv.headers[.contentType] == "text/csv; charset=utf-8")
                let lines = String(buffer: csv.body).components(separatedBy: "\r\n").filter { !$0.isEmpty }
                #expect(lines.count == 2)
                #expect(lines.last?.hasPrefix("2026-10-10,acme,") == true)
                let invoices = String(buffer: try await browser.get(client, "/t/acme/finance/invoices.csv?from=2026-10-01&to=2026-11-01&drafts=true").body)
                #expect(invoices.components(separatedBy: "\r\n").filter { !$0.isEmpty }.count == 1 + 2)  // header, fee, included
                let reconcile = String(buffer: try await browser.get(client, "/t/acme/finance/reconcile?period=2026-10").body)
                #expect(reconcile.contains("Balanced"))
                // corrections from the invoice page: close, then void-and-reissue with a reason
                let closed = try await InvoiceTests.inTenant(portal, b) { book, c in try await book.close(tenant: b.tenant, period: "2026-10", on: c) }
                let issued = try #require(
                    try await InvoiceTests.inTenant(portal, b) { book, c in try await book.find(tenant: b.tenant, number: closed.issued[0], on: c) })
                let page = "/t/acme/invoices/\(issued.id)"
                #expect(String(buffer: try await browser.get(client, page).body).contains("Void and re-issue"))
                let noReason = try await browser.submit(client, page + "/reissue", from: page, fields: [("reason", " "), ("confirm", "yes")])
                #expect(noReason.status == .unprocessableContent)
                let reissued = try await browser.submit(client, page + "/reissue", from: page, fields: [("reason", "wrong plan"), ("confirm", "yes")])
                #expect(reissued.status == .seeOther || reissued.status == .found)
                let statuses = try await InvoiceTests.inTenant(portal, b) { book, c in try await book.list(tenant: b.tenant, period: "2026-10", on: c) }
                #expect(statuses.map(\.number).sorted { ($0 ?? "") < ($1 ?? "") } == ["ACME-000001", "ACME-000002"])
                #expect(statuses.first { $0.number == "ACME-000001" }?.voidReason == "wrong plan")
                // a void invoice offers no more corrections and refuses them
                #expect(!String(buffer: try await browser.get(client, page).body).contains("Void and re-issue"))
                #expect(try await browser.submit(client, page + "/void", from: "/t/acme/finance", fields: [("reason", "again"), ("confirm", "yes")]).status == .conflict)
                // a readable page for bad input
                let bad = try await browser.get(client, "/t/acme/finance/usage?from=yesterday")
                #expect(bad.status == .badRequest)
                #expect(String(buffer: bad.body).contains("from must be a day"))
            }
        }
    }
}
