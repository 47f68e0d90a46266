import Foundation

/// A provider's `request_transform` or `response_transform` policy: header (and, on the request,
/// query parameter) operations, and on the request a path rewrite. Operations run in a fixed
/// order — remove, rename, set, add — whatever order the JSON lists them in, so a policy means one
/// thing. Values are text with call context (`$app_id`, `$client_id`, `$team_id`, `$plan`,
/// `$request_id`, `$client_ip`; `$$` is a literal `$`).
///
/// The portal validates with `parse` and the gateway reads the stored JSON with it (like
/// `ClientRateLimitConfig`), so what is accepted is exactly what is applied.
public struct TransformConfig: Sendable, Hashable {
    public enum Side: Sendable, Hashable { case request, response }

    /// Operations on one set of fields (headers, or query parameters). Names as configured; headers
    /// are compared case-insensitively, query parameters exactly (after percent-decoding).
    public struct FieldOps: Sendable, Hashable {
        public var remove: [String] = []
        public var rename: [Rename] = []
        public var set: [Assignment] = []
        public var add: [Assignment] = []

        public init(remove: [String] = [], rename: [Rename] = [], set: [Assignment] = [], add: [Assignment] = []) {
            self.remove = remove
            self.rename = rename
            self.set = set
            self.add = add
        }

        public var isEmpty: Bool { remove.isEmpty && rename.isEmpty && set.isEmpty && add.isEmpty }
        var count: Int { remove.count + rename.count + set.count + add.count }

        /// Every name the operations read or write (lowercased for headers by the caller).
        var names: [String] { remove + rename.flatMap { [$0.from, $0.to] } + set.map(\.name) + add.map(\.name) }
    }

    public struct Rename: Sendable, Hashable {
        public var from: String
        public var to: String
        public init(from: String, to: String) {
            self.from = from
            self.to = to
        }
    }

    public struct Assignment: Sendable, Hashable {
        public var name: String
        public var value: TransformTemplate
        public init(name: String, value: TransformTemplate) {
            self.name = name
            self.value = value
        }
    }

    public var side: Side
    public var headers: FieldOps
    public var query: FieldOps
    public var path: PathRewrite?

    public init(side: Side, headers: FieldOps = FieldOps(), query: FieldOps = FieldOps(), path: PathRewrite? = nil) {
        self.side = side
        self.headers = headers
        self.query = query
        self.path = path
    }

    public static let maximumOperations = 32
    public static let maximumNameBytes = 64
    public static let maximumValueBytes = 512

    /// Request headers nobody may touch: hop-by-hop ones and framing (the gateway relays the body
    /// with the client's framing), `Host` (the target's), credentials (they stay at the gateway) and
    /// the headers the gateway sets itself.
    static let refusedRequestHeaders: Set<String> = [
        "connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade", "proxy-authenticate",
        "proxy-authorization", "host", "content-length", "authorization", "x-api-key", "x-request-id", "forwarded",
    ]
    /// Response headers the gateway writes or relays by its own rules: framing, hop-by-hop, the rate
    /// limit, deprecation, cache and security headers, and CORS (the CORS policy's).
    static let refusedResponseHeaders: Set<String> = [
        "connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade", "proxy-authenticate",
        "content-length", "x-request-id", "ratelimit", "ratelimit-policy", "retry-after", "deprecation", "sunset", "cache-status",
        "strict-transport-security",
    ]
    static let refusedPrefixes = ["x-tollgate-", "x-forwarded-"]

    static func headerNameProblem(_ name: String, side: Side) -> String? {
        guard !name.isEmpty, name.utf8.count <= maximumNameBytes, name.utf8.allSatisfy(isTokenByte) else {
            return "Give a header name of up to \(maximumNameBytes) letters, digits or -_. (e.g. X-Caller)."
        }
        let lower = name.lowercased()
        let refused = side == .request ? refusedRequestHeaders : refusedResponseHeaders
        if refused.contains(lower) || refusedPrefixes.contains(where: lower.hasPrefix) || (side == .response && lower.hasPrefix("access-control-")) {
            return "\(name) is the gateway's to set (hop-by-hop, framing, Host, credentials, X-Tollgate-*, X-Forwarded-*, X-Request-Id, rate limits, CORS); it cannot be transformed."
        }
        return nil
    }

