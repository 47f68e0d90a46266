import Foundation

/// The call context a transformation's `$variables` read, resolved only when a value uses one.
struct TransformContext {
    var appID: UUID
    var clientID: String
    var teamID: UUID
    var planID: UUID
    var requestID: String
    var clientIP: String

    init(plan: ForwardPlan, requestID: String, clientIP: String) {
        appID = plan.app.id
        clientID = plan.app.clientID
        teamID = plan.app.teamID
        planID = plan.grant.planID
        self.requestID = requestID
        self.clientIP = clientIP
    }

    init(appID: UUID, clientID: String, teamID: UUID, planID: UUID, requestID: String, clientIP: String) {
        self.appID = appID
        self.clientID = clientID
        self.teamID = teamID
        self.planID = planID
        self.requestID = requestID
        self.clientIP = clientIP
    }

    func render(_ template: TransformTemplate) -> String {
        var out = ""
        for part in template.parts {
            switch part {
            case .text(let text): out += text
            case .variable(.appID): out += appID.lowercasedText
            case .variable(.clientID): out += clientID
            case .variable(.teamID): out += teamID.lowercasedText
            case .variable(.plan): out += planID.lowercasedText
            case .variable(.requestID): out += requestID
            case .variable(.clientIP): out += clientIP
            }
        }
        return out
    }
}

/// Applies one set of field operations (remove, rename, set, add — in that order) to a list of
/// fields. Pure; `same` says whether a field's name is the configured one.
enum FieldOperations {
    static func apply(
        _ ops: TransformConfig.FieldOps, to fields: inout [(name: String, value: String)], render: (TransformTemplate) -> String,
        encode: (String) -> String = { $0 }, same: (String, String) -> Bool
    ) {
        if !ops.remove.isEmpty { fields.removeAll { field in ops.remove.contains { same(field.name, $0) } } }
        for rename in ops.rename {
            for index in fields.indices where same(fields[index].name, rename.from) { fields[index].name = rename.to }
        }
        for assignment in ops.set {
            fields.removeAll { same($0.name, assignment.name) }
            fields.append((assignment.name, encode(render(assignment.value))))
        }
        for assignment in ops.add { fields.append((assignment.name, encode(render(assignment.value)))) }
    }

    static func sameHeader(_ a: String, _ b: String) -> Bool {
        a.utf8.count == b.utf8.count && a.lowercased() == b.lowercased()
    }
}

/// The request transformations of a route (every `request_transform` policy in chain order),
/// compiled once per snapshot. Applied while the upstream request head is written.
public final class RequestTransform: Sendable {
    public let steps: [TransformConfig]
    let rewritesURI: Bool

    public init(_ steps: [TransformConfig]) {
        self.steps = steps
        rewritesURI = steps.contains { $0.path != nil || !$0.query.isEmpty }
    }

    /// The upstream path and query (without the target's prefix) after the path rewrites and query
    /// operations.
    func uri(_ uri: String, context: TransformContext) -> String {
        guard rewritesURI else { return uri }
        let queryStart = uri.utf8.firstIndex(of: UInt8(ascii: "?")) ?? uri.endIndex
        var path = String(uri[..<queryStart])
        var query: Substring = queryStart == uri.endIndex ? "" : uri[uri.index(after: queryStart)...]
        var parameters: [(name: String, value: String)]?
        for step in steps {
            if let rewrite = step.path, let rewritten = rewrite.apply(Substring(path)) { path = rewritten }
            guard !step.query.isEmpty else { continue }
            // parameters kept as sent (raw, a value without "=" keeps its absent "="), compared by decoded name
            var list = parameters ?? QueryString.split(query)
            FieldOperations.apply(step.query, to: &list, render: context.render, encode: QueryString.encode) { raw, name in
                QueryString.decodedName(raw) == name
            }
            parameters = list
        }
        if let parameters { query = Substring(QueryString.join(parameters)) }
        return query.isEmpty ? path : path + "?" + query
    }

    /// The client's forwarded headers after the header operations.
    func headers(_ fields: inout [(name: String, value: String)], context: TransformContext) {
        for step in steps where !step.headers.isEmpty {
            FieldOperations.apply(step.headers, to: &fields, render: context.render, same: FieldOperations.sameHeader)
        }
    }
}

/// The response transformations of a route, compiled once per snapshot. The exchange takes the
/// upstream's fields whose names any operation mentions out of the relayed head and hands the
/// result on as added headers, so both client writers (HTTP/1 and HTTP/2) apply it unchanged.
public final class ResponseTransform: Sendable {
    let steps: [TransformConfig.FieldOps]
    /// Every name the operations mention, lowercased.
    public let touched: [String]

    public init(_ steps: [TransformConfig.FieldOps]) {
        self.steps = steps
        var names: [String] = []
        for name in steps.flatMap(\.names).map({ $0.lowercased() }) where !names.contains(name) { names.append(name) }
        touched = names
    }

    /// Removes the touched fields from `response` and returns them transformed.
    func apply(_ response: inout ParsedResponse, bytes: UnsafeRawBufferPointer, context: TransformContext) -> [(name: String, value: String)] {
        var taken: [(name: String, value: String)] = []
        response.fields.removeAll { field in
            guard touched.contains(where: { HTTPHeadParser.equals(bytes, field.name, $0) }) else { return false }
            taken.append(
                (
                    String(decoding: UnsafeRawBufferPointer(rebasing: bytes[field.name]), as: UTF8.self),
                    String(decoding: UnsafeRawBufferPointer(rebasing: bytes[field.value]), as: UTF8.self)
                ))
            return true
        }
        for step in steps { FieldOperations.apply(step, to: &taken, render: context.render, same: FieldOperations.sameHeader) }
        return taken
    }
}

/// Query strings as lists of raw `name=value` parameters.
enum QueryString {
    static func split(_ query: Substring) -> [(name: String, value: String)] {
        guard !query.isEmpty else { return [] }
        return query.split(separator: "&", omittingEmptySubsequences: true).map { pair in
            // the value keeps its "=" so a bare name ("?flag") is forwarded as it came
            if let equals = pair.firstIndex(of: "=") { return (String(pair[..<equals]), String(pair[equals...])) }
            return (String(pair), "")
        }
    }

    static func join(_ parameters: [(name: String, value: String)]) -> String {
        parameters.map { $0.name + $0.value }.joined(separator: "&")
    }

    static func decodedName(_ raw: String) -> String {
        raw.contains("%") ? (raw.removingPercentEncoding ?? raw) : raw
    }

    /// A set or added value: percent-encoded and with its "=".
    static func encode(_ value: String) -> String {
        "=" + (value.addingPercentEncoding(withAllowedCharacters: unreserved) ?? "")
    }

    static let unreserved = CharacterSet(charactersIn: "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
}
