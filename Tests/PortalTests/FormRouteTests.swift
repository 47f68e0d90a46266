import Foundation
import HummingbirdTesting
import PostgresNIO
import Testing

@testable import Portal

/// No page address is a dead form URL: a form's own address loaded with GET (a reload of a page
/// re-rendered there with errors, a bookmark) answers 303 See Other to the page the form is on.
@Suite struct FormRouteTests {
    @Test func everyFormAddressLoadedWithGETLeadsToAPageThatAnswers() async throws {
        try await TestPortal.with { portal in
            try await portal.application().test(.router) { client in
                // setup: a subscribed app, an issued invoice, a webhook with a delivery, a platform admin
                let f = try await BillingCorrectionTests.finance(portal, client, calls: 1)
                _ = try await APITests.call(client, .post, "/t/acme/api/v1/billing/close", token: f.token, body: #"{"period":"2026-10"}"#)
                let invoice = try #require(
                    try await InvoiceTests.inTenant(portal, f.billed) { book, c in try await book.find(tenant: f.billed.tenant, number: "ACME-000001", on: c) })
                let apiID = try #require(
                    try await portal.database.withTenant(f.tenant.id) { c in
                        try await portal.services.subscriptionService.subscriptions.find(id: f.billed.subscription, on: c)
                    }
                ).apiID
                _ = try await Fixtures.user(portal.database, tenant: f.tenant, email: "ada@example.com", roles: [.admin])
                let (webhook, delivery) = (UUID(), UUID())
                try await WebPaginationTests.sql(
                    portal,
                    """
                    WITH e AS (
                        INSERT INTO webhook_events (tenant_id, type, payload) VALUES (\(f.tenant.id), 'app.created', '{}'::jsonb) RETURNING id
                    ), w AS (
                        INSERT INTO webhook_endpoints (id, tenant_id, url, secret_sealed, secret_prefix)
                        VALUES (\(webhook), \(f.tenant.id), 'https://hooks.example/in', '\\x00'::bytea, 'whsec_x') RETURNING id
                    )
                    INSERT INTO webhook_deliveries (id, tenant_id, endpoint_id, event_id) SELECT \(delivery), \(f.tenant.id), w.id, e.id FROM w, e
                    """)
                let (platformPassword, _) = try await PlatformTests.admin(portal)
                let (sub, app, plan, other) = (f.billed.subscription, f.billed.app, f.billed.plan, UUID())
                let t = "/t/acme"
                // who loads the form address, the address, and the page it leads to
                let forms: [(user: String, form: String, page: String)] = [
                    ("dev@example.com", "\(t)/subscriptions/\(sub)/actions", "\(t)/subscriptions/\(sub)"),
                    ("dev@example.com", "\(t)/apps/\(app)/subscriptions", "\(t)/apps/\(app)"),
                    ("dev@example.com", "\(t)/apps/\(app)/client-secrets", "\(t)/apps/\(app)"),
                    ("dev@example.com", "\(t)/apps/\(app)/api-keys", "\(t)/apps/\(app)"),
                    ("dev@example.com", "\(t)/apps/\(app)/credentials/\(other)/revoke", "\(t)/apps/\(app)"),
                    ("dev@example.com", "\(t)/teams/users/members", "\(t)/teams/users"),
                    ("dev@example.com", "\(t)/teams/users/members/\(other)/remove", "\(t)/teams/users"),
                    ("dev@example.com", "\(t)/account/password", "\(t)/account"),
                    ("dev@example.com", "\(t)/account/tokens", "\(t)/account"),
                    ("dev@example.com", "\(t)/account/tokens/\(other)/revoke", "\(t)/account"),
                    ("pat@example.com", "\(t)/catalog/apis", "\(t)/catalog/new"),
                    ("pat@example.com", "\(t)/catalog/apis/\(apiID)/transitions", "\(t)/catalog/apis/\(apiID)"),
                    ("pat@example.com", "\(t)/catalog/apis/\(apiID)/settings", "\(t)/catalog/apis/\(apiID)"),
                    ("pat@example.com", "\(t)/catalog/apis/\(apiID)/policy", "\(t)/catalog/apis/\(apiID)"),
                    ("pat@example.com", "\(t)/catalog/apis/\(apiID)/client-certificate", "\(t)/catalog/apis/\(apiID)"),
                    ("pat@example.com", "\(t)/catalog/apis/\(apiID)/client-certificate/remove", "\(t)/catalog/apis/\(apiID)"),
                    ("pat@example.com", "\(t)/catalog/apis/\(apiID)/plans", "\(t)/catalog/apis/\(apiID)/plans/new"),
                    ("pat@example.com", "\(t)/catalog/plans/\(plan)/versions", "\(t)/catalog/plans/\(plan)"),
                    ("fin@example.com", "\(t)/finance/close", "\(t)/finance"),
                    ("fin@example.com", "\(t)/finance/refresh", "\(t)/finance"),
                    ("fin@example.com", "\(t)/invoices/\(invoice.id)/void", "\(t)/invoices/\(invoice.id)"),
                    ("fin@example.com", "\(t)/invoices/\(invoice.id)/reissue", "\(t)/invoices/\(invoice.id)"),
                    ("ada@example.com", "\(t)/admin/users/\(other)/roles", "\(t)/admin/users"),
                    ("ada@example.com", "\(t)/webhooks/\(webhook)/delete", "\(t)/webhooks/\(webhook)"),
                    ("ada@example.com", "\(t)/webhooks/\(webhook)/deliveries/\(delivery)/redeliver", "\(t)/webhooks/\(webhook)/deliveries/\(delivery)"),
                    ("ada@example.com", "\(t)/logout", "\(t)/"),
                    ("ops@example.com", "/platform/tenants", "/platform/"),
                    ("ops@example.com", "/platform/tenants/acme/admin-invitations", "/platform/tenants/acme"),
                    ("ops@example.com", "/platform/tokens", "/platform/"),
                    ("ops@example.com", "/platform/logout", "/platform/"),
                ]
                var browsers: [String: Browser] = [:]
                for form in forms {
                    var browser = browsers[form.user] ?? Browser()
                    if browsers[form.user] == nil {
                        let signedIn =
                            form.user == "ops@example.com"
                            ? try await browser.submit(
                                client, "/platform/login", from: "/platform/login", fields: [("email", form.user), ("password", platformPassword)])
                            : try await browser.signIn(client, tenant: "acme", email: form.user)
                        #expect(signedIn.status == .seeOther, "\(form.user)")
                    }
                    // act
                    let answer = try await browser.get(client, form.form)
                    // assert: 303 to the form's page, which answers 200
                    #expect(answer.status == .seeOther, "\(form.form)")
                    #expect(answer.headers[.location] == form.page, "\(form.form)")
                    let page = try await browser.get(client, form.page)
                    #expect(page.status == .ok, "\(form.form) → \(form.page)")
                    browsers[form.user] = browser
                }
            }
        }
    }
}