    static func queryNameProblem(_ name: String) -> String? {
        guard !name.isEmpty, name.utf8.count <= maximumNameBytes, name.utf8.allSatisfy(isQueryNameByte) else {
            return "Give a parameter name of up to \(maximumNameBytes) letters, digits or -_.~[] (e.g. api_version)."
        }
        return nil
    }

    static func isTokenByte(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"): true
        case UInt8(ascii: "-"), UInt8(ascii: "_"), UInt8(ascii: "."): true
        default: false
        }
    }

    static func isQueryNameByte(_ byte: UInt8) -> Bool {
        isTokenByte(byte) || byte == UInt8(ascii: "~") || byte == UInt8(ascii: "[") || byte == UInt8(ascii: "]")
    }

    /// Reads and checks a config object. Every problem is reported with its field's pointer.
    public static func parse(_ object: [String: JSONValue], side: Side) -> Result<TransformConfig, PolicyConfigProblems> {
        var problems: [PolicyConfigProblem] = []
        let allowed: [String] = side == .request ? ["headers", "query", "path"] : ["headers"]
        for key in object.keys.sorted() where !allowed.contains(key) {
            problems.append(PolicyConfigProblem("/" + JSONPointer.escape(key), "Unknown field; use \(allowed.joined(separator: ", "))."))
        }
        var config = TransformConfig(side: side)
        if let value = object["headers"], value != .null {
            config.headers = fieldOps(value, at: "/headers", problems: &problems) { headerNameProblem($0, side: side) } valueCheck: { value in
                value.utf8.allSatisfy { $0 == 0x09 || (0x20...0x7E).contains($0) } ? nil : "Use printable ASCII (no line breaks or control characters)."
            }
        }
        if side == .request, let value = object["query"], value != .null {
            config.query = fieldOps(value, at: "/query", problems: &problems, nameCheck: queryNameProblem) { value in
                value.unicodeScalars.allSatisfy { $0.value >= 0x20 && $0.value != 0x7F } ? nil : "No line breaks or control characters."
            }
        }
        if side == .request, let value = object["path"], value != .null {
            switch value {
            case .object(let fields):
                for key in fields.keys.sorted() where key != "match" && key != "replace" {
                    problems.append(PolicyConfigProblem("/path/" + JSONPointer.escape(key), "Unknown field; a path rewrite has match and replace."))
                }
                guard case .string(let match)? = fields["match"], case .string(let replace)? = fields["replace"] else {
                    problems.append(PolicyConfigProblem("/path", "Give match and replace, e.g. {\"match\": \"/users/{id}\", \"replace\": \"/v2/people/{id}\"}."))
                    break
                }
                switch PathRewrite.parse(match: match, replace: replace) {
                case .success(let rewrite): config.path = rewrite
                case .failure(let problem): problems.append(problem)
                }
            default:
                problems.append(PolicyConfigProblem("/path", "Give an object with match and replace."))
            }
        }
        if problems.isEmpty && config.headers.count + config.query.count > maximumOperations {
            problems.append(PolicyConfigProblem("", "A transformation takes at most \(maximumOperations) operations; split it into several policies."))
        }
        if problems.isEmpty && config.headers.isEmpty && config.query.isEmpty && config.path == nil {
            problems.append(PolicyConfigProblem(side == .request ? "/headers" : "/headers", "The transformation does nothing; give at least one operation."))
        }
        return problems.isEmpty ? .success(config) : .failure(PolicyConfigProblems(problems))
    }

    private static func fieldOps(
        _ value: JSONValue, at base: String, problems: inout [PolicyConfigProblem], nameCheck: (String) -> String?, valueCheck: (String) -> String?
    ) -> FieldOps {
        guard case .object(let object) = value else {
            problems.append(PolicyConfigProblem(base, "Give an object with remove, rename, set and add."))
            return FieldOps()
        }
        var ops = FieldOps()
        for key in object.keys.sorted() where !["remove", "rename", "set", "add"].contains(key) {
            problems.append(PolicyConfigProblem(base + "/" + JSONPointer.escape(key), "Unknown field; use remove, rename, set, add."))
        }
        func name(_ text: String, at pointer: String) -> String? {
            if let problem = nameCheck(text) {
                problems.append(PolicyConfigProblem(pointer, problem))
                return nil
            }
            return text
        }
        if let remove = object["remove"], remove != .null {
            if case .array(let items) = remove {
                for (index, item) in items.enumerated() {
                    guard case .string(let text) = item else {
                        problems.append(PolicyConfigProblem(base + "/remove/\(index)", "Give a name."))
                        continue
                    }
                    if let checked = name(text, at: base + "/remove/\(index)") { ops.remove.append(checked) }
                }
            } else {
                problems.append(PolicyConfigProblem(base + "/remove", "Give a list of names."))
            }
        }
        if let rename = object["rename"], rename != .null {
            if case .object(let pairs) = rename {
                for key in pairs.keys.sorted() {
                    let at = base + "/rename/" + JSONPointer.escape(key)
                    guard case .string(let target)? = pairs[key] else {
                        problems.append(PolicyConfigProblem(at, "Give the new name."))
                        continue
                    }
                    if let from = name(key, at: at), let to = name(target, at: at) { ops.rename.append(Rename(from: from, to: to)) }
                }
            } else {
                problems.append(PolicyConfigProblem(base + "/rename", "Give an object of old name: new name."))
            }
        }
        for operation in ["set", "add"] {
            guard let given = object[operation], given != .null else { continue }
            guard case .object(let pairs) = given else {
                problems.append(PolicyConfigProblem(base + "/" + operation, "Give an object of name: value."))
                continue
            }
            for key in pairs.keys.sorted() {
                let at = base + "/" + operation + "/" + JSONPointer.escape(key)
                guard case .string(let text)? = pairs[key] else {
                    problems.append(PolicyConfigProblem(at, "Give the value as text."))
                    continue
                }
                guard let checked = name(key, at: at) else { continue }
                if text.utf8.count > maximumValueBytes {
                    problems.append(PolicyConfigProblem(at, "A value is at most \(maximumValueBytes) bytes."))
                    continue
                }
                if let problem = valueCheck(text) {
                    problems.append(PolicyConfigProblem(at, problem))
                    continue
                }
                switch TransformTemplate.parse(text) {
                case .success(let template):
                    let assignment = Assignment(name: checked, value: template)
                    if operation == "set" { ops.set.append(assignment) } else { ops.add.append(assignment) }
                case .failure(let problem): problems.append(PolicyConfigProblem(at, problem.message))
                }
            }
        }
        return ops
    }

    /// The config as stored and shown.
    public var json: JSONValue {
        func opsJSON(_ ops: FieldOps) -> JSONValue {
            var object: [String: JSONValue] = [:]
            if !ops.remove.isEmpty { object["remove"] = .array(ops.remove.map(JSONValue.string)) }
            if !ops.rename.isEmpty { object["rename"] = .object(Dictionary(ops.rename.map { ($0.from, JSONValue.string($0.to)) }, uniquingKeysWith: { $1 })) }
            if !ops.set.isEmpty { object["set"] = .object(Dictionary(ops.set.map { ($0.name, JSONValue.string($0.value.text)) }, uniquingKeysWith: { $1 })) }
            if !ops.add.isEmpty { object["add"] = .object(Dictionary(ops.add.map { ($0.name, JSONValue.string($0.value.text)) }, uniquingKeysWith: { $1 })) }
            return .object(object)
        }
        var object: [String: JSONValue] = [:]
        if !headers.isEmpty { object["headers"] = opsJSON(headers) }
        if !query.isEmpty { object["query"] = opsJSON(query) }
        if let path { object["path"] = .object(["match": .string(path.match), "replace": .string(path.replace)]) }
        return .object(object)
    }

    /// One line for people: "headers: remove X-Debug; set X-Caller; path /users/{id} → /v2/people/{id}".
    public var summary: String {
        func describe(_ label: String, _ ops: FieldOps) -> String? {
            guard !ops.isEmpty else { return nil }
            var parts: [String] = []
            if !ops.remove.isEmpty { parts.append("remove " + ops.remove.joined(separator: ", ")) }
            if !ops.rename.isEmpty { parts.append("rename " + ops.rename.map { "\($0.from) → \($0.to)" }.joined(separator: ", ")) }
            if !ops.set.isEmpty { parts.append("set " + ops.set.map(\.name).joined(separator: ", ")) }
            if !ops.add.isEmpty { parts.append("add " + ops.add.map(\.name).joined(separator: ", ")) }
            return label + ": " + parts.joined(separator: "; ")
        }
        let parts = [describe("headers", headers), describe("query", query), path.map { "path \($0.match) → \($0.replace)" }].compactMap { $0 }
        return parts.joined(separator: "; ")
    }
}

