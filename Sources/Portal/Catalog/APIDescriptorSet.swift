import Crypto
import Foundation
import Gateway

/// A gRPC API version's protobuf descriptor set, validated by the gateway's own compiler
/// (`ProtoSchema.compile`) so that what the portal accepts is exactly what gateways translate. Pure.
struct APIDescriptorSet: Sendable {
    let content: [UInt8]
    let schema: ProtoSchema

    static var maximumBytes: Int { ProtoSchema.maximumBytes }

    /// The 413 for an upload over the bound.
    static var tooLarge: AppError {
        AppError(
            status: .contentTooLarge, title: "Descriptor set too large",
            detail: "A descriptor set may be at most \(maximumBytes / 1024 / 1024) MiB. Leave out source info (no --include_source_info).")
    }

    /// Parses and resolves the set; the problems of a refused one are readable sentences.
    static func parse(_ bytes: [UInt8]) throws(ProtoSchema.Invalid) -> APIDescriptorSet {
        APIDescriptorSet(content: bytes, schema: try ProtoSchema.compile(bytes))
    }

    var sha256: String { SHA256.hash(data: content).map { String(format: "%02x", $0) }.joined() }
}

/// A stored descriptor set and what the catalog shows of it.
struct StoredDescriptorSet: Sendable {
    var content: [UInt8]
    var sha256: String
    var services: [String]
    var methodCount: Int
    var uploadedAt: Date

    /// The compiled schema; nil for a stored set the compiler no longer accepts (never shown as translated).
    var schema: ProtoSchema? { try? ProtoSchema.compile(content) }
}

/// One method as the reference page and the JSON API list it: its gRPC path, its kind and the
/// HTTP routes JSON clients call it by (under the API's base path). Pure.
struct TranslatedOperation: Sendable, Equatable {
    struct Route: Sendable, Equatable {
        var method: String
        var path: String
    }

    /// A `google.api.http` binding the gateway does not serve, and why (`ProtoMethod.unroutedReason`).
    struct UnroutedRoute: Sendable, Equatable {
        var method: String
        var path: String
        var reason: String
        /// The binding as the proto declares it (`post "/v1/chats/{id}"`), for the reference page:
        /// shown beside the gateway's URLs, a path would read as one more to call.
        var declared: String = ""
    }

    var grpcPath: String
    var kind: String
    var inputType: String
    var outputType: String
    var translated: Bool
    var routes: [Route]
    var unrouted: [UnroutedRoute] = []

    static func list(_ schema: ProtoSchema, basePath: String) -> [TranslatedOperation] {
        schema.methods.map { method in
            let kind =
                switch (method.clientStreaming, method.serverStreaming) {
                case (false, false): "unary"
                case (false, true): "server streaming"
                case (true, false): "client streaming"
                case (true, true): "bidirectional streaming"
                }
            var routes: [Route] = []
            var unrouted: [UnroutedRoute] = []
            if method.isTranslated {
                routes.append(Route(method: "POST", path: basePath + method.grpcPath))
                // the gateway's own rule, so the page lists exactly the routes it serves
                for binding in method.httpBindings {
                    if let reason = method.unroutedReason(binding) {
                        unrouted.append(
                            UnroutedRoute(
                                method: binding.method, path: basePath + binding.pathTemplate, reason: reason,
                                declared: "\(binding.method.lowercased()) \"\(binding.pathTemplate)\""))
                    } else {
                        routes.append(Route(method: binding.method, path: basePath + binding.pathTemplate))
                    }
                }
            }
            return TranslatedOperation(
                grpcPath: method.grpcPath, kind: kind, inputType: method.inputType, outputType: method.outputType, translated: method.isTranslated,
                routes: routes, unrouted: unrouted)
        }
    }
}
