import Foundation

/// A provider's limit on calls per client before authentication: `requests` per `perSeconds`
/// (a token bucket refilled at that rate, holding `burst`), keyed by the client address or, when
/// `keyHeader` is set and the call carries it, by that header's value (for APIs behind a proxy that
/// names the client, like `X-Real-IP`). At most `maxClients` clients are remembered per API and
/// gateway; the least recently seen is forgotten first.
///
/// The portal validates provider input with `parse`, and the gateway reads the stored JSON with it,
/// so what is accepted is exactly what is applied.
public struct ClientRateLimitConfig: Sendable, Equatable, Hashable {
    public var requests: Int
    public var perSeconds: Int
    public var burst: Int
    public var keyHeader: String?
    public var maxClients: Int

    public static let requestsRange = 1...1_000_000
    public static let perSecondsRange = 1...86_400
    public static let burstRange = 1...1_000_000
    public static let maxClientsRange = 100...100_000
    public static let defaultMaxClients = 10_000
    /// Header values longer than this are cut before they key a bucket (memory per client stays bounded).
    public static let maximumKeyBytes = 128

    public init(requests: Int, perSeconds: Int, burst: Int? = nil, keyHeader: String? = nil, maxClients: Int = ClientRateLimitConfig.defaultMaxClients) {
        self.requests = requests
        self.perSeconds = perSeconds
        self.burst = burst ?? requests
        self.keyHeader = keyHeader
        self.maxClients = maxClients
    }

    /// The refill rate in tokens per second.
    public var ratePerSecond: Double { Double(requests) / Double(perSeconds) }

    static let fields: Set<String> = ["requests", "per_seconds", "burst", "key_header", "max_clients"]

    /// Reads and checks a config object (decoded JSON). Every problem is reported, each with the
    /// pointer of its field.
    public static func parse(_ object: [String: JSONValue]) -> Result<ClientRateLimitConfig, PolicyConfigProblems> {
        var problems: [PolicyConfigProblem] = []
        for key in object.keys.sorted() where !fields.contains(key) {
            problems.append(PolicyConfigProblem("/" + JSONPointer.escape(key), "Unknown field; use requests, per_seconds, burst, key_header, max_clients."))
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
        let requests = integer("requests", requestsRange, required: true)
        let per = integer("per_seconds", perSecondsRange, required: true)
        let burst = integer("burst", burstRange, required: false)
        let maxClients = integer("max_clients", maxClientsRange, required: false)
        var header: String?
        if let value = object["key_header"], value != .null {
            if case .string(let text) = value {
                let trimmed = text.trimmingCharacters(in: .whitespaces)
                if trimmed.isEmpty {
                    header = nil
                } else if let problem = headerProblem(trimmed) {
                    problems.append(PolicyConfigProblem("/key_header", problem))
                } else {
                    header = trimmed
                }
            } else {
                problems.append(PolicyConfigProblem("/key_header", "Give a header name such as X-Real-IP."))
            }
        }
        guard problems.isEmpty, let requests, let per else { return .failure(PolicyConfigProblems(problems)) }
        return .success(
            ClientRateLimitConfig(requests: requests, perSeconds: per, burst: burst, keyHeader: header, maxClients: maxClients ?? defaultMaxClients))
    }

    /// Header names that identify a caller are refused as keys: keying by a credential would put
    /// secrets in memory as bucket keys, and those are limited after authentication anyway.
    static let refusedHeaders: Set<String> = ["authorization", "x-api-key", "cookie", "proxy-authorization", "host", "content-length", "transfer-encoding"]

    static func headerProblem(_ name: String) -> String? {
        guard name.utf8.count <= 64, name.utf8.allSatisfy(Self.isTokenByte) else {
            return "Give a header name of up to 64 letters, digits or -_. (e.g. X-Real-IP)."
        }
        if refusedHeaders.contains(name.lowercased()) { return "\(name) cannot key a limit; use a header that names the client, such as X-Real-IP." }
        return nil
    }

    private static func isTokenByte(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"): true
        case UInt8(ascii: "-"), UInt8(ascii: "_"), UInt8(ascii: "."): true
        default: false
        }
    }

    /// The config as stored and shown: keys sorted, defaults written out.
    public var json: JSONValue {
        var object: [String: JSONValue] = [
            "requests": .integer(Int64(requests)), "per_seconds": .integer(Int64(perSeconds)), "burst": .integer(Int64(burst)),
            "max_clients": .integer(Int64(maxClients)),
        ]
        if let keyHeader { object["key_header"] = .string(keyHeader) }
        return .object(object)
    }

    /// One line for people: "100 requests per 60 s per client address (burst 100)".
    public var summary: String {
        let key = keyHeader.map { "per \($0) header (else address)" } ?? "per client address"
        return "\(requests) requests per \(perSeconds) s \(key), burst \(burst), up to \(maxClients) clients remembered"
    }
}

/// RFC 6901 pointer tokens.
public enum JSONPointer {
    public static func escape(_ token: String) -> String {
        token.replacingOccurrences(of: "~", with: "~0").replacingOccurrences(of: "/", with: "~1")
    }
}

/// A JSON document as plain values. Decoded with `JSONDecoder`, which keeps `true`, `1` and `1.5`
/// apart (Foundation's `JSONSerialization` hands all three over as `NSNumber`).
public enum JSONValue: Sendable, Hashable, Codable {
    case null
    case bool(Bool)
    case integer(Int64)
    case number(Double)
    case string(String)
    case array([JSONValue])
    case object([String: JSONValue])

    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if container.decodeNil() {
            self = .null
        } else if let value = try? container.decode(Bool.self) {
            self = .bool(value)
        } else if let value = try? container.decode(Int64.self) {
            self = .integer(value)
        } else if let value = try? container.decode(Double.self) {
            self = .number(value)
        } else if let value = try? container.decode(String.self) {
            self = .string(value)
        } else if let value = try? container.decode([JSONValue].self) {
            self = .array(value)
        } else {
            self = .object(try container.decode([String: JSONValue].self))
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        switch self {
        case .null: try container.encodeNil()
        case .bool(let value): try container.encode(value)
        case .integer(let value): try container.encode(value)
        case .number(let value): try container.encode(value)
        case .string(let value): try container.encode(value)
        case .array(let value): try container.encode(value)
        case .object(let value): try container.encode(value)
        }
    }

    /// Compact text with sorted keys (what is stored).
    public var text: String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return (try? encoder.encode(self)).map { String(decoding: $0, as: UTF8.self) } ?? "null"
    }

    public static func parse(_ text: String) -> JSONValue? {
        try? JSONDecoder().decode(JSONValue.self, from: Data(text.utf8))
    }
}