/// A value with call context: literal text and `$variables`, parsed once.
public struct TransformTemplate: Sendable, Hashable {
    public enum Variable: String, Sendable, Hashable, CaseIterable {
        case appID = "app_id", clientID = "client_id", teamID = "team_id", plan, requestID = "request_id", clientIP = "client_ip"
    }

    public enum Part: Sendable, Hashable {
        case text(String)
        case variable(Variable)
    }

    public var parts: [Part]
    /// The value as written (for storage and the form).
    public var text: String

    /// Why a value was refused.
    public struct Problem: Error, Sendable, Equatable { public var message: String }

    public static func parse(_ text: String) -> Result<TransformTemplate, Problem> {
        var parts: [Part] = []
        var literal = ""
        var scalars = Substring(text).unicodeScalars[...]
        while let scalar = scalars.popFirst() {
            guard scalar == "$" else {
                literal.unicodeScalars.append(scalar)
                continue
            }
            if scalars.first == "$" {
                scalars.removeFirst()
                literal.append("$")
                continue
            }
            let name = String(String.UnicodeScalarView(scalars.prefix { ($0 >= "a" && $0 <= "z") || $0 == "_" }))
            guard let variable = Variable(rawValue: name) else {
                let known = Variable.allCases.map { "$" + $0.rawValue }.joined(separator: ", ")
                return .failure(Problem(message: "Unknown variable $\(name); use \(known), or $$ for a literal $."))
            }
            scalars.removeFirst(name.unicodeScalars.count)
            if !literal.isEmpty { parts.append(.text(literal)) }
            literal = ""
            parts.append(.variable(variable))
        }
        if !literal.isEmpty { parts.append(.text(literal)) }
        return .success(TransformTemplate(parts: parts, text: text))
    }
}

