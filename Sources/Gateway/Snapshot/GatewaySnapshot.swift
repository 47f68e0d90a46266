import Crypto
import Foundation
import NIOSSL

/// Everything the gateway decides with, loaded from Postgres and never mutated: a request reads
/// one snapshot from start to end; a reload builds a new one and swaps it in.
///
/// Each tenant's part is one immutable `TenantConfig`: a reload of one tenant builds that part
/// alone and swaps it in with `replacingTenant`, and the other parts are shared, not copied.
public struct GatewaySnapshot: Sendable {
    public var version: Int
    /// When the last full load read it (a tenant's reload does not change it).
    public var loadedAt: Date
    public var tenantsBySlug: [String: TenantConfig]
    /// Lowercased custom host → tenant slug.
    public var tenantsByHost: [String: String]
    public var baseDomain: String

    public init(version: Int, loadedAt: Date, tenants: [TenantConfig], baseDomain: String) {
        self.version = version
        self.loadedAt = loadedAt
        self.baseDomain = baseDomain
        tenantsBySlug = Dictionary(tenants.map { ($0.slug, $0) }, uniquingKeysWith: { a, _ in a })
        // A custom host that breaks the rule (stored before it was enforced) routes nothing: it would
        // take another tenant's or the platform's own traffic.
        tenantsByHost = Dictionary(
            tenants.compactMap { t in
                t.customHost.flatMap { try? CustomHostRule.check($0, baseDomain: baseDomain).get() }.map { ($0, t.slug) }
            }, uniquingKeysWith: { a, _ in a })
    }

    /// A copy in which tenant `id`'s part is `tenant` (nil: the tenant is gone); every other
    /// tenant's part is the same object as in `self`. The host index is rebuilt: the tenant's
    /// custom host or slug may be what changed.
    public func replacingTenant(_ id: UUID, with tenant: TenantConfig?) -> GatewaySnapshot {
        // the reloaded part first: if a stale part still holds its slug or host (a slug moved from
        // one tenant to another, the other's notification not handled yet), the fresh one wins
        let tenants = (tenant.map { [$0] } ?? []) + tenantsBySlug.values.filter { $0.id != id }
        return GatewaySnapshot(version: version, loadedAt: loadedAt, tenants: tenants, baseDomain: baseDomain)
    }

    /// The tenant with this id (notifications name tenants by id); a scan, made off the hot path.
    public func tenant(id: UUID) -> TenantConfig? { tenantsBySlug.values.first { $0.id == id } }

    /// How much the snapshot holds, for the size gauges.
    public struct Size: Sendable, Equatable {
        public var tenants = 0
        public var apis = 0
        public var apps = 0
        public var apiKeys = 0
        public var subscriptions = 0
    }

    public var size: Size {
        var size = Size(tenants: tenantsBySlug.count)
        for tenant in tenantsBySlug.values {
            size.apis += tenant.routes.count
            size.apps += tenant.apps.count
            size.apiKeys += tenant.appsByKeyHash.count
            for app in tenant.apps.values { size.subscriptions += app.subscriptions.count }
        }
        return size
    }

    public static let empty = GatewaySnapshot(version: 0, loadedAt: .distantPast, tenants: [], baseDomain: "localhost")

    /// Tenant by `Host` (custom host or `{slug}.{base domain}`), else by the `/t/{slug}` prefix.
    /// Returns the tenant and the path with the prefix removed.
    public func resolveTenant(host: String?, path: Substring) -> (TenantConfig, Substring)? {
        // Byte-wise: Character-based counting and splitting showed in the gateway's profile.
        if let host, !host.isEmpty {
            let bytes = host.utf8
            let name = bytes.firstIndex(of: UInt8(ascii: ":")).map { host[..<$0] } ?? Substring(host)
            let key = name.utf8.contains { $0 >= 0x41 && $0 <= 0x5a } ? name.lowercased() : String(name)
            if !tenantsByHost.isEmpty, let slug = tenantsByHost[key], let tenant = tenantsBySlug[slug] { return (tenant, path) }
            let suffix = baseDomain.utf8
            let keyBytes = key.utf8
            if keyBytes.count > suffix.count + 1, keyBytes.suffix(suffix.count).elementsEqual(suffix) {
                let dot = keyBytes.index(keyBytes.endIndex, offsetBy: -suffix.count - 1)
                if keyBytes[dot] == UInt8(ascii: "."), let tenant = tenantsBySlug[String(key[..<dot])] { return (tenant, path) }
            }
        }
        guard path.utf8.starts(with: "/t/".utf8) else { return nil }
        let rest = path[path.utf8.index(path.startIndex, offsetBy: 3)...]
        let slugEnd = rest.utf8.firstIndex(of: UInt8(ascii: "/")) ?? rest.endIndex
        guard let tenant = tenantsBySlug[String(rest[..<slugEnd])] else { return nil }
        return (tenant, rest[slugEnd...])
    }
}

