import Foundation
import Hummingbird
import HummingbirdTesting
import Testing

@testable import Portal

@Suite struct CatalogValidationTests {
    @Test(arguments: [
        ("/echo/v1", nil as String?), ("/echo", nil), ("/a.b/c_d/~e", nil), ("/", "segment"), ("echo", "segment"), ("/Echo", "lowercase"),
        ("/echo//v1", "lowercase"), ("/echo/../admin", "lowercase"), ("/t/demo", "reserved"), ("/healthz", "reserved"), ("/metrics/x", "reserved"),
        ("/.well-known/jwks.json", "reserved"), ("/tea", nil),
    ])
    func basePaths(path: String, problemContains: String?) {
        let problem = BasePath.problem(BasePath.normalize(path))
        if let problemContains {
            #expect(problem?.contains(problemContains) == true, "\(path): \(problem ?? "nil")")
        } else {
            #expect(problem == nil, "\(path): \(problem ?? "")")
        }
    }

    @Test func basePathTrailingSlashIsNormalised() {
        #expect(BasePath.normalize(" /echo/v1/ ") == "/echo/v1")
    }

    @Test(arguments: [("v1", true), ("2026-11", true), ("1.2.3", true), ("", false), ("-v1", false), ("v 1", false), (String(repeating: "v", count: 21), false)])
    func versions(text: String, valid: Bool) {
        #expect(APIVersion.isValid(text) == valid)
    }

    @Test(arguments: [
        (UpstreamTarget(url: "http://127.0.0.1:9000", weight: 1), true), (UpstreamTarget(url: "https://api.example.com/base", weight: 100), true),
        (UpstreamTarget(url: "ftp://x", weight: 1), false), (UpstreamTarget(url: "http://x?y=1", weight: 1), false),
        (UpstreamTarget(url: "http://user:pw@x", weight: 1), false), (UpstreamTarget(url: "http://x", weight: 0), false),
        (UpstreamTarget(url: "http://x", weight: 101), false), (UpstreamTarget(url: "not a url", weight: 1), false),
    ])
    func targets(target: UpstreamTarget, valid: Bool) {
        #expect((UpstreamURL.problem(target) == nil) == valid)
    }

    @Test func newAPIReportsEveryField() {
        do {
            _ = try NewAPI.validated(
                teamID: nil, name: "", slug: "-bad-", version: "", description: nil, basePath: "/t/x", visibility: "secret", allowedTeamIDs: [], targets: [])
            Issue.record("expected validation errors")
        } catch let error as AppError {
            #expect(Set(error.fieldErrors.keys) == ["team_id", "name", "slug", "version", "base_path", "visibility", "targets"])
        } catch {
            Issue.record("unexpected \(error)")
        }
    }
}

/// Catalog through the JSON API: provider teams create and publish; consumers see what is published.
@Suite struct CatalogAPITests {
    struct World {
        let provider: String
        let developer: String
        let providerTeam: UUID
        let consumerTeam: UUID
    }

    static func world(_ portal: TestPortal) async throws -> World {
        let tenant = try await Fixtures.tenant(portal.database, slug: "acme")
        let provider = try await Fixtures.user(portal.database, tenant: tenant, email: "pat@example.com", roles: [.provider])
        let developer = try await Fixtures.user(portal.database, tenant: tenant, email: "dev@example.com", roles: [.developer])
        let teams = portal.services.teamService
        let providerTeam = try await teams.create(
            tenant: tenant, actor: Principal(user: provider, teamRoles: [:], scopes: nil), NewTeam(name: "Makers", slug: "makers"), clientIP: nil)
        let consumerTeam = try await teams.create(
            tenant: tenant, actor: Principal(user: developer, teamRoles: [:], scopes: nil), NewTeam(name: "Users", slug: "users"), clientIP: nil)
        return World(
            provider: try await APITests.token(portal, tenant: tenant, user: provider, scopes: [.read, .write]),
            developer: try await APITests.token(portal, tenant: tenant, user: developer, scopes: [.read, .write]),
            providerTeam: providerTeam.id, consumerTeam: consumerTeam.id)
    }

    static func createBody(team: UUID, path: String = "/echo/v1", version: String = "v1", visibility: String = "public", allowed: [UUID] = []) -> String {
        let allowedJSON = allowed.map { "\"\($0)\"" }.joined(separator: ",")
        return """
            {"team_id":"\(team)","name":"Echo","version":"\(version)","base_path":"\(path)","visibility":"\(visibility)",
             "allowed_team_ids":[\(allowedJSON)],"targets":[{"url":"http://127.0.0.1:9000","weight":3}],"description":"Says it back."}
            """
    }

