import Foundation
import Testing

@testable import Portal

@Suite struct ValidationTests {
    @Test(arguments: [
        ("demo", true), ("a", true), ("a-b-c", true), ("9lives", true), ("-demo", false), ("demo-", false), ("Demo", false),
        ("de_mo", false), ("", false), (String(repeating: "a", count: 40), true), (String(repeating: "a", count: 41), false), ("démo", false),
    ])
    func slugs(text: String, valid: Bool) {
        #expect(Slug.isValid(text) == valid)
    }

    @Test func slugFromName() {
        #expect(Slug.from("Demo Devs") == "demo-devs")
        #expect(Slug.from("  ACME, Inc.!! ") == "acme-inc")
    }

    @Test(arguments: [
        ("dev@example.com", true), ("a@b.co", true), ("no-at.example.com", false), ("two@@example.com", false), ("sp ace@example.com", false),
        ("x@localhost", false), ("x@.example.com", false), ("nul\u{0}@example.com", false),
    ])
    func emails(text: String, valid: Bool) {
        #expect(Email.isValid(text) == valid)
    }

    @Test func newTenantCollectsEveryFieldError() {
        do {
            _ = try NewTenant.validated(
                slug: "Bad Slug", name: "", currency: "XYZ", signupPolicy: "sometimes", customHost: "bad host", baseDomain: "localhost")
            Issue.record("expected a validation error")
        } catch let error as AppError {
            #expect(Set(error.fieldErrors.keys) == ["slug", "name", "currency", "signup_policy", "custom_host"])
            #expect(error.status == .unprocessableContent)
        } catch {
            Issue.record("unexpected \(error)")
        }
    }

    @Test func newTenantDefaults() throws {
        let tenant = try NewTenant.validated(slug: "acme", name: "ACME", currency: nil, signupPolicy: nil, customHost: "", baseDomain: "localhost")
        #expect(tenant.currency == "USD")
        #expect(tenant.signupPolicy == .open)
        #expect(tenant.customHost == nil)
    }

    @Test func accountRejectsShortPasswordAndMismatch() {
        #expect(throws: AppError.self) { try NewAccount.validated(email: "a@b.co", displayName: "A", password: "short") }
        #expect(throws: AppError.self) {
            try NewAccount.validated(email: "a@b.co", displayName: "A", password: "long enough pw", confirmation: "different pw")
        }
        #expect(throws: AppError.self) { try NewAccount.validated(email: "a@b.co", displayName: "A\u{0}", password: "long enough pw") }
    }

    @Test func accountNormalisesEmail() throws {
        let account = try NewAccount.validated(email: "  Dev@Example.COM ", displayName: " Dev ", password: "long enough pw")
        #expect(account.email == "dev@example.com")
        #expect(account.displayName == "Dev")
    }

    @Test func formDataDecodesRepeatsAndEscapes() {
        let form = FormData(urlencoded: "a=1&roles=admin&roles=finance&name=Ada+L%C3%B6vel%26ace&empty=&flag")
        #expect(form["a"] == "1")
        #expect(form.values("roles") == ["admin", "finance"])
        #expect(form["name"] == "Ada Lövel&ace")
        #expect(form["empty"] == "")
        #expect(form["flag"] == "")
        #expect(form["missing"] == nil)
    }

    @Test func tokenInputValidation() throws {
        #expect(throws: AppError.self) { try TokenService.NewToken.validated(name: "ci", scopes: [], expiresInDays: nil) }
        #expect(throws: AppError.self) { try TokenService.NewToken.validated(name: "ci", scopes: ["root"], expiresInDays: nil) }
        #expect(throws: AppError.self) { try TokenService.NewToken.validated(name: "ci", scopes: ["read"], expiresInDays: 0) }
        #expect(throws: AppError.self) { try TokenService.NewToken.validated(name: "ci", scopes: ["read"], expiresInDays: 367) }
        let ok = try TokenService.NewToken.validated(name: " ci ", scopes: ["read", "write", "read"], expiresInDays: 366)
        #expect(ok.name == "ci")
        #expect(ok.scopes == [.read, .write])
    }

    @Test func databaseURLParsing() throws {
        let url = try DatabaseURL("postgres://app:p%40ss@db.internal:6543/market?sslmode=require")
        #expect(url.host == "db.internal")
        #expect(url.port == 6543)
        #expect(url.username == "app")
        #expect(url.password == "p@ss")
        #expect(url.database == "market")
        #expect(url.requireTLS)
        #expect(throws: DatabaseURL.ParseError.self) { try DatabaseURL("mysql://x@y/z") }
        #expect(throws: DatabaseURL.ParseError.self) { try DatabaseURL("postgres://host-without-user/db") }
    }

    @Test func configRejectsBadAddresses() {
        #expect(throws: AppConfig.ConfigError.self) { try AppConfig.fromEnvironment(["PORTAL_ADDRESS": "nohost"]) }
        #expect(throws: AppConfig.ConfigError.self) { try AppConfig.fromEnvironment(["GATEWAY_ADDRESS": "127.0.0.1:99999"]) }
        #expect(throws: AppConfig.ConfigError.self) { try AppConfig.fromEnvironment(["LOG_LEVEL": "loud"]) }
    }

    @Test func configDefaults() throws {
        let config = try AppConfig.fromEnvironment([:])
        #expect(config.portalPort == 8080)
        #expect(config.gatewayPort == 8000)
        #expect(config.databaseURL == AppConfig.defaultDatabaseURL)
        #expect(config.dataDirectory == ".data")
        #expect(config.upstreamIdleTimeout == .seconds(60))
    }

    @Test(arguments: ["0", "-1", "3601", "1.5", "", " 60", "60s", "99999999999999999999"])
    func configRejectsAnUpstreamIdleTimeoutOutOfBounds(text: String) {
        #expect(throws: AppConfig.ConfigError.self) { try AppConfig.fromEnvironment(["TOLLGATE_UPSTREAM_IDLE_SECONDS": text]) }
    }

    @Test func configTakesAnUpstreamIdleTimeoutInSeconds() throws {
        #expect(try AppConfig.fromEnvironment(["TOLLGATE_UPSTREAM_IDLE_SECONDS": "1"]).upstreamIdleTimeout == .seconds(1))
        #expect(try AppConfig.fromEnvironment(["TOLLGATE_UPSTREAM_IDLE_SECONDS": "3600"]).upstreamIdleTimeout == .seconds(3600))
    }
}