/// A tenant's routes, credentials, subscriptions and token keys.
public final class TenantConfig: Sendable {
    public let id: UUID
    public let slug: String
    public let customHost: String?
    public let audience: String
    /// The one `iss` this tenant's tokens carry (see `PublicBaseURL`).
    public let issuer: String
    /// `WWW-Authenticate`'s challenge for this tenant, made once.
    let bearerRealm: String
    /// The tenant's identity header line for the upstream, made once.
    let identityHeaderLine: String
    /// Longest base path first, so the first match is the longest.
    public let routes: [Route]
    /// SHA-256 of an API key → app (and the key's expiry, checked per request).
    public let appsByKeyHash: [Data: APIKeyGrant]
    public let appsByClientID: [String: UUID]
    public let apps: [UUID: AppGrant]
    public let signingKeys: [String: P256.Signing.PublicKey]
    public let revokedTokenIDs: Set<String>

    public init(
        id: UUID, slug: String, customHost: String?, issuer: String, routes: [Route], appsByKeyHash: [Data: APIKeyGrant], apps: [UUID: AppGrant],
        signingKeys: [String: P256.Signing.PublicKey], revokedTokenIDs: Set<String>
    ) {
        self.id = id
        self.slug = slug
        self.customHost = customHost
        self.issuer = issuer
        self.audience = "urn:tollgate:gateway:\(slug)"
        self.bearerRealm = "Bearer realm=\"\(slug)\""
        self.identityHeaderLine = "X-Tollgate-Tenant: \(slug)\r\n"
        self.routes = routes.sorted { $0.basePath.count > $1.basePath.count }
        self.appsByKeyHash = appsByKeyHash
        self.apps = apps
        self.appsByClientID = Dictionary(apps.values.map { ($0.clientID, $0.id) }, uniquingKeysWith: { a, _ in a })
        self.signingKeys = signingKeys
        self.revokedTokenIDs = revokedTokenIDs
    }

    /// A copy with more revoked token ids (incremental update from a NOTIFY).
    public func revoking(_ jtis: [String]) -> TenantConfig {
        TenantConfig(
            id: id, slug: slug, customHost: customHost, issuer: issuer, routes: routes, appsByKeyHash: appsByKeyHash, apps: apps,
            signingKeys: signingKeys, revokedTokenIDs: revokedTokenIDs.union(jtis))
    }

    /// The route whose base path is the longest prefix of `path` at a segment boundary.
    public func route(for path: Substring) -> Route? {
        let bytes = path.utf8
        for route in routes where bytes.starts(with: route.basePath.utf8) {
            let next = bytes.dropFirst(route.basePath.utf8.count).first
            if next == nil || next == UInt8(ascii: "/") || next == UInt8(ascii: "?") { return route }
        }
        return nil
    }
}

/// One API version as the gateway routes it. Classes, not structs, for this and the other
/// per-request snapshot values: a decision hands them on several times per request, and copying
/// a struct of arrays and strings retained each of them every time (retain/release was ~5 % of
/// the gateway's CPU).
public final class Route: Sendable {
    public enum State: String, Sendable { case published, deprecated, retired }

