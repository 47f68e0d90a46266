import Billing
import Crypto
import Foundation
import NIOHTTP1

/// What the gateway does with a request head, decided synchronously against one snapshot.
public enum RequestDecision {
    /// Answer locally (an error, a preflight, a refusal).
    case respond(LocalResponse)
    /// Proxy to the route's upstream.
    case forward(ForwardPlan)
}

/// A response the gateway writes itself.
public struct LocalResponse {
    public var status: HTTPResponseStatus
    public var headers: [(String, String)]
    public var body: String
    public var rejection: UsageEvent.Rejection?
    /// Who it was for, when known (for metering).
    public var tenant: TenantConfig?
    public var route: Route?
    public var app: AppGrant?
    public var grant: SubscriptionGrant?
    /// Close the connection after answering (the request body cannot be trusted to be drained).
    public var close = false
    /// The refusal may not stand once a reload lands (a token signed by a key the snapshot does
    /// not hold yet): the proxy decides the request again after the reload, once.
    public var decideAgainAfterReload = false

    static func problem(
        _ status: HTTPResponseStatus, _ title: String, _ detail: String, rejection: UsageEvent.Rejection?, headers: [(String, String)] = []
    ) -> LocalResponse {
        let body =
            "{\"type\":\"about:blank\",\"title\":\(JSONText.quote(title)),\"status\":\(status.code),\"detail\":\(JSONText.quote(detail))}"
        return LocalResponse(
            status: status, headers: [("Content-Type", "application/problem+json")] + headers, body: body, rejection: rejection)
    }
}

/// Everything the proxy needs once a request is admitted. A class: the proxy reads it from its
/// exchange several times per call, and each copy of a struct retained every field.
public final class ForwardPlan {
    public let tenant: TenantConfig
    public let route: Route
    public let app: AppGrant
    public let grant: SubscriptionGrant
    /// Path and query for the upstream, without the target's prefix.
    public let upstreamURI: String
    /// Headers added to the response (rate limits, deprecation, CORS; a response transformation's
    /// results are appended when the response head arrives, before a client writer reads them).
    public internal(set) var responseHeaders: [(String, String)]
    /// Whether a quota unit was reserved (settled when the outcome is known).
    public let quotaReserved: Bool

    init(
        tenant: TenantConfig, route: Route, app: AppGrant, grant: SubscriptionGrant, upstreamURI: String, responseHeaders: [(String, String)],
        quotaReserved: Bool
    ) {
        self.tenant = tenant
        self.route = route
        self.app = app
        self.grant = grant
        self.upstreamURI = upstreamURI
        self.responseHeaders = responseHeaders
        self.quotaReserved = quotaReserved
    }
}

/// The per-request rules in order: route, lifecycle, client address, CORS preflight, methods,
/// body size, the provider's pre-authentication policies, credentials, subscription and scope,
/// rate limit, quota.
public struct RequestGate {
    public let rateLimiter: RateLimiter
    public let quotas: QuotaTracker
    public let tokenCache: TokenCache
    public let defaultMaxRequestBytes: Int
    /// Told when a token names a key the snapshot lacks (the store then reloads, rate-limited).
    public let onUnknownKey: (@Sendable () -> Void)?

    public init(
        rateLimiter: RateLimiter, quotas: QuotaTracker, tokenCache: TokenCache, defaultMaxRequestBytes: Int, onUnknownKey: (@Sendable () -> Void)? = nil
    ) {
        self.rateLimiter = rateLimiter
        self.quotas = quotas
        self.tokenCache = tokenCache
        self.defaultMaxRequestBytes = defaultMaxRequestBytes
        self.onUnknownKey = onUnknownKey
    }

