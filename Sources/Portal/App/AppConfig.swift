import Foundation
import Gateway
import Logging
import NIOCore

/// Process configuration, read from environment variables (documented in README, "Configuration").
struct AppConfig: Sendable {
    var databaseURL: String
    var portalHost: String
    var portalPort: Int
    var gatewayHost: String
    var gatewayPort: Int
    var dataDirectory: String
    var secretKeyValue: String?
    var logLevel: Logger.Level
    var logFormat: LogFormat
    /// Tenants are also reachable as `{slug}.{baseDomain}` (e.g. `demo.localhost:8080`).
    var baseDomain: String
    var migrationsDirectory: String
    var templatesDirectory: String
    var sessionIdleTimeout: Duration
    var sessionAbsoluteTimeout: Duration
    /// Lifetime of OAuth2 access tokens (TOLLGATE_ACCESS_TOKEN_SECONDS).
    var accessTokenLifetime: Duration = .seconds(3600)
    /// The portal's public address (TOLLGATE_PUBLIC_URL, default `http://{PORTAL_ADDRESS}`): the base
    /// of every tenant's token issuer and every absolute link. Never taken from a request's Host.
    var publicURL: PublicBaseURL
    /// The gateway's public address as developers call it (TOLLGATE_GATEWAY_PUBLIC_URL, default
    /// `http://{GATEWAY_ADDRESS}`), shown on API pages.
    var gatewayPublicURL: PublicBaseURL
    /// Trust `X-Forwarded-For`/`-Proto` from a reverse proxy in front of the portal.
    var trustProxy: Bool
    /// Allow webhook targets on loopback and private networks (TOLLGATE_WEBHOOKS_ALLOW_PRIVATE=true);
    /// for tests and single-machine setups. Our own listeners stay refused.
    var webhooksAllowPrivateNetworks = false
    /// Event loops of the gateway (TOLLGATE_GATEWAY_THREADS); default one per core.
    var gatewayThreads: Int?
    /// Time a client has to send a whole request head on the portal listener, from the moment it
    /// may send one (TOLLGATE_REQUEST_HEAD_SECONDS, default 30; 408 and close after).
    var requestHeadTimeout: TimeAmount = .seconds(30)
    /// Time a client has to send a request body after its head (TOLLGATE_REQUEST_BODY_SECONDS, default 120).
    var requestBodyTimeout: TimeAmount = .seconds(120)
    /// How often draft invoices are recomputed from usage (TOLLGATE_DRAFT_REFRESH_SECONDS).
    var draftRefreshInterval: Duration = .seconds(300)
    /// At SIGTERM, how long the gateway lets requests under way finish (TOLLGATE_DRAIN_SECONDS, default 10).
    var drainTimeout: TimeAmount = .seconds(10)
    /// A pooled upstream connection idle this long is closed (TOLLGATE_UPSTREAM_IDLE_SECONDS, 1 to 3600 seconds, default 60).
    var upstreamIdleTimeout: TimeAmount = .seconds(60)
    /// The most bytes the meter's write-ahead spool holds (TOLLGATE_METER_SPOOL_CAP_BYTES, default 1 GiB).
    var meterSpoolCapBytes: Int64 = 1 << 30
    /// The gateway's TLS listener (GATEWAY_TLS_ADDRESS, host:port; unset: none).
    var gatewayTLSAddress: (host: String, port: Int)?
    /// The portal's TLS listener (PORTAL_TLS_ADDRESS, host:port; unset: none), same certificates.
    var portalTLSAddress: (host: String, port: Int)?
    /// Certificate and key pairs the TLS listener serves, chosen by SNI (TOLLGATE_TLS_DIR, default
    /// `<data dir>/tls`; see `CertificateStore`).
    var tlsDirectory: String?
    /// `Strict-Transport-Security` on TLS responses (TOLLGATE_HSTS, default `max-age=31536000`; `off`: none).
    var strictTransportSecurity: String? = "max-age=31536000"
    /// The gateway's listeners expect a PROXY protocol v1/v2 header from a TCP load balancer
    /// (TOLLGATE_PROXY_PROTOCOL=true); connections without one are closed.
    var gatewayProxyProtocol = false
    /// The gateway speaks HTTP/2 to clients that ask: prior knowledge on plaintext, ALPN `h2` on TLS (TOLLGATE_HTTP2, default true).
    var gatewayHTTP2 = true
    /// HTTP/2 clients may open WebSockets by extended CONNECT, RFC 8441 (TOLLGATE_HTTP2_WEBSOCKET, default true).
    var gatewayWebSocketOverHTTP2 = true
    /// The gateway's response cache holds at most this many bytes (TOLLGATE_CACHE_MAX_MB, 1 to 4096, default 64).
    var gatewayCacheMaxBytes = ResponseCacheStore.defaultMaxBytes
    /// An open WebSocket tunnel with no traffic for this long is closed (TOLLGATE_WEBSOCKET_IDLE_SECONDS, default 300).
    var webSocketIdleTimeout: TimeAmount = .seconds(300)
    /// A WebSocket tunnel is closed after this long (TOLLGATE_WEBSOCKET_MAX_SECONDS; unset: no limit).
    var webSocketMaxDuration: TimeAmount?
    /// The gateway's access-log sinks for every call: a JSON-lines file (TOLLGATE_ACCESS_LOG,
    /// reopened on SIGUSR1) and an HTTP collector (TOLLGATE_HTTP_LOG_URL, with
    /// TOLLGATE_HTTP_LOG_AUTHORIZATION, TOLLGATE_HTTP_LOG_BATCH_SIZE, TOLLGATE_HTTP_LOG_FLUSH_SECONDS).
    var accessLog = AccessLogs.Configuration()

