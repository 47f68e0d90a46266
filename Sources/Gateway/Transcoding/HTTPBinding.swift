/// One HTTP route of a gRPC method from its `google.api.http` option (`google.api.HttpRule`): the
/// HTTP method, the path template (`/v1/{name=shelves/*}`), which request field the body fills
/// (`*` for the whole message, empty for none) and which response field is the body. Pure.
public struct HTTPBinding: Sendable, Equatable {
    public var method: String
    public var pathTemplate: String
    public var body: String
    public var responseBody: String

    public init(method: String, pathTemplate: String, body: String = "", responseBody: String = "") {
        self.method = method
        self.pathTemplate = pathTemplate
        self.body = body
        self.responseBody = responseBody
    }

    /// The extension number of `google.api.http` on `google.protobuf.MethodOptions`.
    static let extensionNumber: Int32 = 72_295_728

    /// Reads the option from the unknown fields of a method's options (no generated code for the
    /// `google.api` protos is needed): the rule and its `additional_bindings`, in order.
    static func parse(methodOptionsUnknownFields bytes: [UInt8]) throws(ProtoWire.Malformed) -> [HTTPBinding] {
        var reader = ProtoWire.Reader(bytes: bytes)
        var bindings: [HTTPBinding] = []
        while !reader.isAtEnd {
            let field = try reader.field()
            guard field.number == extensionNumber else { continue }
            guard field.wireType == .lengthDelimited else { throw ProtoWire.Malformed(reason: "google.api.http is not a message") }
            try rule(bytes, field.payload, depth: 0, into: &bindings)
        }
        return bindings
    }

    private static func rule(_ bytes: [UInt8], _ range: Range<Int>, depth: Int, into bindings: inout [HTTPBinding]) throws(ProtoWire.Malformed) {
        var reader = ProtoWire.Reader(bytes: bytes, range: range)
        var binding = HTTPBinding(method: "", pathTemplate: "")
        var additional: [Range<Int>] = []
        while !reader.isAtEnd {
            let field = try reader.field()
            func text() throws(ProtoWire.Malformed) -> String {
                guard field.wireType == .lengthDelimited, let text = String(validating: bytes[field.payload], as: UTF8.self) else {
                    throw ProtoWire.Malformed(reason: "field \(field.number) of an HttpRule is not a string")
                }
                return text
            }
            switch field.number {
            case 2: binding.method = "GET"; binding.pathTemplate = try text()
            case 3: binding.method = "PUT"; binding.pathTemplate = try text()
            case 4: binding.method = "POST"; binding.pathTemplate = try text()
            case 5: binding.method = "DELETE"; binding.pathTemplate = try text()
            case 6: binding.method = "PATCH"; binding.pathTemplate = try text()
            case 7: binding.body = try text()
            case 12: binding.responseBody = try text()
            case 8:
                // CustomHttpPattern { string kind = 1; string path = 2; }
                guard field.wireType == .lengthDelimited else { throw ProtoWire.Malformed(reason: "custom is not a message") }
                var custom = ProtoWire.Reader(bytes: bytes, range: field.payload)
                while !custom.isAtEnd {
                    let part = try custom.field()
                    guard part.wireType == .lengthDelimited, let value = String(validating: bytes[part.payload], as: UTF8.self) else { continue }
                    if part.number == 1 { binding.method = value.uppercased() }
                    if part.number == 2 { binding.pathTemplate = value }
                }
            case 11:
                guard field.wireType == .lengthDelimited else { throw ProtoWire.Malformed(reason: "additional_bindings is not a message") }
                additional.append(field.payload)
            default: continue
            }
        }
        if !binding.method.isEmpty, !binding.pathTemplate.isEmpty { bindings.append(binding) }
        // additional bindings may not nest further (google/api/http.proto)
        guard depth == 0 else { return }
        for range in additional { try rule(bytes, range, depth: 1, into: &bindings) }
    }
}