/// A path rewrite: `match` is the path after the API's base path, segment by segment, where
/// `{name}` captures one segment; `replace` is the upstream path with the captures put back.
/// A path that does not match is forwarded as it is.
public struct PathRewrite: Sendable, Hashable {
    enum Segment: Sendable, Hashable {
        case literal(String)
        case capture(String)
    }

    public let match: String
    public let replace: String
    let pattern: [Segment]
    let template: [Segment]

    public static let maximumBytes = 256
    public static let maximumSegments = 16

    static func parse(match: String, replace: String) -> Result<PathRewrite, PolicyConfigProblem> {
        func segments(_ text: String, _ pointer: String) -> Result<[Segment], PolicyConfigProblem> {
            guard text.utf8.first == UInt8(ascii: "/"), text.utf8.count <= maximumBytes else {
                return .failure(PolicyConfigProblem(pointer, "Give a path starting with / of up to \(maximumBytes) bytes, e.g. /users/{id}."))
            }
            let parts = text.split(separator: "/", omittingEmptySubsequences: false).dropFirst()
            if parts.count > maximumSegments { return .failure(PolicyConfigProblem(pointer, "A path has at most \(maximumSegments) segments.")) }
            var out: [Segment] = []
            for part in parts {
                if part.hasPrefix("{") && part.hasSuffix("}") && part.count > 2 {
                    let name = part.dropFirst().dropLast()
                    guard name.utf8.allSatisfy({ TransformConfig.isTokenByte($0) && $0 != UInt8(ascii: ".") && $0 != UInt8(ascii: "-") }) else {
                        return .failure(PolicyConfigProblem(pointer, "A capture is {name} with letters, digits and _ only."))
                    }
                    out.append(.capture(String(name)))
                } else {
                    guard part.utf8.allSatisfy(isPathByte), part != ".", part != ".." else {
                        return .failure(
                            PolicyConfigProblem(pointer, "Segments use letters, digits and -._~!&'()*+,;=:@% (no . or .. segments), captures {name}."))
                    }
                    out.append(.literal(String(part)))
                }
            }
            return .success(out)
        }
        let pattern: [Segment]
        let template: [Segment]
        switch segments(match, "/path/match") {
        case .success(let parsed): pattern = parsed
        case .failure(let problem): return .failure(problem)
        }
        switch segments(replace, "/path/replace") {
        case .success(let parsed): template = parsed
        case .failure(let problem): return .failure(problem)
        }
        var captured: Set<String> = []
        for case .capture(let name) in pattern {
            guard captured.insert(name).inserted else { return .failure(PolicyConfigProblem("/path/match", "{\(name)} is captured twice.")) }
        }
        for case .capture(let name) in template where !captured.contains(name) {
            return .failure(PolicyConfigProblem("/path/replace", "{\(name)} is not captured by match."))
        }
        return .success(PathRewrite(match: match, replace: replace, pattern: pattern, template: template))
    }

