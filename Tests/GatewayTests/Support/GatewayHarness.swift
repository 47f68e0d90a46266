import Billing
import Crypto
import Foundation
import Logging
import MetricsTestKit
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import NIOSSL
import ServiceLifecycle
import Testing

@testable import Gateway

/// A running gateway on a loopback port with a hand-built snapshot, plus the pieces tests inspect.
struct GatewayHarness: Sendable {
    let port: Int
    let store: SnapshotStore
    let usage: InMemoryUsageSink
    let quotas: QuotaTracker
    /// This gateway's request, rejection and upstream-error metrics.
    let metrics: TestMetrics
    /// Begins the graceful shutdown (as SIGTERM does) without waiting for it.
    let beginShutdown: @Sendable () async -> Void
    /// The TLS listener's port, when one is configured.
    let tlsPort: Int?
    /// The per-event-loop state (upstream pools among it), for tests that look inside.
    let loops: LoopStates

    static func run(
        snapshot: GatewaySnapshot?, configure: @Sendable (inout GatewayServer.Configuration) -> Void = { _ in }, accessLogs: AccessLogs? = nil,
        _ body: @Sendable (GatewayHarness) async throws -> Void
    ) async throws {
        let store = SnapshotStore()
        if let snapshot { store.install(snapshot) }
        let usage = InMemoryUsageSink()
        let quotas = QuotaTracker(mode: .local)  // one process, no database: exact in-memory counts
        let metrics = TestMetrics()
        var configuration = GatewayServer.Configuration(host: "127.0.0.1", port: 0)
        configuration.metricsFactory = metrics
        configure(&configuration)
        let bound = AsyncStream<Int>.makeStream()
        let tlsPort = NIOLockedValueBox<Int?>(nil)
        let server = GatewayServer(
            configuration: configuration, store: store, quotas: quotas, usage: usage, logger: Logger(label: "test"),
            metricsText: { "# TYPE test_metric counter\ntest_metric 1\n" }, onBound: { bound.continuation.yield($0) },
            onTLSBound: { port in tlsPort.withLockedValue { $0 = port } }, accessLogs: accessLogs)
        // the sinks first: the group stops services in reverse order, so they flush after the gateway drained
        let services: [any Service] = accessLogs.map { [$0, server] } ?? [server]
        let group = ServiceGroup(services: services, logger: Logger(label: "test"))
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask { try await group.run() }
            var port = 0
            for await value in bound.stream {
                port = value
                break
            }
            do {
                try await body(
                    GatewayHarness(
                        port: port, store: store, usage: usage, quotas: quotas, metrics: metrics, beginShutdown: { await group.triggerGracefulShutdown() },
                        tlsPort: tlsPort.withLockedValue { $0 }, loops: server.shared.loops))
            } catch {
                await group.triggerGracefulShutdown()
                throw error
            }
            await group.triggerGracefulShutdown()
            try await tasks.waitForAll()
        }
    }

    /// Sends raw bytes and returns the parsed responses the gateway sent before closing.
    func send(_ raw: String) async throws -> [RawResponse] {
        RawResponse.parseAll(try await GatewayListenerTests.exchange(port: port, raw))
    }

    /// One request with `Connection: close`.
    func request(
        _ method: String = "GET", _ path: String, headers: [(String, String)] = [], body: String = "", host: String = "gateway.test"
    ) async throws -> RawResponse {
        var text = "\(method) \(path) HTTP/1.1\r\nHost: \(host)\r\nConnection: close\r\n"
        for (name, value) in headers { text += "\(name): \(value)\r\n" }
        if !body.isEmpty { text += "Content-Length: \(body.utf8.count)\r\n" }
        text += "\r\n" + body
        return try await send(text).first ?? RawResponse(status: 0, headers: [:], body: "")
    }
}

/// An HTTP/1.1 response read off the wire (Content-Length or chunked bodies).
struct RawResponse: Sendable {
    let status: Int
    let headers: [String: String]
    let body: String

    static func parseAll(_ text: String) -> [RawResponse] {
        var responses: [RawResponse] = []
        var rest = Substring(text)
        while let end = rest.range(of: "\r\n\r\n") {
            let lines = rest[..<end.lowerBound].components(separatedBy: "\r\n")
            let status = Int(lines.first?.split(separator: " ").dropFirst().first ?? "") ?? 0
            var headers: [String: String] = [:]
            for line in lines.dropFirst() {
                guard let colon = line.firstIndex(of: ":") else { continue }
                let name = line[..<colon].lowercased()
                let value = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
                headers[name] = headers[name].map { "\($0), \(value)" } ?? value
            }
            rest = rest[end.upperBound...]
            var body = ""
            if let length = headers["content-length"].flatMap(Int.init) {
                let bytes = Array(rest.utf8.prefix(length))
                body = String(decoding: bytes, as: UTF8.self)
                rest = rest.dropFirst(body.count)
            } else if headers["transfer-encoding"]?.contains("chunked") == true {
                // by bytes: "\r\n" is one Character, so counting characters would misplace chunks
                let bytes = Array(rest.utf8)
                var index = 0
                var payload: [UInt8] = []
                while let lineEnd = (index..<max(index, bytes.count - 1)).first(where: { bytes[$0] == 13 && bytes[$0 + 1] == 10 }),
                    let size = Int(String(decoding: bytes[index..<lineEnd], as: UTF8.self).split(separator: ";").first ?? "", radix: 16)
                {
                    index = lineEnd + 2
                    if size == 0 {
                        index = min(bytes.count, index + 2)
                        break
                    }
                    payload += bytes[index..<min(bytes.count, index + size)]
                    index = min(bytes.count, index + size + 2)
                }
                body = String(decoding: payload, as: UTF8.self)
                rest = Substring(String(decoding: bytes[index...], as: UTF8.self))
            }
            responses.append(RawResponse(status: status, headers: headers, body: body))
        }
        return responses
    }
}

