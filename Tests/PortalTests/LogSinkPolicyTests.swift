import Foundation
import Hummingbird
import HummingbirdTesting
import PostgresNIO
import Testing

@testable import Gateway
@testable import Portal

/// Log sinks from the portal and the binary: the `http_log` policy through `PUT /apis/{id}/policies`
/// and the API page's form, the loader handing each such API the same sink across reloads, the
/// installation's sinks from the environment, and the real `tollgate gateway` process reopening
/// its access log on SIGUSR1.
@Suite struct LogSinkPolicyTests {
    static let sink = #"{"kind":"http_log","config":{"url":"https://logs.example.com/ingest","batch_size":50}}"#

    @Test func theInstallationSinksComeFromTheEnvironmentAndSecretsAreNeverRepeated() throws {
        // setup + act
        let none = try AppConfig.fromEnvironment([:])
        let both = try AppConfig.fromEnvironment([
            "TOLLGATE_ACCESS_LOG": "/var/log/tollgate/access.jsonl", "TOLLGATE_HTTP_LOG_URL": "https://logs.example.com/in",
            "TOLLGATE_HTTP_LOG_AUTHORIZATION": "Bearer s3cret-value", "TOLLGATE_HTTP_LOG_BATCH_SIZE": "20", "TOLLGATE_HTTP_LOG_FLUSH_SECONDS": "2",
        ])
        // assert
        #expect(none.accessLog.filePath == nil && none.accessLog.httpURL == nil)
        #expect(both.accessLog.filePath == "/var/log/tollgate/access.jsonl")
        #expect(both.accessLog.httpURL?.absoluteString == "https://logs.example.com/in")
        #expect(both.accessLog.httpAuthorization == "Bearer s3cret-value")
        #expect(both.accessLog.httpLimits.batchSize == 20)
        #expect(both.accessLog.httpLimits.flushNanoseconds == 2_000_000_000)
        for (name, bad) in [
            ("TOLLGATE_ACCESS_LOG", "relative.jsonl"), ("TOLLGATE_ACCESS_LOG", "/var/log/"), ("TOLLGATE_HTTP_LOG_URL", "https://user:pw-secret@logs.example.com/"),
            ("TOLLGATE_HTTP_LOG_URL", "ftp://logs.example.com/"), ("TOLLGATE_HTTP_LOG_AUTHORIZATION", "Bearer a\r\nX-Injected: pw-secret"),
            ("TOLLGATE_HTTP_LOG_BATCH_SIZE", "0"), ("TOLLGATE_HTTP_LOG_FLUSH_SECONDS", "61"),
        ] {
            do {
                _ = try AppConfig.fromEnvironment([name: bad])
                Issue.record("\(name) accepted")
            } catch {
                #expect(!"\(error)".contains("pw-secret"), "an error repeated a secret")
            }
        }
    }