    public func decide(
        head: HTTPRequestHead, clientAddress: [UInt8]?, snapshot: GatewaySnapshot, now: Date, monotonicNanos: UInt64
    ) -> RequestDecision {
        let uri = head.uri
        let queryStart = uri.utf8.firstIndex(of: UInt8(ascii: "?")) ?? uri.endIndex
        let fullPath = uri[uri.startIndex..<queryStart]
        guard let (tenant, path) = snapshot.resolveTenant(host: head.headers.first(name: "host"), path: fullPath),
            let route = tenant.route(for: path)
        else {
            return .respond(.problem(.notFound, "No route", "No published API matches this path.", rejection: nil))
        }
        func refuse(_ response: LocalResponse) -> RequestDecision {
            var response = response
            response.tenant = tenant
            response.route = route
            return .respond(response)
        }
        if route.state == .retired {
            return refuse(.problem(.gone, "API retired", "\(route.slug) \(route.version) is retired; move to a newer version.", rejection: .retired))
        }
        if !route.ipRules.isEmpty, !route.ipRules.permits(clientAddress ?? []) {
            return refuse(.problem(.forbidden, "Address not allowed", "Calls from your address are not allowed for this API.", rejection: .ipDenied))
        }
        let origin = head.headers.first(name: "origin")
        if head.method == .OPTIONS, let cors = route.cors, let origin, head.headers.contains(name: "access-control-request-method") {
            return refuse(Self.preflight(cors: cors, origin: origin))
        }
        if !route.methods.isEmpty, !route.methods.contains(head.method.rawValue) {
            return refuse(
                .problem(
                    .methodNotAllowed, "Method not allowed", "\(route.slug) accepts \(route.methods.sorted().joined(separator: ", ")).",
                    rejection: .methodNotAllowed, headers: [("Allow", route.methods.sorted().joined(separator: ", "))]))
        }
        let limit = route.maxRequestBytes ?? defaultMaxRequestBytes
        if let length = head.headers.first(name: "content-length").flatMap({ Int($0) }), length > limit {
            var response = LocalResponse.problem(.payloadTooLarge, "Request too large", "The body is larger than \(limit) bytes.", rejection: .tooLarge)
            response.close = true
            return refuse(response)
        }
        // The provider's pre-authentication policies: after the built-in rules above, before any
        // credential is looked at, so a flood of bad credentials is refused without verifying them.
        var clientLimits: PreAuthOutcome.Limits?
        if !route.preAuth.isEmpty {
            switch Self.runPreAuth(route.preAuth, head: head, clientAddress: clientAddress, monotonicNanos: monotonicNanos) {
            case .refuse(let response): return refuse(response)
            case .pass(let limits): clientLimits = limits
            }
        }

        // Credentials.
        let realm = tenant.bearerRealm
        var app: AppGrant?
        var token: VerifiedToken?
        if let authorization = head.headers.first(name: "authorization") {
            // byte-wise: counting the Characters of a 600-byte token per request showed in the profile
            guard authorization.utf8.count > 7, authorization.hasASCIIPrefix(caseInsensitively: "bearer ") else {
                return refuse(
                    .problem(.unauthorized, "Invalid credentials", "Use Authorization: Bearer <access token>.", rejection: .unauthenticated,
                        headers: [("WWW-Authenticate", realm + ", error=\"invalid_request\"")]))
            }
            let text = authorization[authorization.utf8.index(authorization.startIndex, offsetBy: 7)...].drop { $0 == " " }
            let seconds = now.timeIntervalSince1970
            if let cached = tokenCache.lookup(text, now: seconds), cached.audience == tenant.audience {
                token = cached
            } else {
                switch AccessTokenVerifier.verify(text, tenant: tenant, now: seconds) {
                case .success(let verified):
                    tokenCache.store(text, verified, now: seconds)
                    token = verified
                case .failure(let failure):
                    var refusal = Self.invalidToken(realm, failure.description)
                    if failure == .unknownKey {
                        onUnknownKey?()
                        refusal.decideAgainAfterReload = true
                    }
                    return refuse(refusal)
                }
            }
            guard let token else { return refuse(Self.invalidToken(realm, "The access token is invalid.")) }
            if tenant.revokedTokenIDs.contains(token.jti) { return refuse(Self.invalidToken(realm, "The access token was revoked.")) }
            app = tenant.appsByClientID[token.clientID].flatMap { tenant.apps[$0] }
            if app == nil { return refuse(Self.invalidToken(realm, "The token's client no longer exists.")) }
        } else if let key = head.headers.first(name: "x-api-key") {
            let hash = Data(SHA256.hash(data: Data(key.utf8)))
            guard let grant = tenant.appsByKeyHash[hash], grant.expiresAt.map({ $0 > now }) ?? true, let owner = tenant.apps[grant.appID] else {
                return refuse(
                    .problem(.unauthorized, "Invalid API key", "The API key is unknown, revoked or expired.", rejection: .unauthenticated,
                        headers: [("WWW-Authenticate", realm)]))
            }
            app = owner
        } else {
            return refuse(
                .problem(.unauthorized, "Credentials required", "Send Authorization: Bearer <access token> or X-API-Key.", rejection: .unauthenticated,
                    headers: [("WWW-Authenticate", realm)]))
        }
        guard let app else { return refuse(Self.invalidToken(realm, "Unknown client.")) }

        // Subscription and scope.
        guard let grant = app.subscriptions[route.apiID] else {
            var response = LocalResponse.problem(
                .forbidden, "Not subscribed", "The app has no active subscription to \(route.slug) \(route.version).", rejection: .forbidden)
            response.app = app
            return refuse(response)
        }
        if let token, !token.scopes.contains(route.slug) {
            var response = LocalResponse.problem(
                .forbidden, "Scope missing", "The access token's scope does not include \(route.slug); request a new token.", rejection: .forbidden)
            response.app = app
            response.grant = grant
            return refuse(response)
        }

        // Limits: the rate limit first, so a refused call never reserves quota.
        var headers: [(String, String)] = []
        headers.reserveCapacity(2)
        var policy = grant.ratePolicy
        let (rate, reset) = rateLimiter.take(subscription: grant.subscriptionID, ratePerSecond: grant.ratePerSecond, burst: grant.burst, now: monotonicNanos)
        // the RateLimit field, made once with room for the windows' and the quota's items
        // (interpolated, then appended to, it was two allocations per call)
        var limits = ""
        switch rate {
        case .allowed(let remaining):
            limits.reserveCapacity(96)
            limits += "\"rate\";r="
            limits += String(remaining)
            limits += ";t="
            limits += String(reset)
        case .refused(let retry):
            var response = LocalResponse.problem(
                .tooManyRequests, "Rate limit exceeded", "The plan allows \(grant.ratePerSecond) requests per second (burst \(grant.burst)).",
                rejection: .rateLimited,
                headers: [("Retry-After", String(retry)), ("RateLimit-Policy", policy), ("RateLimit", "\"rate\";r=0;t=\(retry)")])
            response.app = app
            response.grant = grant
            return refuse(response)
        }
        // The plan's minute, hour and day windows: every one must have room.
        if !grant.windows.isEmpty {
            var refusal: (window: PlanWindow, retry: Int, pending: Bool)?
            switch rateLimiter.windows.admit(subscription: grant.subscriptionID, tenant: tenant.id, windows: grant.windows, nowSeconds: Self.utcSeconds(now)) {
            case .allowed(let items): limits += items
            case .refused(let window, let retry): refusal = (window, retry, false)
            case .pending(let window, let retry): refusal = (window, retry, true)
            }
            if let (window, retry, pending) = refusal {
                let month = UTCMonth(containing: now)
                var response = LocalResponse.problem(
                    .tooManyRequests, pending ? "Rate limit momentarily unavailable" : "Rate limit exceeded",
                    pending
                        ? "This gateway is waiting for its share of the plan's \(window.limit) requests per \(window.span.name); retry shortly."
                        : "The plan allows \(window.limit) requests per \(window.span.name) (UTC); retry after \(retry) s.",
                    rejection: .rateLimited,
                    headers: [
                        ("Retry-After", String(retry)), ("RateLimit-Policy", grant.policy(monthDays: month.days)),
                        ("RateLimit", "\"\(window.span.name)\";r=0;t=\(retry)"),
                    ])
                response.app = app
                response.grant = grant
                return refuse(response)
            }
        }
        var reserved = false
        if let quota = grant.monthlyQuota {
            let month = UTCMonth(containing: now)
            let untilNextMonth = max(1, Int((TimeInterval(month.next.startSeconds) - now.timeIntervalSince1970).rounded(.up)))
            policy = grant.policy(monthDays: month.days)
            switch quotas.admit(subscription: grant.subscriptionID, tenant: tenant.id, quota: quota, period: month.text) {
            case .allowed(let remaining):
                reserved = true
                // unknown right after an idle lease was given back: left out rather than guessed
                if let remaining { limits += ", \"quota\";r=\(remaining);t=\(untilNextMonth)" }
            case .exhausted:
                if !grant.windows.isEmpty { rateLimiter.windows.release(subscription: grant.subscriptionID, windows: grant.windows, nowSeconds: Self.utcSeconds(now)) }
                var response = LocalResponse.problem(
                    .tooManyRequests, "Quota exhausted", "The plan's \(quota) requests for this month are used up.", rejection: .quotaExceeded,
                    headers: [("Retry-After", String(untilNextMonth)), ("RateLimit-Policy", policy), ("RateLimit", "\"quota\";r=0;t=\(untilNextMonth)")])
                response.app = app
                response.grant = grant
                return refuse(response)
            case .pending(let retry):
                if !grant.windows.isEmpty { rateLimiter.windows.release(subscription: grant.subscriptionID, windows: grant.windows, nowSeconds: Self.utcSeconds(now)) }
                // Not "exhausted": this gateway's lease is used up and the next block has not come
                // (or other gateways hold the rest of the month); the database did not say it is gone.
                var response = LocalResponse.problem(
                    .tooManyRequests, "Quota momentarily unavailable", "This gateway is waiting for its share of the plan's \(quota) monthly requests; retry shortly.",
                    rejection: .quotaExceeded,
                    headers: [("Retry-After", String(retry)), ("RateLimit-Policy", policy), ("RateLimit", "\"quota\";r=0;t=\(retry)")])
                response.app = app
                response.grant = grant
                return refuse(response)
            }
        }
        if !grant.windows.isEmpty { rateLimiter.windows.confirm(subscription: grant.subscriptionID, windows: grant.windows) }
        if let clientLimits {
            // several policies in one field (RFC 9651 list): the client's first, then the plan's
            headers.append(("RateLimit-Policy", clientLimits.policy + ", " + policy))
            headers.append(("RateLimit", clientLimits.state + ", " + limits))
        } else {
            headers.append(("RateLimit-Policy", policy))
            headers.append(("RateLimit", limits))
        }
        if route.state == .deprecated {
            headers.append(("Deprecation", "@\(Int((route.deprecatedAt ?? now).timeIntervalSince1970))"))
            if let sunset = route.sunset { headers.append(("Sunset", HTTPDate.format(sunset))) }
        }
        if let cors = route.cors, let origin, let allowed = cors.allowOrigin(origin) {
            headers.append(("Access-Control-Allow-Origin", allowed))
            if allowed != "*" { headers.append(("Vary", "Origin")) }
            if cors.allowCredentials { headers.append(("Access-Control-Allow-Credentials", "true")) }
            if !cors.exposedHeaders.isEmpty { headers.append(("Access-Control-Expose-Headers", cors.exposedHeaders.joined(separator: ", "))) }
        }
        let rest = path[path.utf8.index(path.startIndex, offsetBy: route.basePath.utf8.count)...]
        var upstreamURI = rest.isEmpty ? "/" : String(rest)
        if queryStart != uri.endIndex { upstreamURI += uri[queryStart...] }
        return .forward(
            ForwardPlan(
                tenant: tenant, route: route, app: app, grant: grant, upstreamURI: upstreamURI, responseHeaders: headers, quotaReserved: reserved))
    }

