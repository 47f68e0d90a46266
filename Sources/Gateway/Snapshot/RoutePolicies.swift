import CoreMetrics
import Foundation
import NIOConcurrencyHelpers
import NIOHTTP1

/// A policy of the pre-authentication phase as the gateway runs it: built once per snapshot from
/// the API's stored chain, in the chain's order (see docs/ARCHITECTURE.md, "Policy chain").
public enum PreAuthPolicy: Sendable {
    case clientRateLimit(ClientRateLimit)
}

/// A compiled `client_rate_limit` policy: its limiter (which outlives snapshots, see
/// `ClientLimiterRegistry`) and the header text it adds, made once.
public final class ClientRateLimit: Sendable {
    public let limiter: ClientRateLimiter
    /// The `RateLimit-Policy` item, `"client";q=<requests>;w=<seconds>`.
    let policyItem: String
    /// The lowercased header that keys the limit, if any.
    let keyHeader: String?

    public init(limiter: ClientRateLimiter) {
        self.limiter = limiter
        let config = limiter.config
        policyItem = "\"client\";q=\(config.requests);w=\(config.perSeconds)"
        keyHeader = config.keyHeader?.lowercased()
    }

    public var config: ClientRateLimitConfig { limiter.config }

    /// The configured header's value (cut to `maximumKeyBytes`) when the call carries a non-empty
    /// one, else the client address (no address: one shared bucket).
    func key(head: HTTPRequestHead, clientAddress: [UInt8]?) -> ClientKey {
        if let keyHeader, let value = head.headers.first(name: keyHeader) {
            let bytes = value.utf8.prefix(ClientRateLimitConfig.maximumKeyBytes)
            // a header key cannot collide with an address key: addresses are 4 or 16 bytes with
            // no prefix, header keys start with 0xFF (never in a header value)
            if !bytes.isEmpty { return ClientKey([0xFF] + bytes) }
        }
        return ClientKey(clientAddress ?? [])
    }
}

/// A stored policy row, as the loader reads it.
public struct StoredPolicy: Sendable {
    /// The API's tenant: a tenant's reload recompiles (and keeps the limiters of) its rows only.
    public var tenantID: UUID
    public var apiID: UUID
    public var position: Int
    public var kind: String
    public var config: String

    /// The tenant of rows made without one (unit tests).
    public static let noTenant = UUID(uuid: (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0))

    public init(tenantID: UUID = StoredPolicy.noTenant, apiID: UUID, position: Int, kind: String, config: String) {
        self.tenantID = tenantID
        self.apiID = apiID
        self.position = position
        self.kind = kind
        self.config = config
    }
}

/// Compiles the stored chains into per-route values, and keeps each client limiter across
/// snapshots: a reload (every 30 s, and after any change) must not hand every client a fresh bucket.
/// A limiter is kept while its API has a policy with the same place and configuration; a changed
/// configuration starts afresh, and a removed policy's limiter is dropped with its memory.
public final class ClientLimiterRegistry: Sendable {
    private struct Key: Hashable {
        var apiID: UUID
        var position: Int
        var config: ClientRateLimitConfig
    }

    /// By tenant, so that one tenant's reload replaces its own limiters and leaves the others'.
    private let limiters = NIOLockedValueBox<[UUID: [Key: ClientRateLimiter]]>([:])
    private let evictions: Counter
    /// The process's response cache, which every loaded snapshot's cached routes share.
    public let responseCache: ResponseCacheStore
    /// Descriptor sets compiled for translation, kept across loads by their digest.
    public let transcodings = TranscodingCache()
    /// The process's access-log sinks, which hold the per-API `http_log` sinks across snapshots;
    /// nil (such policies are then left out) where nothing ships logs, as in most tests.
    public let accessLogs: AccessLogs?

    public init(metricsFactory: (any MetricsFactory)? = nil, responseCache: ResponseCacheStore? = nil, accessLogs: AccessLogs? = nil) {
        evictions = Counter(label: "tollgate_gateway_client_limit_evictions_total", factory: metricsFactory ?? MetricsSystem.factory)
        self.responseCache = responseCache ?? ResponseCacheStore(metricsFactory: metricsFactory)
        self.accessLogs = accessLogs
    }