    static func isPathByte(_ byte: UInt8) -> Bool {
        if TransformConfig.isTokenByte(byte) { return true }
        return switch byte {
        case UInt8(ascii: "~"), UInt8(ascii: "!"), UInt8(ascii: "&"), UInt8(ascii: "'"), UInt8(ascii: "("), UInt8(ascii: ")"), UInt8(ascii: "*"),
            UInt8(ascii: "+"), UInt8(ascii: ","), UInt8(ascii: ";"), UInt8(ascii: "="), UInt8(ascii: ":"), UInt8(ascii: "@"), UInt8(ascii: "%"):
            true
        default: false
        }
    }

    /// The rewritten path, or nil when `path` (no query) does not match. A captured segment that
    /// is `.`/`..` (also percent-encoded) never matches: it would walk the upstream's path.
    func apply(_ path: Substring) -> String? {
        let parts = path.split(separator: "/", omittingEmptySubsequences: false).dropFirst()
        guard parts.count == pattern.count else { return nil }
        var captures: [(String, Substring)] = []
        for (segment, part) in zip(pattern, parts) {
            switch segment {
            case .literal(let text): guard part == text else { return nil }
            case .capture(let name):
                let decoded = part.replacingOccurrences(of: "%2e", with: ".", options: .caseInsensitive)
                guard !part.isEmpty, decoded != ".", decoded != ".." else { return nil }
                captures.append((name, part))
            }
        }
        var out = ""
        for segment in template {
            out += "/"
            switch segment {
            case .literal(let text): out += text
            case .capture(let name): out += captures.first { $0.0 == name }.map { String($0.1) } ?? ""
            }
        }
        return out.isEmpty ? "/" : out
    }
}