    static func utcSeconds(_ date: Date) -> Int64 { Int64(date.timeIntervalSince1970.rounded(.down)) }

    static func invalidToken(_ realm: String, _ description: String) -> LocalResponse {
        .problem(
            .unauthorized, "Invalid access token", description, rejection: .unauthenticated,
            headers: [("WWW-Authenticate", realm + ", error=\"invalid_token\", error_description=\"\(description)\"")])
    }

    static func preflight(cors: CORSPolicy, origin: String) -> LocalResponse {
        var headers: [(String, String)] = [("Vary", "Origin")]
        if let allowed = cors.allowOrigin(origin) {
            headers += [
                ("Access-Control-Allow-Origin", allowed), ("Access-Control-Allow-Methods", cors.allowedMethods.joined(separator: ", ")),
                ("Access-Control-Allow-Headers", cors.allowedHeaders.joined(separator: ", ")), ("Access-Control-Max-Age", String(cors.maxAgeSeconds)),
            ]
            if cors.allowCredentials { headers.append(("Access-Control-Allow-Credentials", "true")) }
        }
        return LocalResponse(status: .noContent, headers: headers, body: "", rejection: nil)
    }

}

enum JSONText {
    static func quote(_ text: String) -> String {
        var out = "\""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            default:
                if scalar.value < 0x20 { out += String(format: "\\u%04x", scalar.value) } else { out.unicodeScalars.append(scalar) }
            }
        }
        return out + "\""
    }
}