    /// The stored chains compiled per API.
    public struct Compiled {
        /// The pre-authentication policies per API, in chain order.
        public var byAPI: [UUID: [PreAuthPolicy]] = [:]
        public var requestTransforms: [UUID: RequestTransform] = [:]
        public var responseTransforms: [UUID: ResponseTransform] = [:]
        /// An API's response cache (the first such policy; the portal allows one).
        public var caches: [UUID: ResponseCacheConfig] = [:]
        /// An API's HTTP log sink configuration (the first such policy; the portal allows one).
        public var httpLogs: [UUID: HTTPLogConfig] = [:]
        /// The tenant of each API in `httpLogs` (a tenant's reload replaces only its sinks).
        public var httpLogTenants: [UUID: UUID] = [:]
        /// An API's request validation (the first such policy; the portal allows one), compiled
        /// with the API's document by `validation(api:config:document:)`.
        public var validations: [UUID: RequestValidationConfig] = [:]
        /// APIs whose validation policy's stored configuration the parser refuses (fail closed).
        public var unreadableValidations: Set<UUID> = []
        /// An API's WebSocket tunnel limits (the first such policy; the portal allows one).
        public var webSockets: [UUID: WebSocketConfig] = [:]
        /// Rows of unknown kinds or with a configuration the parser refuses (left out).
        public var skipped: [StoredPolicy] = []
    }

    /// Compiles every API's chain. Rows of unknown kinds or with a configuration the parser
    /// refuses are skipped and reported in `skipped`. `rows` are every tenant's (`onlyTenant`
    /// nil: limiters of policies not among them are dropped) or that one tenant's (only its
    /// limiters are replaced).
    public func compile(_ rows: [StoredPolicy], onlyTenant: UUID? = nil) -> Compiled {
        var byAPI: [UUID: [PreAuthPolicy]] = [:]
        var skipped: [StoredPolicy] = []
        var requestSteps: [UUID: [TransformConfig]] = [:]
        var responseSteps: [UUID: [TransformConfig.FieldOps]] = [:]
        var caches: [UUID: ResponseCacheConfig] = [:]
        var httpLogs: [UUID: HTTPLogConfig] = [:]
        var httpLogTenants: [UUID: UUID] = [:]
        var validations: [UUID: RequestValidationConfig] = [:]
        var unreadableValidations: Set<UUID> = []
        var webSockets: [UUID: WebSocketConfig] = [:]
        limiters.withLockedValue { tables in
            var next: [UUID: [Key: ClientRateLimiter]] = [:]
            for row in rows.sorted(by: { ($0.apiID.uuidString, $0.position) < ($1.apiID.uuidString, $1.position) }) {
                guard let kind = APIPolicyKind(rawValue: row.kind), case .object(let object)? = JSONValue.parse(row.config) else {
                    skipped.append(row)
                    continue
                }
                switch kind {
                case .clientRateLimit:
                    guard case .success(let config) = ClientRateLimitConfig.parse(object) else {
                        skipped.append(row)
                        continue
                    }
                    let key = Key(apiID: row.apiID, position: row.position, config: config)
                    let limiter = tables[row.tenantID]?[key] ?? ClientRateLimiter(config: config, evictions: evictions)
                    next[row.tenantID, default: [:]][key] = limiter
                    byAPI[row.apiID, default: []].append(.clientRateLimit(ClientRateLimit(limiter: limiter)))
                case .responseCache:
                    guard case .success(let config) = ResponseCacheConfig.parse(object), caches[row.apiID] == nil else {
                        skipped.append(row)
                        continue
                    }
                    caches[row.apiID] = config
                case .httpLog:
                    guard case .success(let config) = HTTPLogConfig.parse(object), httpLogs[row.apiID] == nil else {
                        skipped.append(row)
                        continue
                    }
                    httpLogs[row.apiID] = config
                    httpLogTenants[row.apiID] = row.tenantID
                case .requestValidation:
                    guard validations[row.apiID] == nil else {
                        skipped.append(row)
                        continue
                    }
                    guard case .success(let config) = RequestValidationConfig.parse(object) else {
                        // unlike other kinds, not left out: an API that asked for checks is not
                        // forwarded unchecked (its calls answer 503 until the policy is fixed)
                        skipped.append(row)
                        unreadableValidations.insert(row.apiID)
                        continue
                    }
                    validations[row.apiID] = config
                case .webSocket:
                    guard case .success(let config) = WebSocketConfig.parse(object), webSockets[row.apiID] == nil else {
                        skipped.append(row)
                        continue
                    }
                    webSockets[row.apiID] = config
                case .requestTransform, .responseTransform:
                    let side: TransformConfig.Side = kind == .requestTransform ? .request : .response
                    guard case .success(let config) = TransformConfig.parse(object, side: side) else {
                        skipped.append(row)
                        continue
                    }
                    if side == .request {
                        requestSteps[row.apiID, default: []].append(config)
                    } else {
                        responseSteps[row.apiID, default: []].append(config.headers)
                    }
                }
            }
            if let onlyTenant {
                tables[onlyTenant] = next[onlyTenant]
            } else {
                tables = next
            }
        }
        var compiled = Compiled(byAPI: byAPI, skipped: skipped)
        compiled.caches = caches
        compiled.httpLogs = httpLogs
        compiled.httpLogTenants = httpLogTenants
        compiled.validations = validations
        compiled.webSockets = webSockets
        compiled.unreadableValidations = unreadableValidations.subtracting(validations.keys)
        for (api, steps) in requestSteps { compiled.requestTransforms[api] = RequestTransform(steps) }
        for (api, steps) in responseSteps { compiled.responseTransforms[api] = ResponseTransform(steps) }
        return compiled
    }

