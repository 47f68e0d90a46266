import Foundation

/// A provider's `response_cache` policy: GET and HEAD responses are kept for up to `ttlSeconds`
/// (never longer than the upstream allows), keyed by method, path, query, the `vary` request
/// headers' values and — unless `shared` — the calling app. Bodies over `maxBodyBytes` are not kept.
///
/// Read by the portal and the gateway alike (`parse`), like the other policy configs.
public struct ResponseCacheConfig: Sendable, Hashable {
    public var ttlSeconds: Int
    public var vary: [String]
    public var shared: Bool
    public var maxBodyBytes: Int

    public static let ttlRange = 1...86_400
    public static let maxBodyRange = 1...(1 << 20)
    public static let defaultMaxBodyBytes = 256 * 1024
    public static let maximumVary = 8

    public init(ttlSeconds: Int, vary: [String] = [], shared: Bool = false, maxBodyBytes: Int = ResponseCacheConfig.defaultMaxBodyBytes) {
        self.ttlSeconds = ttlSeconds
        self.vary = vary
        self.shared = shared
        self.maxBodyBytes = maxBodyBytes
    }

    static let fields: Set<String> = ["ttl_seconds", "vary", "shared", "max_body_bytes"]
    /// Varying on a credential would keep one copy per secret; the app already keys private entries.
    static let refusedVary: Set<String> = ["authorization", "x-api-key", "cookie", "proxy-authorization"]

    public static func parse(_ object: [String: JSONValue]) -> Result<ResponseCacheConfig, PolicyConfigProblems> {
        var problems: [PolicyConfigProblem] = []
        for key in object.keys.sorted() where !fields.contains(key) {
            problems.append(PolicyConfigProblem("/" + JSONPointer.escape(key), "Unknown field; use ttl_seconds, vary, shared, max_body_bytes."))
        }
        func integer(_ name: String, _ range: ClosedRange<Int>, required: Bool) -> Int? {
            guard let value = object[name], value != .null else {
                if required { problems.append(PolicyConfigProblem("/" + name, "Required: a whole number from \(range.lowerBound) to \(range.upperBound).")) }
                return nil
            }
            guard case .integer(let whole) = value, let number = Int(exactly: whole), range.contains(number) else {
                problems.append(PolicyConfigProblem("/" + name, "Use a whole number from \(range.lowerBound) to \(range.upperBound)."))
                return nil
            }
            return number
        }
        let ttl = integer("ttl_seconds", ttlRange, required: true)
        let maxBody = integer("max_body_bytes", maxBodyRange, required: false)
        var shared = false
        switch object["shared"] {
        case nil, .null?: break
        case .bool(let flag)?: shared = flag
        default: problems.append(PolicyConfigProblem("/shared", "Use true (every app gets the same responses) or false."))
        }
        var vary: [String] = []
        switch object["vary"] {
        case nil, .null?: break
        case .array(let items)?:
            if items.count > maximumVary { problems.append(PolicyConfigProblem("/vary", "At most \(maximumVary) headers.")) }
            for (index, item) in items.prefix(maximumVary).enumerated() {
                guard case .string(let name) = item, !name.isEmpty, name.utf8.count <= 64, name.utf8.allSatisfy(TransformConfig.isTokenByte) else {
                    problems.append(PolicyConfigProblem("/vary/\(index)", "Give a header name such as Accept-Language."))
                    continue
                }
                if refusedVary.contains(name.lowercased()) {
                    problems.append(PolicyConfigProblem("/vary/\(index)", "\(name) carries credentials; responses are kept per app unless shared."))
                    continue
                }
                if !vary.contains(where: { $0.lowercased() == name.lowercased() }) { vary.append(name) }
            }
        default: problems.append(PolicyConfigProblem("/vary", "Give a list of header names."))
        }
        guard problems.isEmpty, let ttl else { return .failure(PolicyConfigProblems(problems)) }
        return .success(ResponseCacheConfig(ttlSeconds: ttl, vary: vary, shared: shared, maxBodyBytes: maxBody ?? defaultMaxBodyBytes))
    }

    public var json: JSONValue {
        .object([
            "ttl_seconds": .integer(Int64(ttlSeconds)), "vary": .array(vary.map(JSONValue.string)), "shared": .bool(shared),
            "max_body_bytes": .integer(Int64(maxBodyBytes)),
        ])
    }

    public var summary: String {
        "GET/HEAD kept up to \(ttlSeconds) s" + (vary.isEmpty ? "" : ", varying on " + vary.joined(separator: ", "))
            + (shared ? ", shared by every app" : ", per app") + ", bodies up to \(maxBodyBytes) bytes"
    }
}