/// IMF-fixdate (RFC 9110) for `Sunset`.
enum HTTPDate {
    static func format(_ date: Date) -> String {
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "GMT")
        formatter.dateFormat = "EEE, dd MMM yyyy HH:mm:ss 'GMT'"
        return formatter.string(from: date)
    }
}

extension ForwardPlan {
    /// `response` as the answer to this admitted call when the gateway answers it itself (no
    /// healthy target, a gRPC API called wrongly, a method it does not translate): the quota unit
    /// taken for the call is given back, and the answer carries the call's tenant, route, app and
    /// subscription, for its rate-limit headers and its metering.
    func refusal(_ response: LocalResponse, quotas: QuotaTracker) -> LocalResponse {
        if quotaReserved { quotas.settle(subscription: grant.subscriptionID, billable: false) }
        var response = response
        response.tenant = tenant
        response.route = route
        response.app = app
        response.grant = grant
        return response
    }

    /// The answer when no target's circuit admits the call (503, counted as `upstream_unavailable`).
    func noHealthyTarget(quotas: QuotaTracker) -> LocalResponse {
        refusal(
            LocalResponse.problem(
                .serviceUnavailable, "Upstream unavailable", "No healthy upstream target for \(route.slug) right now.", rejection: .upstreamUnavailable),
            quotas: quotas)
    }

