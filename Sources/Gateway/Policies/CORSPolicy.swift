import Foundation

/// Cross-origin rules the gateway applies for an API: it answers preflight requests itself and
/// adds `Access-Control-*` headers to proxied responses for allowed origins.
public struct CORSPolicy: Sendable, Equatable, Codable {
    /// Exact origins (`https://app.example.com`) or `*`.
    public var allowedOrigins: [String]
    public var allowedMethods: [String]
    public var allowedHeaders: [String]
    public var exposedHeaders: [String]
    public var allowCredentials: Bool
    public var maxAgeSeconds: Int

    public init(
        allowedOrigins: [String], allowedMethods: [String] = ["GET", "POST", "PUT", "PATCH", "DELETE"],
        allowedHeaders: [String] = ["Authorization", "Content-Type", "X-API-Key"], exposedHeaders: [String] = [], allowCredentials: Bool = false,
        maxAgeSeconds: Int = 600
    ) {
        self.allowedOrigins = allowedOrigins
        self.allowedMethods = allowedMethods
        self.allowedHeaders = allowedHeaders
        self.exposedHeaders = exposedHeaders
        self.allowCredentials = allowCredentials
        self.maxAgeSeconds = maxAgeSeconds
    }

    enum CodingKeys: String, CodingKey {
        case allowedOrigins, allowedMethods, allowedHeaders, exposedHeaders, allowCredentials, maxAgeSeconds
    }

    /// Absent fields take the defaults, so a client may send only `allowed_origins`.
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let defaults = CORSPolicy(allowedOrigins: [])
        self.init(
            allowedOrigins: try c.decode([String].self, forKey: .allowedOrigins),
            allowedMethods: try c.decodeIfPresent([String].self, forKey: .allowedMethods) ?? defaults.allowedMethods,
            allowedHeaders: try c.decodeIfPresent([String].self, forKey: .allowedHeaders) ?? defaults.allowedHeaders,
            exposedHeaders: try c.decodeIfPresent([String].self, forKey: .exposedHeaders) ?? defaults.exposedHeaders,
            allowCredentials: try c.decodeIfPresent(Bool.self, forKey: .allowCredentials) ?? defaults.allowCredentials,
            maxAgeSeconds: try c.decodeIfPresent(Int.self, forKey: .maxAgeSeconds) ?? defaults.maxAgeSeconds)
    }

    /// The policy as stored in `apis.cors` (snake_case JSON); the portal writes it, the gateway reads it.
    public var storedJSON: String {
        let encoder = JSONEncoder()
        encoder.keyEncodingStrategy = .convertToSnakeCase
        encoder.outputFormatting = [.sortedKeys]
        return (try? encoder.encode(self)).map { String(decoding: $0, as: UTF8.self) } ?? "{}"
    }

    public init?(storedJSON: String) {
        let decoder = JSONDecoder()
        decoder.keyDecodingStrategy = .convertFromSnakeCase
        guard let policy = try? decoder.decode(CORSPolicy.self, from: Data(storedJSON.utf8)) else { return nil }
        self = policy
    }

    /// Problems with the policy, by field; empty when valid.
    public func problems() -> [String: String] {
        var problems: [String: String] = [:]
        if allowedOrigins.isEmpty || allowedOrigins.count > 50 { problems["cors.allowed_origins"] = "List 1 to 50 origins, or *." }
        for origin in allowedOrigins where origin != "*" && !Self.isOrigin(origin) {
            problems["cors.allowed_origins"] = "'\(origin.prefix(80))' is not an origin like https://app.example.com (scheme, host, optional port; no path)."
        }
        if allowCredentials && allowedOrigins.contains("*") {
            problems["cors.allow_credentials"] = "Browsers refuse credentials with a wildcard origin; list the origins."
        }
        let token = { (s: String) in !s.isEmpty && s.count <= 64 && s.utf8.allSatisfy { Self.tokenCharacters.contains($0) } }
        if !allowedMethods.allSatisfy(token) { problems["cors.allowed_methods"] = "Use HTTP method names." }
        if !(allowedHeaders + exposedHeaders).allSatisfy({ token($0) || $0 == "*" }) { problems["cors.allowed_headers"] = "Use header names." }
        if !(0...86_400).contains(maxAgeSeconds) { problems["cors.max_age_seconds"] = "Use 0 to 86400 seconds." }
        return problems
    }

    /// The origin header value to send back, or nil when the origin is not allowed.
    public func allowOrigin(_ origin: String) -> String? {
        if allowedOrigins.contains("*") && !allowCredentials { return "*" }
        return allowedOrigins.contains(origin) || allowedOrigins.contains("*") ? origin : nil
    }

    static func isOrigin(_ text: String) -> Bool {
        guard let schemeEnd = text.range(of: "://") else { return false }
        let scheme = text[..<schemeEnd.lowerBound]
        let rest = text[schemeEnd.upperBound...]
        guard scheme == "http" || scheme == "https", !rest.isEmpty, !rest.contains("/"), !rest.contains("@"), rest.count <= 253 else { return false }
        return rest.utf8.allSatisfy { ($0 >= 0x30 && $0 <= 0x39) || ($0 >= 0x61 && $0 <= 0x7a) || $0 == 0x2d || $0 == 0x2e || $0 == 0x3a || ($0 >= 0x41 && $0 <= 0x5a) }
    }

    private static let tokenCharacters: Set<UInt8> = Set(Array("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ".utf8))
}
