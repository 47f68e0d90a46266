import Foundation

/// A provider's `request_validation` policy: calls are checked against the OpenAPI document
/// uploaded for the API version before the upstream sees anything. `scope` says what is checked
/// besides the path and method (always: 404 for a path the document lacks, 405 for a method):
/// the parameters (path, query, header), the body, or both. `refuseUnknownQuery` also refuses query
/// parameters the operation does not declare (off by default: clients often add cache busters).
///
/// Read by the portal and the gateway alike (`parse`), like the other policy configs.
public struct RequestValidationConfig: Sendable, Hashable {
    public enum Scope: String, Sendable, CaseIterable {
        case parameters, body, both

        var parameters: Bool { self != .body }
        var body: Bool { self != .parameters }
    }

    public var scope: Scope
    public var refuseUnknownQuery: Bool

    public init(scope: Scope = .both, refuseUnknownQuery: Bool = false) {
        self.scope = scope
        self.refuseUnknownQuery = refuseUnknownQuery
    }

    static let fields: Set<String> = ["validate", "refuse_unknown_query"]

    public static func parse(_ object: [String: JSONValue]) -> Result<RequestValidationConfig, PolicyConfigProblems> {
        var problems: [PolicyConfigProblem] = []
        for key in object.keys.sorted() where !fields.contains(key) {
            problems.append(PolicyConfigProblem("/" + JSONPointer.escape(key), "Unknown field; use validate, refuse_unknown_query."))
        }
        var config = RequestValidationConfig()
        switch object["validate"] {
        case nil, .null?: break
        case .string(let text)? where Scope(rawValue: text) != nil: config.scope = Scope(rawValue: text)!
        default: problems.append(PolicyConfigProblem("/validate", "Use parameters, body or both."))
        }
        switch object["refuse_unknown_query"] {
        case nil, .null?: break
        case .bool(let flag)?: config.refuseUnknownQuery = flag
        default: problems.append(PolicyConfigProblem("/refuse_unknown_query", "Use true (query parameters the document lacks are refused) or false."))
        }
        return problems.isEmpty ? .success(config) : .failure(PolicyConfigProblems(problems))
    }

    public var json: JSONValue {
        .object(["validate": .string(scope.rawValue), "refuse_unknown_query": .bool(refuseUnknownQuery)])
    }

    public var summary: String {
        let what =
            switch scope {
            case .parameters: "path, method and parameters"
            case .body: "path, method and JSON body"
            case .both: "path, method, parameters and JSON body"
            }
        return "checks \(what) against the API's OpenAPI document" + (refuseUnknownQuery ? "; unknown query parameters refused" : "")
    }
}
