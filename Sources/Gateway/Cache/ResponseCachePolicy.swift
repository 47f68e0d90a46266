import Foundation
import NIOHTTP1

/// A route's `response_cache` policy as the gateway runs it: the configuration, the process's
/// store and the fingerprint of the API's configuration in this snapshot (entries of another
/// fingerprint are never served, and are dropped when a load sees the change).
public final class ResponseCachePolicy: Sendable {
    public let config: ResponseCacheConfig
    public let store: ResponseCacheStore
    public let fingerprint: Int
    let varyLowercased: [String]

    public init(config: ResponseCacheConfig, store: ResponseCacheStore, fingerprint: Int) {
        self.config = config
        self.store = store
        self.fingerprint = fingerprint
        varyLowercased = config.vary.map { $0.lowercased() }
    }

    /// What the cache does with a request, decided after the gate admitted it.
    enum Lookup {
        case hit(CachedResponse)
        /// Not found: forward, and store the response under this key if it may be kept.
        case miss(key: String)
        /// Not looked up (`fwd=request`): the client asked for a fresh answer; `key` is where its
        /// response may still be stored (nil: the request said `no-store`).
        case bypass(key: String?)
        /// Not for the cache: a method other than GET/HEAD, or a request with a body.
        case notApplicable
    }

    func lookup(_ head: HTTPRequestHead, plan: ForwardPlan, now: UInt64) -> Lookup {
        guard head.method == .GET || head.method == .HEAD,
            !head.headers.contains(name: "content-length") || head.headers.first(name: "content-length") == "0",
            !head.headers.contains(name: "transfer-encoding")
        else { return .notApplicable }
        let key = Self.key(
            method: head.method.rawValue, uri: plan.upstreamURI, vary: varyLowercased.map { head.headers[canonicalForm: $0].joined(separator: ",") },
            app: config.shared ? nil : plan.app.id, api: plan.route.apiID)
        let request = Cacheability.requestBypasses(cacheControl: head.headers["cache-control"], pragma: head.headers["pragma"])
        if request.bypass { return .bypass(key: request.noStore ? nil : key) }
        if let found = store.lookup(key, fingerprint: fingerprint, now: now) { return .hit(found) }
        return .miss(key: key)
    }

    /// API, method, path and query as the upstream gets them (before any transformation), the vary
    /// headers' values and, unless shared, the app. NUL cannot occur in any part, so parts never run
    /// into each other.
    static func key(method: String, uri: String, vary: [String], app: UUID?, api: UUID) -> String {
        var key = api.uuidString + "\u{0}" + method + "\u{0}" + uri
        for value in vary { key += "\u{0}" + value }
        key += "\u{0}" + (app?.uuidString ?? "*")
        return key
    }

    /// The response verdict for this policy.
    func verdict(status: Int, headers: [(name: String, value: String)], now: Date) -> Cacheability.Verdict {
        Cacheability.response(status: status, headers: headers, policyTTL: config.ttlSeconds, vary: varyLowercased, now: now)
    }
}