    @Test func providerCreatesDraftThatConsumersSeeOnlyOncePublished() async throws {
        try await TestPortal.with { portal in
            let world = try await Self.world(portal)
            try await portal.application().test(.router) { client in
                // setup
                let created = try await APITests.call(client, .post, "/t/acme/api/v1/apis", token: world.provider, body: Self.createBody(team: world.providerTeam))
                #expect(created.status == .created)
                let api = try APITests.json(created)
                let id = api["id"] as? String ?? ""
                #expect(api["state"] as? String == "draft")
                #expect(api["slug"] as? String == "echo")
                // a draft is invisible to consumers
                #expect(try await APITests.call(client, .get, "/t/acme/api/v1/apis/\(id)", token: world.developer).status == .notFound)
                // act
                let published = try await APITests.call(
                    client, .post, "/t/acme/api/v1/apis/\(id)/transitions", token: world.provider, body: #"{"transition":"publish"}"#)
                // assert
                #expect(try APITests.json(published)["state"] as? String == "published")
                let list = try APITests.json(try await APITests.call(client, .get, "/t/acme/api/v1/apis", token: world.developer))
                #expect((list["items"] as? [[String: Any]])?.compactMap { $0["id"] as? String } == [id])
                // consumers cannot change the lifecycle; illegal moves are conflicts
                let denied = try await APITests.call(
                    client, .post, "/t/acme/api/v1/apis/\(id)/transitions", token: world.developer, body: #"{"transition":"retire"}"#)
                #expect(denied.status == .forbidden)
                let illegal = try await APITests.call(
                    client, .post, "/t/acme/api/v1/apis/\(id)/transitions", token: world.provider, body: #"{"transition":"undeprecate"}"#)
                #expect(illegal.status == .conflict)
                #expect(illegal.text.contains("published"))
            }
        }
    }

    @Test func consumersCannotCreateAndBasePathsAreUnique() async throws {
        try await TestPortal.with { portal in
            let world = try await Self.world(portal)
            try await portal.application().test(.router) { client in
                let denied = try await APITests.call(client, .post, "/t/acme/api/v1/apis", token: world.developer, body: Self.createBody(team: world.consumerTeam))
                #expect(denied.status == .forbidden)
                let first = try await APITests.call(client, .post, "/t/acme/api/v1/apis", token: world.provider, body: Self.createBody(team: world.providerTeam))
                #expect(first.status == .created)
                let samePath = try await APITests.call(
                    client, .post, "/t/acme/api/v1/apis", token: world.provider, body: Self.createBody(team: world.providerTeam, version: "v2"))
                #expect(samePath.status == .conflict)
                let v2 = try await APITests.call(
                    client, .post, "/t/acme/api/v1/apis", token: world.provider, body: Self.createBody(team: world.providerTeam, path: "/echo/v2", version: "v2"))
                #expect(v2.status == .created)
                let sameVersion = try await APITests.call(
                    client, .post, "/t/acme/api/v1/apis", token: world.provider, body: Self.createBody(team: world.providerTeam, path: "/echo/v3", version: "v2"))
                #expect(sameVersion.status == .conflict)
            }
        }
    }

    @Test func restrictedAPIsAreVisibleOnlyToListedTeams() async throws {
        try await TestPortal.with { portal in
            let world = try await Self.world(portal)
            try await portal.application().test(.router) { client in
                for (path, allowed) in [("/private/a", [world.consumerTeam]), ("/private/b", [world.providerTeam])] {
                    let created = try APITests.json(
                        try await APITests.call(
                            client, .post, "/t/acme/api/v1/apis", token: world.provider,
                            body: Self.createBody(team: world.providerTeam, path: path, version: path.hasSuffix("a") ? "a" : "b", visibility: "restricted", allowed: allowed)))
                    let id = created["id"] as? String ?? ""
                    _ = try await APITests.call(client, .post, "/t/acme/api/v1/apis/\(id)/transitions", token: world.provider, body: #"{"transition":"publish"}"#)
                }
                let seen = try APITests.json(try await APITests.call(client, .get, "/t/acme/api/v1/apis", token: world.developer))
                #expect((seen["items"] as? [[String: Any]])?.compactMap { $0["base_path"] as? String } == ["/private/a"])
            }
        }
    }

    @Test func catalogPagesForAnonymousAndProviders() async throws {
        try await TestPortal.with { portal in
            let world = try await Self.world(portal)
            try await portal.application().test(.router) { client in
                let created = try APITests.json(
                    try await APITests.call(client, .post, "/t/acme/api/v1/apis", token: world.provider, body: Self.createBody(team: world.providerTeam)))
                let id = created["id"] as? String ?? ""
                var visitor = Browser()
                #expect(!(try await visitor.get(client, "/t/acme/catalog")).text.contains("Echo"))
                var provider = Browser()
                _ = try await provider.signIn(client, tenant: "acme", email: "pat@example.com")
                let detail = try await provider.get(client, "/t/acme/catalog/apis/\(id)")
                #expect(detail.text.contains("http://127.0.0.1:9000"))
                let publish = try await provider.submit(
                    client, "/t/acme/catalog/apis/\(id)/transitions", from: "/t/acme/catalog/apis/\(id)", fields: [("transition", "publish")])
                #expect(publish.status == .seeOther)
                let listing = try await visitor.get(client, "/t/acme/catalog")
                #expect(listing.text.contains("Echo"))
                // anonymous visitors never see upstream targets
                #expect(!(try await visitor.get(client, "/t/acme/catalog/apis/\(id)")).text.contains("127.0.0.1:9000"))
                let form = try await provider.submit(
                    client, "/t/acme/catalog/apis", from: "/t/acme/catalog/new",
                    fields: [
                        ("team_id", world.providerTeam.uuidString), ("name", "Weather"), ("version", "v1"), ("base_path", "/weather"),
                        ("target_url", "gopher://nope"), ("target_weight", "1"), ("visibility", "public"),
                    ])
                #expect(form.status == .unprocessableContent)
                #expect(form.text.contains("Targets are http://"))
            }
        }
    }
}
