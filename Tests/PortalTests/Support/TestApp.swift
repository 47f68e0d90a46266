import Foundation
import Gateway
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Logging
import Prometheus
import Testing

@testable import Portal

/// The portal application on a private test schema, plus helpers that act like a browser.
struct TestPortal {
    let database: Database
    let services: PortalServices

    static func with<T: Sendable>(
        configure: @Sendable (inout AppConfig) -> Void = { _ in }, _ body: @Sendable (TestPortal) async throws -> T
    ) async throws -> T {
        try await TestDatabase.withDatabase { database in try await body(make(database, configure: configure)) }
    }

    /// Tenant `acme` with one admin, `ada@example.com`, whose password is `Fixtures.password`.
    static func withAcmeAdmin<T: Sendable>(_ body: @Sendable (TestPortal) async throws -> T) async throws -> T {
        try await with { portal in
            let tenant = try await Fixtures.tenant(portal.database, slug: "acme")
            _ = try await Fixtures.user(portal.database, tenant: tenant, email: "ada@example.com", roles: [.admin])
            return try await body(portal)
        }
    }

    /// Portal services on `database` with the repository's templates and migrations.
    static func make(_ database: Database, configure: (inout AppConfig) -> Void = { _ in }) async throws -> TestPortal {
        var config = try AppConfig.fromEnvironment([:])
        config.templatesDirectory = TestDatabase.templatesDirectory
        config.migrationsDirectory = TestDatabase.migrationsDirectory
        configure(&config)
        let services = PortalServices(
            config: config, database: database, views: try await Views(directory: config.templatesDirectory),
            secret: SecretKey(bytes: Array(repeating: 7, count: 32)), readiness: Readiness(), hasher: Fixtures.hasher)
        return TestPortal(database: database, services: services)
    }

    /// What a gateway would load from the database right now.
    func snapshot() async throws -> GatewaySnapshot {
        try await SnapshotLoader(
            client: database.client, baseDomain: "localhost", publicURL: services.config.publicURL, logger: TestDatabase.logger).load(version: 1)
    }

    /// The `type` of every webhook event queued in the outbox, oldest first (all tenants).
    func outboxTypes() async throws -> [String] {
        try await database.withSystemScope { connection in
            var types: [String] = []
            for try await type in try await connection.query("SELECT type FROM webhook_events ORDER BY created_at", logger: TestDatabase.logger)
                .decode(String.self)
            {
                types.append(type)
            }
            return types
        }
    }

    func application() -> some ApplicationProtocol {
        buildApplication(services: services, metrics: PrometheusCollectorRegistry(), host: "127.0.0.1", port: 0, logger: TestDatabase.logger)
    }
}

/// Cookie jar + CSRF scraping, so tests drive the HTML forms the way a browser does.
struct Browser {
    var cookies: [String: String] = [:]
    var host = "127.0.0.1:8080"

    static let hostField = HTTPField.Name("Host")!

    var cookieHeader: String { cookies.map { "\($0.key)=\($0.value)" }.sorted().joined(separator: "; ") }

    mutating func remember(_ response: TestResponse) {
        for field in response.headers where field.name == .setCookie {
            let pair = field.value.split(separator: ";")[0].split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            guard pair.count == 2 else { continue }
            let name = String(pair[0]).trimmingCharacters(in: .whitespaces)
            let value = String(pair[1])
            if value.isEmpty || field.value.contains("Max-Age=0") { cookies[name] = nil } else { cookies[name] = value }
        }
    }

    mutating func get(_ client: some TestClientProtocol, _ path: String) async throws -> TestResponse {
        var headers: HTTPFields = [Browser.hostField: host]
        if !cookies.isEmpty { headers[.cookie] = cookieHeader }
        let response = try await client.execute(uri: path, method: .get, headers: headers)
        remember(response)
        return response
    }

    /// Loads `formPage`, takes its CSRF token, and posts `fields` to `path`.
    mutating func submit(
        _ client: some TestClientProtocol, _ path: String, from formPage: String, fields: [(String, String)], csrf: String? = nil
    ) async throws -> TestResponse {
        let page = try await get(client, formPage)
        let token = csrf ?? Browser.csrfToken(in: String(buffer: page.body)) ?? ""
        return try await post(client, path, fields: [("_csrf", token)] + fields)
    }

    mutating func post(_ client: some TestClientProtocol, _ path: String, fields: [(String, String)]) async throws -> TestResponse {
        let body = fields.map { "\(Browser.encode($0.0))=\(Browser.encode($0.1))" }.joined(separator: "&")
        var headers: HTTPFields = [Browser.hostField: host, .contentType: "application/x-www-form-urlencoded"]
        if !cookies.isEmpty { headers[.cookie] = cookieHeader }
        let response = try await client.execute(uri: path, method: .post, headers: headers, body: ByteBuffer(string: body))
        remember(response)
        return response
    }

    static func csrfToken(in html: String) -> String? {
        guard let range = html.range(of: "name=\"_csrf\" value=\"") else { return nil }
        let rest = html[range.upperBound...]
        return rest.firstIndex(of: "\"").map { String(rest[..<$0]) }
    }

    static func encode(_ text: String) -> String {
        text.addingPercentEncoding(withAllowedCharacters: .alphanumerics.union(CharacterSet(charactersIn: "-._~"))) ?? text
    }

    /// Signs in through the login form.
    mutating func signIn(_ client: some TestClientProtocol, tenant: String, email: String, password: String = Fixtures.password) async throws
        -> TestResponse
    {
        try await submit(client, "/t/\(tenant)/login", from: "/t/\(tenant)/login", fields: [("email", email), ("password", password)])
    }
}

extension TestResponse {
    var text: String { String(buffer: body) }
}