    /// Where the TLS certificate pairs are read from.
    var certificateDirectory: String { tlsDirectory ?? dataDirectory + "/tls" }

    /// The webhook target rules for this process.
    var webhookTargets: WebhookTargetPolicy {
        WebhookTargetPolicy(allowPrivateNetworks: webhooksAllowPrivateNetworks, ownPorts: [portalPort, gatewayPort])
    }

    enum LogFormat: String, Sendable { case text, json }

    static let defaultDatabaseURL = "postgres://tollgate:tollgate@127.0.0.1:54329/tollgate"

    static func fromEnvironment(_ env: [String: String] = ProcessInfo.processInfo.environment) throws -> AppConfig {
        func address(_ name: String, _ fallback: String) throws -> (String, Int) {
            let value = env[name].flatMap { $0.isEmpty ? nil : $0 } ?? fallback
            guard let colon = value.lastIndex(of: ":"), let port = Int(value[value.index(after: colon)...]),
                (0...65535).contains(port)
            else { throw ConfigError.invalid(name, value, "expected host:port") }
            return (String(value[..<colon]), port)
        }
        let portal = try address("PORTAL_ADDRESS", "127.0.0.1:8080")
        let gateway = try address("GATEWAY_ADDRESS", "127.0.0.1:8000")
        let levelText = env["LOG_LEVEL"] ?? "info"
        guard let level = Logger.Level(rawValue: levelText) else {
            throw ConfigError.invalid("LOG_LEVEL", levelText, "one of trace, debug, info, notice, warning, error, critical")
        }
        let formatText = env["LOG_FORMAT"] ?? "text"
        guard let format = LogFormat(rawValue: formatText) else { throw ConfigError.invalid("LOG_FORMAT", formatText, "text or json") }
        func minutes(_ name: String, _ fallback: Int) throws -> Duration {
            guard let text = env[name] else { return .seconds(fallback * 60) }
            guard let value = Int(text), value > 0 else { throw ConfigError.invalid(name, text, "a positive number of minutes") }
            return .seconds(value * 60)
        }
        func publicURL(_ name: String, default fallback: PublicBaseURL) throws -> PublicBaseURL {
            guard let text = env[name], !text.isEmpty else { return fallback }
            do { return try PublicBaseURL(text) } catch { throw ConfigError.invalid(name, text, error.description) }
        }
        var config = AppConfig(
            databaseURL: env["DATABASE_URL"].flatMap { $0.isEmpty ? nil : $0 } ?? defaultDatabaseURL,
            portalHost: portal.0, portalPort: portal.1,
            gatewayHost: gateway.0, gatewayPort: gateway.1,
            dataDirectory: env["TOLLGATE_DATA_DIR"] ?? ".data",
            secretKeyValue: env["TOLLGATE_SECRET_KEY"],
            logLevel: level, logFormat: format,
            baseDomain: env["TOLLGATE_BASE_DOMAIN"] ?? "localhost",
            migrationsDirectory: env["TOLLGATE_MIGRATIONS_DIR"] ?? "migrations",
            templatesDirectory: env["TOLLGATE_TEMPLATES_DIR"] ?? "templates",
            sessionIdleTimeout: try minutes("TOLLGATE_SESSION_IDLE_MINUTES", 120),
            sessionAbsoluteTimeout: try minutes("TOLLGATE_SESSION_MAX_MINUTES", 7 * 24 * 60),
            publicURL: try publicURL("TOLLGATE_PUBLIC_URL", default: .listening(host: portal.0, port: portal.1)),
            gatewayPublicURL: try publicURL("TOLLGATE_GATEWAY_PUBLIC_URL", default: .listening(host: gateway.0, port: gateway.1)),
            trustProxy: env["TOLLGATE_TRUST_PROXY"] == "true")
        if let text = env["TOLLGATE_ACCESS_TOKEN_SECONDS"] {
            guard let seconds = Int(text), (60...86_400).contains(seconds) else {
                throw ConfigError.invalid("TOLLGATE_ACCESS_TOKEN_SECONDS", text, "60 to 86400 seconds")
            }
            config.accessTokenLifetime = .seconds(seconds)
        }
        config.webhooksAllowPrivateNetworks = env["TOLLGATE_WEBHOOKS_ALLOW_PRIVATE"] == "true"
        if let text = env["TOLLGATE_GATEWAY_THREADS"] {
            guard let threads = Int(text), (1...256).contains(threads) else { throw ConfigError.invalid("TOLLGATE_GATEWAY_THREADS", text, "1 to 256") }
            config.gatewayThreads = threads
        }
        for (name, keyPath) in [("TOLLGATE_REQUEST_HEAD_SECONDS", \AppConfig.requestHeadTimeout), ("TOLLGATE_REQUEST_BODY_SECONDS", \AppConfig.requestBodyTimeout)] {
            guard let text = env[name] else { continue }
            guard let seconds = Int(text), (1...3600).contains(seconds) else { throw ConfigError.invalid(name, text, "1 to 3600 seconds") }
            config[keyPath: keyPath] = .seconds(Int64(seconds))
        }
        if let text = env["TOLLGATE_DRAIN_SECONDS"] {
            guard let seconds = Int(text), (1...600).contains(seconds) else { throw ConfigError.invalid("TOLLGATE_DRAIN_SECONDS", text, "1 to 600 seconds") }
            config.drainTimeout = .seconds(Int64(seconds))
        }
        if let text = env["TOLLGATE_UPSTREAM_IDLE_SECONDS"] {
            guard let seconds = Int(text), (1...3600).contains(seconds) else {
                throw ConfigError.invalid("TOLLGATE_UPSTREAM_IDLE_SECONDS", text, "1 to 3600 seconds")
            }
            config.upstreamIdleTimeout = .seconds(Int64(seconds))
        }
        if let text = env["TOLLGATE_METER_SPOOL_CAP_BYTES"] {
            guard let bytes = Int64(text), (0...(Int64(1) << 40)).contains(bytes) else {
                throw ConfigError.invalid("TOLLGATE_METER_SPOOL_CAP_BYTES", text, "0 to 1099511627776 bytes")
            }
            config.meterSpoolCapBytes = bytes
        }
        if let text = env["GATEWAY_TLS_ADDRESS"], !text.isEmpty {
            let parsed = try address("GATEWAY_TLS_ADDRESS", text)
            guard (parsed.0, parsed.1) != (gateway.0, gateway.1) else {
                throw ConfigError.invalid("GATEWAY_TLS_ADDRESS", text, "an address other than GATEWAY_ADDRESS")
            }
            config.gatewayTLSAddress = (parsed.0, parsed.1)
        }
        if let text = env["PORTAL_TLS_ADDRESS"], !text.isEmpty {
            let parsed = try address("PORTAL_TLS_ADDRESS", text)
            let taken = [(portal.0, portal.1), (gateway.0, gateway.1)] + (config.gatewayTLSAddress.map { [($0.host, $0.port)] } ?? [])
            guard !taken.contains(where: { $0 == (parsed.0, parsed.1) }) else {
                throw ConfigError.invalid("PORTAL_TLS_ADDRESS", text, "an address no other listener uses")
            }
            config.portalTLSAddress = (parsed.0, parsed.1)
        }
        config.tlsDirectory = env["TOLLGATE_TLS_DIR"].flatMap { $0.isEmpty ? nil : $0 }
        if let text = env["TOLLGATE_PROXY_PROTOCOL"] {
            guard text == "true" || text == "false" else { throw ConfigError.invalid("TOLLGATE_PROXY_PROTOCOL", text, "true or false") }
            config.gatewayProxyProtocol = text == "true"
        }
        if let text = env["TOLLGATE_HTTP2"] {
            guard text == "true" || text == "false" else { throw ConfigError.invalid("TOLLGATE_HTTP2", text, "true or false") }
            config.gatewayHTTP2 = text == "true"
        }
        if let text = env["TOLLGATE_HTTP2_WEBSOCKET"] {
            guard text == "true" || text == "false" else { throw ConfigError.invalid("TOLLGATE_HTTP2_WEBSOCKET", text, "true or false") }
            config.gatewayWebSocketOverHTTP2 = text == "true"
        }
        if let text = env["TOLLGATE_CACHE_MAX_MB"] {
            guard let megabytes = Int(text), (1...4096).contains(megabytes) else { throw ConfigError.invalid("TOLLGATE_CACHE_MAX_MB", text, "1 to 4096") }
            config.gatewayCacheMaxBytes = megabytes << 20
        }
        if let text = env["TOLLGATE_WEBSOCKET_IDLE_SECONDS"] {
            guard let seconds = Int(text), (1...86_400).contains(seconds) else {
                throw ConfigError.invalid("TOLLGATE_WEBSOCKET_IDLE_SECONDS", text, "1 to 86400 seconds")
            }
            config.webSocketIdleTimeout = .seconds(Int64(seconds))
        }
        if let text = env["TOLLGATE_WEBSOCKET_MAX_SECONDS"], !text.isEmpty {
            guard let seconds = Int(text), (1...604_800).contains(seconds) else {
                throw ConfigError.invalid("TOLLGATE_WEBSOCKET_MAX_SECONDS", text, "1 to 604800 seconds")
            }
            config.webSocketMaxDuration = .seconds(Int64(seconds))
        }
        if let text = env["TOLLGATE_HSTS"] {
            // a header value: printable ASCII only, so it cannot split the response head
            guard text == "off" || (!text.isEmpty && text.count <= 200 && text.unicodeScalars.allSatisfy { $0.value >= 0x20 && $0.value < 0x7f }) else {
                throw ConfigError.invalid("TOLLGATE_HSTS", text, "a Strict-Transport-Security value such as max-age=31536000, or off")
            }
            config.strictTransportSecurity = text == "off" ? nil : text
        }
        try config.readAccessLog(env)
        if let text = env["TOLLGATE_DRAFT_REFRESH_SECONDS"] {
            guard let seconds = Int(text), (5...86_400).contains(seconds) else {
                throw ConfigError.invalid("TOLLGATE_DRAFT_REFRESH_SECONDS", text, "5 to 86400 seconds")
            }
            config.draftRefreshInterval = .seconds(seconds)
        }
        return config
    }

