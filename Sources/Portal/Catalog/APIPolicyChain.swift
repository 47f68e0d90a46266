import Foundation
import Gateway

/// A policy a provider added to an API's chain: its kind (which fixes its phase) and its validated
/// configuration.
struct APIPolicy: Sendable, Equatable {
    enum Config: Sendable, Equatable {
        case clientRateLimit(ClientRateLimitConfig)
        case requestTransform(TransformConfig)
        case responseTransform(TransformConfig)
        case responseCache(ResponseCacheConfig)
        case httpLog(HTTPLogConfig)
        case requestValidation(RequestValidationConfig)
        case webSocket(WebSocketConfig)
    }

    var config: Config

    var kind: APIPolicyKind {
        switch config {
        case .clientRateLimit: .clientRateLimit
        case .requestTransform: .requestTransform
        case .responseTransform: .responseTransform
        case .responseCache: .responseCache
        case .httpLog: .httpLog
        case .requestValidation: .requestValidation
        case .webSocket: .webSocket
        }
    }

    var phase: APIPolicyPhase { kind.phase }

    /// The configuration as stored and shown (defaults written out).
    var configJSON: JSONValue {
        switch config {
        case .clientRateLimit(let limit): limit.json
        case .requestTransform(let transform), .responseTransform(let transform): transform.json
        case .responseCache(let cache): cache.json
        case .httpLog(let sink): sink.json
        case .requestValidation(let validation): validation.json
        case .webSocket(let limits): limits.json
        }
    }

    var summary: String {
        switch config {
        case .clientRateLimit(let limit): limit.summary
        case .requestTransform(let transform), .responseTransform(let transform): transform.summary
        case .responseCache(let cache): cache.summary
        case .httpLog(let sink): sink.summary
        case .requestValidation(let validation): validation.summary
        case .webSocket(let limits): limits.summary
        }
    }

    /// Checks a kind's configuration object; pointers in the problems are relative to it.
    static func make(kind: APIPolicyKind, config: [String: JSONValue]) -> Result<APIPolicy, PolicyConfigProblems> {
        switch kind {
        case .clientRateLimit: ClientRateLimitConfig.parse(config).map { APIPolicy(config: .clientRateLimit($0)) }
        case .requestTransform: TransformConfig.parse(config, side: .request).map { APIPolicy(config: .requestTransform($0)) }
        case .responseTransform: TransformConfig.parse(config, side: .response).map { APIPolicy(config: .responseTransform($0)) }
        case .responseCache: ResponseCacheConfig.parse(config).map { APIPolicy(config: .responseCache($0)) }
        case .httpLog: HTTPLogConfig.parse(config).map { APIPolicy(config: .httpLog($0)) }
        case .requestValidation: RequestValidationConfig.parse(config).map { APIPolicy(config: .requestValidation($0)) }
        case .webSocket: WebSocketConfig.parse(config).map { APIPolicy(config: .webSocket($0)) }
        }
    }

    /// Kinds an API holds at most once (one cache; one log collector, whose records already
    /// hold every call; one set of tunnel limits).
    static let singleKinds: Set<APIPolicyKind> = [.responseCache, .httpLog, .requestValidation, .webSocket]

    /// Why `kind` cannot join `policies`, or nil.
    static func duplicateProblem(_ kind: APIPolicyKind, in policies: [APIPolicy]) -> String? {
        guard singleKinds.contains(kind), policies.contains(where: { $0.kind == kind }) else { return nil }
        switch kind {
        case .responseCache: return "An API has one response cache."
        case .requestValidation: return "An API has one request validation."
        case .webSocket: return "An API has one set of WebSocket limits."
        default: return "An API has one HTTP log sink."
        }
    }
}

/// One step of an API's chain as the portal lists it: a built-in setting (edited in the gateway
/// policy form / `PUT /apis/{id}/gateway-policy`) or an added policy (`index` in the added list).
struct APIPolicyChainEntry: Sendable, Equatable {
    var phase: APIPolicyPhase
    var kind: String
    var title: String
    var summary: String
    var builtIn: Bool
    var enabled: Bool
    var index: Int?
}

/// The policy chain's rules: how a whole list is read and checked, and how the chain is shown.
enum APIPolicyChain {
    static let maximumPolicies = 20
    /// A `PUT` body beyond this is 413 (a full chain of 20 policies is under 4 KiB).
    static let maximumBodyBytes = 64 * 1024

    /// Reads `{"policies": [{"kind": ..., "config": {...}}, ...]}`, validated as a whole. Every
    /// problem comes with the JSON pointer of the value at fault (`/policies/1/config/requests`).
    static func parse(_ bytes: [UInt8]) -> Result<[APIPolicy], PolicyConfigProblems> {
        guard let document = try? JSONDecoder().decode(JSONValue.self, from: Data(bytes)) else {
            return .failure(PolicyConfigProblems([PolicyConfigProblem("", "The body is not valid JSON.")]))
        }
        guard case .object(let body) = document else { return .failure(PolicyConfigProblems([PolicyConfigProblem("", "Send an object: {\"policies\": [...]}.")])) }
        var problems: [PolicyConfigProblem] = []
        for key in body.keys.sorted() where key != "policies" {
            problems.append(PolicyConfigProblem("/" + JSONPointer.escape(key), "Unknown field; the body has one field, policies."))
        }
        guard case .array(let entries)? = body["policies"] else {
            return .failure(PolicyConfigProblems(problems + [PolicyConfigProblem("/policies", "Required: the whole chain as an array (empty: no added policies).")]))
        }
        switch validate(entries) {
        case .success(let policies) where problems.isEmpty: return .success(policies)
        case .success: return .failure(PolicyConfigProblems(problems))
        case .failure(let more): return .failure(PolicyConfigProblems(problems + more.list))
        }
    }