    private struct CompiledValidation {
        var fingerprint: Int
        var policy: RequestValidationPolicy
    }

    private let validators = NIOLockedValueBox<[UUID: CompiledValidation]>([:])

    /// An API's validation policy compiled from its document (the JSON text the portal stored with
    /// it; nil: none). Compiled once per change: a reload with the same document and configuration
    /// reuses the compiled value. A document that cannot be compiled gives a policy that refuses
    /// every call with 503 (fail closed, see docs/ARCHITECTURE.md).
    public func validation(api: UUID, config: RequestValidationConfig, document: String?) -> RequestValidationPolicy {
        var hasher = Hasher()
        hasher.combine(config)
        hasher.combine(document)
        let fingerprint = hasher.finalize()
        if let known = validators.withLockedValue({ $0[api] }), known.fingerprint == fingerprint { return known.policy }
        let policy: RequestValidationPolicy
        if let document, document.utf8.count <= RequestValidationPolicy.maximumDocumentBytes, let root = JSONValue.parse(document) {
            switch RequestValidator.compile(document: root, config: config) {
            case .success(let validator): policy = .ready(validator)
            case .failure(let error): policy = .unusable("\(error.pointer.isEmpty ? "the document" : error.pointer): \(error.message)")
            }
        } else {
            policy = .unusable(document == nil ? "the API has no OpenAPI document" : "the document is not JSON the gateway can read")
        }
        validators.withLockedValue { $0[api] = CompiledValidation(fingerprint: fingerprint, policy: policy) }
        return policy
    }

    /// Forgets compiled validations of APIs that no longer have the policy.
    public func retainValidations(_ apis: Set<UUID>) {
        validators.withLockedValue { table in table = table.filter { apis.contains($0.key) } }
    }

    /// APIs with a compiled validation and their schema nodes in all (for the gauges).
    public var validationUsage: (schemas: Int, nodes: Int) {
        validators.withLockedValue { table in
            table.values.reduce((0, 0)) { sum, entry in
                if case .ready(let validator) = entry.policy { (sum.0 + 1, sum.1 + validator.nodeCount) } else { sum }
            }
        }
    }

    /// Clients remembered and the most that may be, over every API (for the gauges).
    public var usage: (clients: Int, capacity: Int) {
        let all = limiters.withLockedValue { $0.values.flatMap(\.values) }
        return all.reduce((0, 0)) { ($0.0 + $1.count, $0.1 + $1.capacity) }
    }

    /// Records the gauges `tollgate_gateway_client_limit_clients` and `..._capacity`.
    public func recordGauges(factory: (any MetricsFactory)? = nil) {
        let (clients, capacity) = usage
        Gauge(label: "tollgate_gateway_client_limit_clients", factory: factory ?? MetricsSystem.factory).record(clients)
        Gauge(label: "tollgate_gateway_client_limit_capacity", factory: factory ?? MetricsSystem.factory).record(capacity)
        let (schemas, nodes) = validationUsage
        Gauge(label: "tollgate_gateway_validation_schemas", factory: factory ?? MetricsSystem.factory).record(schemas)
        Gauge(label: "tollgate_gateway_validation_schema_nodes", factory: factory ?? MetricsSystem.factory).record(nodes)
    }
}