    public let apiID: UUID
    public let slug: String
    public let version: String
    public let basePath: String
    public let state: State
    public let targets: [UpstreamTargetConfig]
    public let cors: CORSPolicy?
    public let ipRules: IPAccessRules
    public let methods: Set<String>
    public let maxRequestBytes: Int?
    public let sunset: Date?
    /// When it was deprecated (the `Deprecation` header's date).
    public let deprecatedAt: Date?
    /// How its `https://` targets are reached (made once per trust configuration, see `UpstreamTLS`);
    /// nil when it has none, or when the API's CA bundle is unusable (its https targets then answer 502).
    public let upstreamTLS: UpstreamTLS.Context?
    /// For an API whose upstream protocol is `h2` with `https://` targets: the same trust and client
    /// identity without ALPN `h2`, for the HTTP/1.1 connection a WebSocket handshake gets to its
    /// target (an HTTP/2 stream cannot switch protocols). Nil for every other API.
    public let upgradeTLS: UpstreamTLS.Context?
    /// The provider's pre-authentication policies in chain order, run after the built-in ones
    /// (address rules, CORS preflight, methods, body size) and before any credential check.
    /// Empty for most APIs: the gate then pays one `isEmpty` check.
    public let preAuth: [PreAuthPolicy]
    /// The provider's request and response transformations (every such policy of the chain, in
    /// order); nil for most APIs, which then pay one nil check per call.
    public let requestTransform: RequestTransform?
    public let responseTransform: ResponseTransform?
    /// The API's response cache; nil (one check per call) for APIs without.
    public let responseCache: ResponseCachePolicy?
    /// The API's request validation, compiled from its document; nil (one check per call) for
    /// APIs without.
    public let requestValidation: RequestValidationPolicy?
    /// HTTP/JSON → gRPC translation, from the descriptor set of a gRPC API; nil for every other
    /// API (checked only where a gRPC target was picked, never on the HTTP/1.1 proxy path).
    public let transcoding: GRPCTranscoding?
    /// The API's own access-log collector (`http_log`); nil (one check per call, and no record
    /// built) for APIs without.
    public let httpLog: HTTPLogSink?
    /// The API's own WebSocket tunnel limits (`websocket`); nil for APIs without, whose tunnels
    /// keep the installation's. Read only when a tunnel opens.
    public let webSocket: WebSocketConfig?

    public init(
        apiID: UUID, slug: String, version: String, basePath: String, state: State, targets: [UpstreamTargetConfig], cors: CORSPolicy?,
        ipRules: IPAccessRules, methods: Set<String>, maxRequestBytes: Int?, sunset: Date?, deprecatedAt: Date? = nil, upstreamTLS: UpstreamTLS.Context? = nil,
        preAuth: [PreAuthPolicy] = [], requestTransform: RequestTransform? = nil, responseTransform: ResponseTransform? = nil,
        responseCache: ResponseCachePolicy? = nil, transcoding: GRPCTranscoding? = nil, httpLog: HTTPLogSink? = nil,
        requestValidation: RequestValidationPolicy? = nil, webSocket: WebSocketConfig? = nil, upgradeTLS: UpstreamTLS.Context? = nil
    ) {
        self.webSocket = webSocket
        self.upgradeTLS = upgradeTLS
        self.transcoding = transcoding
        self.responseCache = responseCache
        self.httpLog = httpLog
        self.requestValidation = requestValidation
        self.preAuth = preAuth
        self.requestTransform = requestTransform
        self.responseTransform = responseTransform
        self.upstreamTLS = upstreamTLS
        self.deprecatedAt = deprecatedAt
        self.apiID = apiID
        self.slug = slug
        self.version = version
        self.basePath = basePath
        self.state = state
        // TLS targets carry the identity of the settings they are reached with (the pool and breaker
        // key), here where route and settings meet, so no way of building a route can forget it;
        // without usable settings they get one no connection is ever opened under
        self.targets = targets.map { $0.trusting(upstreamTLS?.identity ?? "unusable") }
        self.cors = cors
        self.ipRules = ipRules
        self.methods = methods
        self.maxRequestBytes = maxRequestBytes
        self.sunset = sunset
    }
}

/// An upstream target: where to connect, whether over TLS, and the path prefix to put before the
/// forwarded path.
public struct UpstreamTargetConfig: Sendable, Hashable {
    public let host: String
    public let port: Int
    public let pathPrefix: String
    public let weight: Int
    /// `https://` and `grpcs://` targets: TLS with the route's `upstreamTLS` context.
    public let tls: Bool
    /// `grpc://` and `grpcs://` targets: calls are relayed as HTTP/2 streams (prior knowledge on
    /// cleartext, ALPN `h2` over TLS), so gRPC's framing and trailers pass.
    public let http2: Bool
    /// An `http://` or `https://` target of an API whose upstream protocol is `h2`: its calls go
    /// through the exchange core like HTTP/1.1 ones, each as a stream of one multiplexed HTTP/2
    /// connection (prior knowledge on cleartext, ALPN `h2` over TLS). Decided per snapshot.
    public let h2: Bool
    /// Names the target's connections and circuit breaker: the `address`, plus for a TLS target
    /// `#` and the identity of the route's TLS settings (`UpstreamTLS.Context.identity`), so two
    /// APIs with the same `https://host:port` but different CA bundles or client certificates never
    /// share a connection (nor a breaker that one API's failed handshakes opened for the other).
    /// Stored, not computed: the proxy uses it several times per call; a plaintext target's key is
    /// its address, as before.
    public let key: String
    /// The identity of the TLS settings the target is reached with (nil for plaintext targets and
    /// for a target not yet given to a `Route`, which sets it).
    public let tlsIdentity: String?
    /// The `Host` header the upstream gets: the host, with the port unless it is the scheme's default.
    public let hostHeader: String