    /// How an admitted call to a gRPC target goes on, decided here for the HTTP/1 and the HTTP/2
    /// client alike, so neither can answer differently: refused (validation fails closed; a JSON
    /// call to a method the API does not translate), translated (JSON to an API with a descriptor
    /// set), or relayed as it is (`clientSpeaksGRPC`: an HTTP/2 `application/grpc` call; or any
    /// call to an API without a descriptor set — which an HTTP/1.1 client cannot make, see
    /// `http2Required`).
    func gRPCForwarding(httpMethod: String, clientSpeaksGRPC: Bool, quotas: QuotaTracker) -> GRPCForwarding {
        // a gRPC API cannot be validated against an OpenAPI document (the portal refuses the
        // policy for one); should its targets have become gRPC since, its calls fail closed
        if route.requestValidation != nil { return .answer(refusal(RequestValidationPolicy.unavailable, quotas: quotas)) }
        guard !clientSpeaksGRPC, let transcoding = route.transcoding else { return .relay }
        guard let call = transcoding.resolve(httpMethod: httpMethod, uri: upstreamURI) else {
            return .answer(
                refusal(
                    LocalResponse.problem(
                        .notFound, "No such method",
                        "\(route.slug) translates POST {base path}/{package.Service}/{Method} with a JSON body, and the routes of its methods' google.api.http options.",
                        rejection: nil), quotas: quotas))
        }
        return .translate(call, transcoding)
    }

    /// The answer to an HTTP/1.1 client whose call would have to be relayed to a gRPC upstream:
    /// gRPC needs HTTP/2 end to end (the quota unit is given back).
    func http2Required(quotas: QuotaTracker) -> LocalResponse {
        refusal(
            LocalResponse.problem(.httpVersionNotSupported, "HTTP/2 required", "\(route.slug) is a gRPC API: call it over HTTP/2.", rejection: nil),
            quotas: quotas)
    }
}

/// What becomes of an admitted call to a gRPC target (see `ForwardPlan.gRPCForwarding`).
enum GRPCForwarding {
    /// The gateway answers it itself; the quota unit is already given back.
    case answer(LocalResponse)
    /// A JSON call, translated to this method of the API's descriptor set.
    case translate(GRPCTranscoding.Call, GRPCTranscoding)
    /// Passed to the upstream as an HTTP/2 stream.
    case relay
}
