import Foundation

/// A provider's `http_log` policy: the API's access-log records are POSTed in batches to `url`
/// as NDJSON (one record per line, `Content-Type: application/x-ndjson`), a batch when
/// `batchSize` records wait or when the oldest has waited `flushSeconds`.
///
/// No secret is kept: the policy has no header or credential field (a collector that needs one
/// can be reached through the installation-wide sink, whose `Authorization` value comes from the
/// gateway's environment). Read by the portal and the gateway alike (`parse`).
public struct HTTPLogConfig: Sendable, Hashable {
    public var url: String
    public var batchSize: Int
    public var flushSeconds: Int

    public static let batchSizeRange = 1...1000
    public static let flushSecondsRange = 1...60
    public static let defaultBatchSize = 100
    public static let defaultFlushSeconds = 5
    public static let maximumURLBytes = 500

    public init(url: String, batchSize: Int = HTTPLogConfig.defaultBatchSize, flushSeconds: Int = HTTPLogConfig.defaultFlushSeconds) {
        self.url = url
        self.batchSize = batchSize
        self.flushSeconds = flushSeconds
    }

    static let fields: Set<String> = ["url", "batch_size", "flush_seconds"]

    public static func parse(_ object: [String: JSONValue]) -> Result<HTTPLogConfig, PolicyConfigProblems> {
        var problems: [PolicyConfigProblem] = []
        for key in object.keys.sorted() where !fields.contains(key) {
            problems.append(PolicyConfigProblem("/" + JSONPointer.escape(key), "Unknown field; use url, batch_size, flush_seconds (no headers or credentials)."))
        }
        func integer(_ name: String, _ range: ClosedRange<Int>) -> Int? {
            guard let value = object[name], value != .null else { return nil }
            guard case .integer(let whole) = value, let number = Int(exactly: whole), range.contains(number) else {
                problems.append(PolicyConfigProblem("/" + name, "Use a whole number from \(range.lowerBound) to \(range.upperBound)."))
                return nil
            }
            return number
        }
        let batchSize = integer("batch_size", batchSizeRange)
        let flushSeconds = integer("flush_seconds", flushSecondsRange)
        var url: String?
        switch object["url"] {
        case .string(let text)?:
            let trimmed = text.trimmingCharacters(in: .whitespaces)
            if let problem = urlProblem(trimmed) { problems.append(PolicyConfigProblem("/url", problem)) } else { url = trimmed }
        default: problems.append(PolicyConfigProblem("/url", "Required: the collector's http:// or https:// URL."))
        }
        guard problems.isEmpty, let url else { return .failure(PolicyConfigProblems(problems)) }
        return .success(HTTPLogConfig(url: url, batchSize: batchSize ?? defaultBatchSize, flushSeconds: flushSeconds ?? defaultFlushSeconds))
    }

    /// Why a collector URL is refused, or nil. Like an upstream target: http or https with a host,
    /// no credentials in it (they would be stored and shown in the clear), no query or fragment,
    /// no control characters, at most `maximumURLBytes`.
    public static func urlProblem(_ text: String) -> String? {
        let rule = "Give an http:// or https:// URL with a host and no credentials, query or fragment."
        guard !text.isEmpty, text.utf8.count <= maximumURLBytes, !text.unicodeScalars.contains(where: { $0.value < 0x21 || $0.value == 0x7F }),
            let components = URLComponents(string: text), let scheme = components.scheme?.lowercased(), scheme == "http" || scheme == "https",
            let host = components.host, !host.isEmpty, components.user == nil, components.password == nil, components.query == nil,
            components.fragment == nil, !text.contains("@")
        else { return rule }
        if let port = components.port, !(1...65535).contains(port) { return rule }
        return nil
    }

    public var json: JSONValue {
        .object(["url": .string(url), "batch_size": .integer(Int64(batchSize)), "flush_seconds": .integer(Int64(flushSeconds))])
    }

    public var summary: String {
        "NDJSON batches of up to \(batchSize) records to \(url), at least every \(flushSeconds) s"
    }
}