/// A tenant with one API routed to test upstreams, an app with a subscription, an API key and a
/// signing key — the minimum world the data plane needs.
struct TestWorld: Sendable {
    static let apiKey = "tgk_test-key"
    static let issuer = "http://127.0.0.1:8080/t/demo"
    let tenantID = UUID()
    let apiID = UUID()
    let appID = UUID()
    let teamID = UUID()
    let subscriptionID = UUID()
    let planID = UUID()
    let key = P256.Signing.PrivateKey()

    func snapshot(
        targets: [UpstreamTargetConfig], state: Route.State = .published, rate: Int = 1000, burst: Int = 1000, quota: Int64? = nil,
        cors: CORSPolicy? = nil, ipRules: IPAccessRules = IPAccessRules(), methods: Set<String> = [], maxRequestBytes: Int? = nil,
        sunset: Date? = nil, revoked: Set<String> = [], subscribed: Bool = true, version: Int = 1, keyIDs: [String] = ["k1"],
        upstreamTLS: UpstreamTLS.Context? = nil, preAuth: [PreAuthPolicy] = [], windows: [PlanWindow] = [],
        requestTransform: RequestTransform? = nil, responseTransform: ResponseTransform? = nil, responseCache: ResponseCachePolicy? = nil,
        cacheHitsBillable: Bool = true, httpLog: HTTPLogSink? = nil, requestValidation: RequestValidationPolicy? = nil,
        webSocket: WebSocketConfig? = nil, transcoding: GRPCTranscoding? = nil
    ) -> GatewaySnapshot {
        let route = Route(
            apiID: apiID, slug: "echo", version: "v1", basePath: "/echo/v1", state: state, targets: targets, cors: cors, ipRules: ipRules,
            methods: methods, maxRequestBytes: maxRequestBytes, sunset: sunset, deprecatedAt: state == .deprecated ? Date(timeIntervalSince1970: 1_700_000_000) : nil,
            upstreamTLS: upstreamTLS, preAuth: preAuth, requestTransform: requestTransform, responseTransform: responseTransform,
            responseCache: responseCache, transcoding: transcoding, httpLog: httpLog, requestValidation: requestValidation, webSocket: webSocket)
        let grant = SubscriptionGrant(subscriptionID: subscriptionID, planID: planID, ratePerSecond: rate, burst: burst, monthlyQuota: quota, windows: windows,
            cacheHitsBillable: cacheHitsBillable)
        let app = AppGrant(id: appID, teamID: teamID, clientID: "tgc_demo", subscriptions: subscribed ? [apiID: grant] : [:])
        let tenant = TenantConfig(
            id: tenantID, slug: "demo", customHost: nil, issuer: Self.issuer, routes: [route],
            appsByKeyHash: [Data(SHA256.hash(data: Data(Self.apiKey.utf8))): APIKeyGrant(appID: appID, expiresAt: nil)], apps: [appID: app],
            signingKeys: Dictionary(uniqueKeysWithValues: keyIDs.map { ($0, key.publicKey) }), revokedTokenIDs: revoked)
        return GatewaySnapshot(version: version, loadedAt: Date(), tenants: [tenant], baseDomain: "localhost")
    }

    /// An ES256 access token as the portal issues them.
    func token(
        scope: String = "echo", audience: String = "urn:tollgate:gateway:demo", issuer: String = TestWorld.issuer, expiresIn: Double = 3600,
        jti: String = UUID().uuidString, alg: String = "ES256", kid: String = "k1", signer: P256.Signing.PrivateKey? = nil
    ) -> String {
        let now = Date().timeIntervalSince1970
        let header = #"{"alg":"\#(alg)","kid":"\#(kid)","typ":"at+jwt"}"#
        let payload =
            #"{"iss":"\#(issuer)","sub":"tgc_demo","aud":"\#(audience)","client_id":"tgc_demo","scope":"\#(scope)","jti":"\#(jti)","iat":\#(Int(now)),"exp":\#(Int(now + expiresIn))}"#
        let input = Self.b64(Array(header.utf8)) + "." + Self.b64(Array(payload.utf8))
        let signature = (try? (signer ?? key).signature(for: Data(input.utf8)).rawRepresentation) ?? Data()
        return input + "." + Self.b64(Array(signature))
    }

    static func b64(_ bytes: [UInt8]) -> String {
        Data(bytes).base64EncodedString().replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_").replacingOccurrences(of: "=", with: "")
    }
}

extension UpstreamTargetConfig {
    static func loopback(_ port: Int, weight: Int = 1) -> UpstreamTargetConfig {
        UpstreamTargetConfig(host: "127.0.0.1", port: port, pathPrefix: "", weight: weight)
    }
}