    public init(
        host: String, port: Int, pathPrefix: String, weight: Int, tls: Bool = false, http2: Bool = false, h2: Bool = false, tlsIdentity: String? = nil
    ) {
        self.host = host
        self.port = port
        self.pathPrefix = pathPrefix
        self.weight = weight
        self.tls = tls
        self.http2 = http2
        self.h2 = h2 && !http2
        self.tlsIdentity = tls ? tlsIdentity : nil
        let address = Self.address(host: host, port: port, tls: tls, http2: http2, h2: self.h2)
        self.key = self.tlsIdentity.map { "\(address)#\($0)" } ?? address
        self.hostHeader = port == (tls ? 443 : 80) ? host : "\(host):\(port)"
    }

    /// The network target, `host:port` (`https://host:port` for TLS, `grpc://`, `grpcs://`, `h2c://`,
    /// `h2+https://`): what metrics name. Made on demand (a circuit's state change), never per call.
    public var address: String { Self.address(host: host, port: port, tls: tls, http2: http2, h2: h2) }

    private static func address(host: String, port: Int, tls: Bool, http2: Bool, h2: Bool) -> String {
        let scheme = http2 ? (tls ? "grpcs://" : "grpc://") : (h2 ? (tls ? "h2+https://" : "h2c://") : (tls ? "https://" : ""))
        return "\(scheme)\(host):\(port)"
    }

    /// The same target reached with TLS settings of that identity (a plaintext target is unchanged).
    public func trusting(_ identity: String) -> UpstreamTargetConfig {
        guard tls, tlsIdentity != identity else { return self }
        return UpstreamTargetConfig(host: host, port: port, pathPrefix: pathPrefix, weight: weight, tls: tls, http2: http2, h2: h2, tlsIdentity: identity)
    }

    /// Parses `http://`, `https://`, `grpc://` or `grpcs://` `host[:port]/prefix`.
    public init?(url: String, weight: Int) {
        guard let components = URLComponents(string: url), let scheme = components.scheme?.lowercased(),
            ["http", "https", "grpc", "grpcs"].contains(scheme), let host = components.host, !host.isEmpty
        else { return nil }
        let path = components.path
        let tls = scheme == "https" || scheme == "grpcs"
        self.init(
            host: host, port: components.port ?? (tls ? 443 : 80), pathPrefix: path.hasSuffix("/") ? String(path.dropLast()) : path,
            weight: max(1, weight), tls: tls, http2: scheme.hasPrefix("grpc"))
    }

    /// The same target reached with `upstreamProtocol` (gRPC targets are HTTP/2 whatever it says).
    public func speaking(_ upstreamProtocol: UpstreamProtocol) -> UpstreamTargetConfig {
        guard !http2, h2 != (upstreamProtocol == .h2) else { return self }
        return UpstreamTargetConfig(host: host, port: port, pathPrefix: pathPrefix, weight: weight, tls: tls, h2: upstreamProtocol == .h2, tlsIdentity: tlsIdentity)
    }

    /// Whether the connection speaks HTTP/2 (its TLS offers ALPN `h2`).
    public var speaksHTTP2: Bool { http2 || h2 }
}

/// How an API's `http://`/`https://` targets are called (`apis.upstream_protocol`): HTTP/1.1, or
/// HTTP/2 (`h2`: prior knowledge — h2c — for `http://`, ALPN `h2` for `https://`). gRPC targets are
/// HTTP/2 regardless.
public enum UpstreamProtocol: String, Sendable, CaseIterable, Codable {
    case http1
    case h2
}

/// An active API key.
public struct APIKeyGrant: Sendable {
    public let appID: UUID
    public let expiresAt: Date?

    public init(appID: UUID, expiresAt: Date?) {
        self.appID = appID
        self.expiresAt = expiresAt
    }
}