    /// The installation's access-log sinks from the environment. The collector URL and the
    /// authorization value are never repeated in an error (either may carry a secret).
    private mutating func readAccessLog(_ env: [String: String]) throws {
        if let path = env["TOLLGATE_ACCESS_LOG"], !path.isEmpty {
            guard path.hasPrefix("/"), !path.hasSuffix("/"), path.utf8.count <= 1024, !path.unicodeScalars.contains(where: { $0.value < 0x20 }) else {
                throw ConfigError.invalid("TOLLGATE_ACCESS_LOG", path, "an absolute path to a file such as /var/log/tollgate/access.jsonl")
            }
            accessLog.filePath = path
        }
        if let text = env["TOLLGATE_HTTP_LOG_URL"], !text.isEmpty {
            guard HTTPLogConfig.urlProblem(text) == nil, let url = URL(string: text) else {
                throw ConfigError.invalid("TOLLGATE_HTTP_LOG_URL", "(not shown)", "an http:// or https:// URL with a host and no credentials, query or fragment")
            }
            accessLog.httpURL = url
        }
        if let text = env["TOLLGATE_HTTP_LOG_AUTHORIZATION"], !text.isEmpty {
            // a header value: printable ASCII only, so it cannot split the request head
            guard text.utf8.count <= 4096, text.unicodeScalars.allSatisfy({ $0.value >= 0x20 && $0.value < 0x7f }) else {
                throw ConfigError.invalid("TOLLGATE_HTTP_LOG_AUTHORIZATION", "(not shown)", "an Authorization header value of printable ASCII")
            }
            accessLog.httpAuthorization = text
        }
        if let text = env["TOLLGATE_HTTP_LOG_BATCH_SIZE"] {
            guard let size = Int(text), HTTPLogConfig.batchSizeRange.contains(size) else {
                throw ConfigError.invalid("TOLLGATE_HTTP_LOG_BATCH_SIZE", text, "1 to 1000 records")
            }
            accessLog.httpLimits.batchSize = size
        }
        if let text = env["TOLLGATE_HTTP_LOG_FLUSH_SECONDS"] {
            guard let seconds = Int(text), HTTPLogConfig.flushSecondsRange.contains(seconds) else {
                throw ConfigError.invalid("TOLLGATE_HTTP_LOG_FLUSH_SECONDS", text, "1 to 60 seconds")
            }
            accessLog.httpLimits.flushNanoseconds = UInt64(seconds) * 1_000_000_000
        }
    }

    enum ConfigError: Error, CustomStringConvertible {
        case invalid(String, String, String)
        var description: String {
            switch self {
            case .invalid(let name, let value, let expected): "\(name)=\(value) is invalid: \(expected)"
            }
        }
    }
}