    /// Checks each entry of the list; pointers start at `/policies`.
    static func validate(_ entries: [JSONValue]) -> Result<[APIPolicy], PolicyConfigProblems> {
        var problems: [PolicyConfigProblem] = []
        if entries.count > maximumPolicies {
            return .failure(PolicyConfigProblems([PolicyConfigProblem("/policies", "An API takes at most \(maximumPolicies) added policies.")]))
        }
        var policies: [APIPolicy] = []
        for (position, entry) in entries.enumerated() {
            let at = "/policies/\(position)"
            guard case .object(let object) = entry else {
                problems.append(PolicyConfigProblem(at, "Each policy is an object with kind and config."))
                continue
            }
            for key in object.keys.sorted() where !["kind", "phase", "config"].contains(key) {
                problems.append(PolicyConfigProblem(at + "/" + JSONPointer.escape(key), "Unknown field; a policy has kind, phase and config."))
            }
            let kinds = APIPolicyKind.allCases.map(\.rawValue).joined(separator: ", ")
            guard case .string(let kindText)? = object["kind"], let kind = APIPolicyKind(rawValue: kindText) else {
                problems.append(PolicyConfigProblem(at + "/kind", "Required: one of \(kinds)."))
                continue
            }
            if let phase = object["phase"], phase != .string(kind.phase.rawValue) {
                problems.append(PolicyConfigProblem(at + "/phase", "\(kind.rawValue) acts in phase \(kind.phase.rawValue); leave phase out or give that."))
            }
            let config: [String: JSONValue]
            switch object["config"] {
            case .object(let given)?: config = given
            case nil, .null?: config = [:]
            default:
                problems.append(PolicyConfigProblem(at + "/config", "Give the configuration as an object."))
                continue
            }
            if let problem = APIPolicy.duplicateProblem(kind, in: policies) {
                problems.append(PolicyConfigProblem(at + "/kind", problem))
                continue
            }
            switch APIPolicy.make(kind: kind, config: config) {
            case .success(let policy): policies.append(policy)
            case .failure(let found): problems += found.list.map { PolicyConfigProblem(at + "/config" + $0.pointer, $0.message) }
            }
        }
        return problems.isEmpty ? .success(policies) : .failure(PolicyConfigProblems(problems))
    }

    /// A 422 naming every problem by pointer (`errors`) and the first one in the detail.
    static func invalid(_ problems: [PolicyConfigProblem]) -> AppError {
        let first = problems.first.map { "\($0.pointer.isEmpty ? "the body" : $0.pointer): \($0.message)" } ?? "The policies are not valid."
        var fields: [String: String] = [:]
        for problem in problems where fields[problem.pointer] == nil { fields[problem.pointer] = problem.message }
        return AppError(status: .unprocessableContent, title: "Invalid policy chain", detail: "The chain was not saved: " + first, fieldErrors: fields)
    }

    /// Policies that would never act on a gRPC API's calls, refused rather than stored and ignored:
    /// its calls are relayed as HTTP/2 streams and never upgraded, so `websocket` limits cannot apply.
    static func grpcProblems(_ policies: [APIPolicy], api: APIProduct) -> [PolicyConfigProblem] {
        guard api.isGRPC else { return [] }
        return policies.indices.filter { policies[$0].kind == .webSocket }.map {
            PolicyConfigProblem("/policies/\($0)/kind", "A gRPC API takes no WebSockets, so WebSocket limits would never apply to it.")
        }
    }

    /// Checks a chain's `request_validation` against the API it is for: not a gRPC API, and the
    /// API's document compiles (pointers name the policy: `/policies/2/kind`, `/policies/2/config`).
    /// Returns the document's JSON form for the gateways, or the problems.
    static func validationProblems(
        _ policies: [APIPolicy], api: APIProduct, document: StoredAPIDocument?
    ) -> Result<JSONValue?, PolicyConfigProblems> {
        guard let index = policies.firstIndex(where: { $0.kind == .requestValidation }), case .requestValidation(let config) = policies[index].config else {
            return .success(nil)
        }
        let at = "/policies/\(index)"
        if api.targets.contains(where: { $0.url.lowercased().hasPrefix("grpc://") || $0.url.lowercased().hasPrefix("grpcs://") }) {
            return .failure(PolicyConfigProblems([PolicyConfigProblem(at + "/kind", "A gRPC API cannot take request_validation: its calls are protobuf messages, not described by an OpenAPI document.")]))
        }
        guard let document else {
            return .failure(PolicyConfigProblems([PolicyConfigProblem(at + "/kind", "Upload the API's OpenAPI document first: request_validation checks calls against it.")]))
        }
        let parsed: APIDocument
        do { parsed = try APIDocument.parse(Array(document.content.utf8)) } catch {
            return .failure(PolicyConfigProblems([PolicyConfigProblem(at + "/kind", "The API's OpenAPI document can no longer be read; upload it again.")]))
        }
        let json = parsed.root.jsonValue
        switch RequestValidator.compile(document: json, config: config) {
        case .success: return .success(json)
        case .failure(let error):
            let place = error.pointer.isEmpty ? "the document" : "#" + error.pointer
            return .failure(PolicyConfigProblems([PolicyConfigProblem(at + "/config", "The API's OpenAPI document cannot be used for validation (\(place)): \(error.message)")]))
        }
    }