/// What an app may call: its active subscriptions, by API.
public final class AppGrant: Sendable {
    public let id: UUID
    public let teamID: UUID
    public let clientID: String
    public let subscriptions: [UUID: SubscriptionGrant]
    /// The identity header lines for the upstream, made once per snapshot instead of per request.
    let identityHeaderLines: String

    public init(id: UUID, teamID: UUID, clientID: String, subscriptions: [UUID: SubscriptionGrant]) {
        self.id = id
        self.teamID = teamID
        self.clientID = clientID
        self.subscriptions = subscriptions
        identityHeaderLines =
            "X-Tollgate-App-Id: \(id.lowercasedText)\r\nX-Tollgate-Client-Id: \(clientID)\r\nX-Tollgate-Team-Id: \(teamID.lowercasedText)\r\n"
    }
}

/// An active subscription with the plan terms the gateway enforces.
public final class SubscriptionGrant: Sendable, Equatable {
    public let subscriptionID: UUID
    public let planID: UUID
    public let ratePerSecond: Int
    public let burst: Int
    /// nil: unlimited.
    public let monthlyQuota: Int64?
    /// The plan's minute, hour and day limits, in span order (empty for most plans).
    public let windows: [PlanWindow]
    /// Whether a call answered from the response cache is billable (the plan's choice).
    public let cacheHitsBillable: Bool

    /// The identity header lines for the upstream, made once per snapshot.
    let identityHeaderLines: String
    /// The `RateLimit-Policy` header's text, made once per snapshot: the rate item, then the
    /// quota item for a month of 28…31 days (its window is the month).
    let ratePolicy: String
    private let policiesByMonthLength: [String]

    /// The whole `RateLimit-Policy` value for a month of `days` days.
    func policy(monthDays days: Int) -> String {
        monthlyQuota == nil ? ratePolicy : policiesByMonthLength[min(max(days, 28), 31) - 28]
    }

    public static func == (lhs: SubscriptionGrant, rhs: SubscriptionGrant) -> Bool {
        lhs.subscriptionID == rhs.subscriptionID && lhs.planID == rhs.planID && lhs.ratePerSecond == rhs.ratePerSecond && lhs.burst == rhs.burst
            && lhs.monthlyQuota == rhs.monthlyQuota && lhs.windows == rhs.windows && lhs.cacheHitsBillable == rhs.cacheHitsBillable
    }

    public init(
        subscriptionID: UUID, planID: UUID, ratePerSecond: Int, burst: Int, monthlyQuota: Int64?, windows: [PlanWindow] = [], cacheHitsBillable: Bool = true
    ) {
        self.windows = windows
        self.cacheHitsBillable = cacheHitsBillable
        self.subscriptionID = subscriptionID
        self.planID = planID
        identityHeaderLines =
            "X-Tollgate-Plan-Id: \(planID.lowercasedText)\r\nX-Tollgate-Subscription-Id: \(subscriptionID.lowercasedText)\r\n"
        self.ratePerSecond = ratePerSecond
        self.burst = burst
        self.monthlyQuota = monthlyQuota
        // several policies in one field: the rate, the plan's windows, then (below) the month's quota
        let rate = "\"rate\";q=\(burst);w=1" + windows.map { ", \"\($0.span.name)\";q=\($0.limit);w=\($0.span.rawValue)" }.joined()
        ratePolicy = rate
        policiesByMonthLength = monthlyQuota.map { quota in (28...31).map { "\(rate), \"quota\";q=\(quota);w=\($0 * 86_400)" } } ?? []
    }
}

extension UUID {
    /// Lowercase canonical text, formatted without Foundation's printf-based `uuidString` and
    /// without intermediate arrays (the gateway makes one per request id).
    var lowercasedText: String {
        withUnsafeBytes(of: uuid) { bytes in
            String(unsafeUninitializedCapacity: 36) { buffer in
                var index = 0
                for position in 0..<16 {
                    if position == 4 || position == 6 || position == 8 || position == 10 {
                        buffer[index] = UInt8(ascii: "-")
                        index += 1
                    }
                    let byte = bytes[position]
                    buffer[index] = Self.hexDigit(byte >> 4)
                    buffer[index + 1] = Self.hexDigit(byte & 0x0f)
                    index += 2
                }
                return index
            }
        }
    }

    private static func hexDigit(_ nibble: UInt8) -> UInt8 { nibble < 10 ? UInt8(ascii: "0") + nibble : UInt8(ascii: "a") + nibble - 10 }
}