    @Test func oneSinkPerAPIAndItsURLIsChecked() async throws {
        try await TestPortal.with { portal in
            try await portal.application().test(.router) { client in
                // setup
                let world = try await CatalogAPITests.world(portal)
                let id = try await PlanAPITests.publishedAPI(client, world)
                let path = "/t/acme/api/v1/apis/\(id)/policies"
                // act
                let twice = try await APITests.call(client, .put, path, token: world.provider, body: "{\"policies\":[\(Self.sink),\(Self.sink)]}")
                let credentials = try await APITests.call(
                    client, .put, path, token: world.provider,
                    body: #"{"policies":[{"kind":"http_log","config":{"url":"https://u:p@logs.example.com/","authorization":"Bearer x"}}]}"#)
                let good = try await APITests.call(client, .put, path, token: world.provider, body: "{\"policies\":[\(Self.sink)]}")
                // assert
                #expect(twice.status == .unprocessableContent)
                #expect((try APITests.json(twice)["errors"] as? [String: String])?.keys.sorted() == ["/policies/1/kind"])
                #expect(credentials.status == .unprocessableContent)
                #expect((try APITests.json(credentials)["errors"] as? [String: String])?.keys.sorted() == ["/policies/0/config/authorization", "/policies/0/config/url"])
                #expect(good.status == .ok)
                let read = try APITests.json(try await APITests.call(client, .get, path, token: world.provider))
                let stored = (read["policies"] as? [[String: Any]])?.first
                #expect(stored?["phase"] as? String == "after_call")
                #expect((stored?["config"] as? [String: Any])?["flush_seconds"] as? Int == 5)
                let chain = (read["chain"] as? [[String: Any]]) ?? []
                #expect(chain.last?["kind"] as? String == "http_log")
            }
        }
    }

    @Test func theLoaderKeepsAnAPIsSinkAcrossReloads() async throws {
        try await TestPortal.with { portal in
            try await portal.application().test(.router) { client in
                // setup
                let world = try await CatalogAPITests.world(portal)
                let id = try await PlanAPITests.publishedAPI(client, world)
                let path = "/t/acme/api/v1/apis/\(id)/policies"
                #expect(try await APITests.call(client, .put, path, token: world.provider, body: "{\"policies\":[\(Self.sink)]}").status == .ok)
                let logs = AccessLogs(configuration: .init(), logger: TestDatabase.logger)
                let loader = SnapshotLoader(
                    client: portal.database.client, baseDomain: "localhost", publicURL: portal.services.config.publicURL, logger: TestDatabase.logger,
                    clientLimiters: ClientLimiterRegistry(accessLogs: logs))
                // act
                let first = try await loader.load(version: 1)
                let again = try await loader.load(version: 2)
                // assert
                let route = { (snapshot: GatewaySnapshot) in snapshot.tenantsBySlug["acme"]?.routes.first { $0.apiID.uuidString == id.uppercased() } }
                let sink = try #require(route(first)?.httpLog)
                let apiID = try #require(route(first)?.apiID)
                #expect(sink.url.absoluteString == "https://logs.example.com/ingest")
                #expect(route(again)?.httpLog === sink)
                #expect(try await APITests.call(client, .put, path, token: world.provider, body: #"{"policies":[]}"#).status == .ok)
                let removed = try await loader.load(version: 3)
                #expect(removed.tenantsBySlug["acme"]?.routes.first { $0.apiID == apiID }?.httpLog == nil)
            }
        }
    }

    @Test func theAPIPageAddsASinkAndMarksABadURL() async throws {
        try await TestPortal.with { portal in
            try await portal.application().test(.router) { client in
                // setup
                let world = try await CatalogAPITests.world(portal)
                let id = try await PlanAPITests.publishedAPI(client, world)
                var provider = Browser()
                _ = try await provider.signIn(client, tenant: "acme", email: "pat@example.com")
                let page = "/t/acme/catalog/apis/\(id)"
                #expect(try await provider.get(client, page).text.contains("Add an HTTP log sink"))
                // act: credentials in the URL are refused, marked, and what was typed comes back
                let refused = try await provider.submit(
                    client, page + "/policies", from: page,
                    fields: [("op", "add"), ("kind", "http_log"), ("url", "https://me:pw@logs.example.com/"), ("batch_size", "10"), ("flush_seconds", "")])
                #expect(refused.status == .unprocessableContent)
                #expect(refused.text.contains("id=\"newlog-url-error\""))
                #expect(refused.text.contains("value=\"10\""))
                #expect(!refused.text.contains("me:pw"))  // credentials are not shown back
                let added = try await provider.submit(
                    client, page + "/policies", from: page,
                    fields: [("op", "add"), ("kind", "http_log"), ("url", "https://logs.example.com/in"), ("batch_size", "10"), ("flush_seconds", "3")])
                #expect(added.status == .seeOther)
                // assert
                let shown = try await provider.get(client, page)
                #expect(shown.text.contains("NDJSON batches of up to 10 records to https://logs.example.com/in, at least every 3 s"))
                #expect(shown.text.contains("After the call"))
                #expect(!shown.text.contains("Add an HTTP log sink"))  // one per API
            }
        }
    }
}

/// The installation's access log with the real binary: `tollgate gateway` writes every call to
/// TOLLGATE_ACCESS_LOG, and after the file is renamed (as logrotate does) SIGUSR1 makes it write
/// to a new file at the same path. Counts and contents are asserted, not times.
@Suite(.enabled(if: ProcessInfo.processInfo.environment["TOLLGATE_BIN"] != nil, "needs TOLLGATE_BIN (make test sets it)"))
struct AccessLogRotationTests {

    static func lines(_ path: String) -> [String] {
        ((try? String(contentsOfFile: path, encoding: .utf8)) ?? "").split(separator: "\n").map(String.init)
    }

    @Test func sigusr1ReopensTheFileAfterARename() async throws {
        try await QuotaLeaseEndToEndTests.withWorld { world in
            // setup
            let directory = FileManager.default.temporaryDirectory.appendingPathComponent("access-\(UUID().uuidString.prefix(8))").path
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            defer { try? FileManager.default.removeItem(atPath: directory) }
            let path = directory + "/access.jsonl"
            // a port the gateway binds itself (one picked beforehand could be taken before it bound)
            let (gateway, port, dataDir) = try await world.gateway(["TOLLGATE_ACCESS_LOG": path])
            defer {
                gateway.signal(SIGKILL)
                _ = gateway.wait()
                try? FileManager.default.removeItem(atPath: dataDir)
            }
            let secretPath = QuotaLeaseEndToEndTests.path + "?api_key=" + world.apiKey
            func call() async throws -> Int {
                let request = "GET \(secretPath) HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nX-API-Key: \(world.apiKey)\r\n\r\n"
                let response = try await RawHTTP.exchange(port: port, request)
                return Int(response.split(separator: " ").dropFirst().first ?? "") ?? 0
            }
            // act: two calls, rotate, two more
            #expect(try await call() == 200)
            #expect(try await call() == 200)
            try await GatewayIntegrationTests.eventually(seconds: 10) { Self.lines(path).count == 2 }
            try FileManager.default.moveItem(atPath: path, toPath: path + ".1")
            gateway.signal(SIGUSR1)
            try await GatewayIntegrationTests.eventually(seconds: 10) { FileManager.default.fileExists(atPath: path) }
            #expect(try await call() == 200)
            #expect(try await call() == 200)
            try await GatewayIntegrationTests.eventually(seconds: 10) { Self.lines(path).count == 2 }
            // assert: the rotated file kept its two lines, the new one has the next two, no secret anywhere
            #expect(Self.lines(path + ".1").count == 2)
            #expect(gateway.poll() == nil)  // SIGUSR1 did not end the process
            let all = Self.lines(path + ".1") + Self.lines(path)
            for line in all {
                let record = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
                #expect(record["route"] as? String == QuotaLeaseEndToEndTests.path)
                #expect(record["status"] as? Int == 200)
                #expect(record["client_id"] is String)
            }
            #expect(!all.contains { $0.contains(world.apiKey) })
            let mode = try #require(try FileManager.default.attributesOfItem(atPath: path)[.posixPermissions] as? Int)
            #expect(mode & 0o137 == 0)  // at most 0640
        }
    }
}