    /// The whole chain in call order: per phase, the built-in steps first (they keep today's order
    /// and behaviour), then the added policies of that phase in their order.
    static func entries(builtIn settings: APIGatewayPolicy, policies: [APIPolicy]) -> [APIPolicyChainEntry] {
        var entries: [APIPolicyChainEntry] = []
        func builtIn(_ phase: APIPolicyPhase, _ kind: String, _ title: String, _ summary: String, enabled: Bool) {
            entries.append(APIPolicyChainEntry(phase: phase, kind: kind, title: title, summary: summary, builtIn: true, enabled: enabled, index: nil))
        }
        for phase in APIPolicyPhase.allCases {
            switch phase {
            case .preAuth:
                let ranges = settings.ipAllow.count + settings.ipDeny.count
                builtIn(
                    phase, "ip_access", "Client addresses",
                    ranges == 0 ? "every address" : "\(settings.ipAllow.count) allowed, \(settings.ipDeny.count) denied ranges (deny wins)", enabled: ranges > 0)
                builtIn(
                    phase, "cors", "CORS",
                    settings.cors.map { "preflights answered for \($0.allowedOrigins.joined(separator: " "))" } ?? "not handled (preflights are forwarded)",
                    enabled: settings.cors != nil)
                builtIn(
                    phase, "methods", "Accepted methods", settings.methods.isEmpty ? "every method" : settings.methods.joined(separator: " "),
                    enabled: !settings.methods.isEmpty)
                builtIn(
                    phase, "body_limit", "Request body limit", settings.maxRequestBytes.map { "\($0) bytes" } ?? "the gateway's default",
                    enabled: settings.maxRequestBytes != nil)
            case .postAuth:
                builtIn(phase, "plan_limits", "Subscription and plan limits", "the subscription's plan: rate per second, burst, monthly quota", enabled: true)
            case .response:
                builtIn(
                    phase, "deprecation", "Deprecation and sunset headers",
                    settings.sunsetAt.map { "sunset \(DisplayDate.day($0)) announced while deprecated" } ?? "Deprecation while deprecated", enabled: true)
            case .preForward, .afterCall:
                break
            }
            for (index, policy) in policies.enumerated() where policy.phase == phase {
                entries.append(
                    APIPolicyChainEntry(
                        phase: phase, kind: policy.kind.rawValue, title: policy.kind.title, summary: policy.summary, builtIn: false, enabled: true, index: index))
            }
        }
        return entries
    }
}

/// One change made from the API page's policy forms, applied to the current list.
enum APIPolicyEdit: Sendable, Equatable {
    case add(APIPolicy)
    case replace(Int, APIPolicy)
    case remove(Int)
    case moveUp(Int)
    case moveDown(Int)

    /// The list after the change; nil when the index no longer names a policy (the list changed
    /// meanwhile) or the list would outgrow its bound.
    func applied(to policies: [APIPolicy]) -> [APIPolicy]? {
        var list = policies
        switch self {
        case .add(let policy):
            guard list.count < APIPolicyChain.maximumPolicies else { return nil }
            if APIPolicy.duplicateProblem(policy.kind, in: list) != nil { return nil }
            list.append(policy)
        case .replace(let index, let policy):
            guard list.indices.contains(index) else { return nil }
            list[index] = policy
        case .remove(let index):
            guard list.indices.contains(index) else { return nil }
            list.remove(at: index)
        case .moveUp(let index):
            guard list.indices.contains(index) else { return nil }
            if let other = Self.neighbour(of: index, in: list, step: -1) { list.swapAt(index, other) }
        case .moveDown(let index):
            guard list.indices.contains(index) else { return nil }
            if let other = Self.neighbour(of: index, in: list, step: 1) { list.swapAt(index, other) }
        }
        return list
    }

    /// The nearest policy of the same phase before (`step` -1) or after (+1) `index`: order only
    /// means something within a phase, so a move swaps with that one, not with whatever is next
    /// in the stored list.
    static func neighbour(of index: Int, in list: [APIPolicy], step: Int) -> Int? {
        var other = index + step
        while list.indices.contains(other) {
            if list[other].phase == list[index].phase { return other }
            other += step
        }
        return nil
    }
}
