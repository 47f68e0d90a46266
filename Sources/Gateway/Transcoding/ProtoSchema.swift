import Foundation
import SwiftProtobuf

/// The messages, enums and services of an uploaded descriptor set, compiled once into plain values
/// the JSON ↔ protobuf transcoder walks (`ProtoJSONTranscoder`). Built by `compile`, which is also the
/// portal's validation of an upload: what the portal accepts is exactly what the gateway can translate.
public struct ProtoSchema: Sendable {
    /// Upper bound of an uploaded descriptor set (a larger one is a 413).
    public static let maximumBytes = 4 * 1024 * 1024
    /// At most this many problems are reported for one upload.
    static let maximumProblems = 25

    /// Message types by full name without the leading dot (`demo.HelloRequest`).
    public private(set) var messages: [String: ProtoMessageType] = [:]
    /// Enum types by full name without the leading dot.
    public private(set) var enums: [String: ProtoEnumType] = [:]
    /// Services in the order of the files and of their declarations.
    public private(set) var services: [ProtoService] = []

    /// Every method of every service, in declaration order.
    public var methods: [ProtoMethod] { services.flatMap(\.methods) }

    /// The method whose gRPC path is `/{package}.{Service}/{Method}`.
    public func method(grpcPath path: String) -> ProtoMethod? { methods.first { $0.grpcPath == path } }

    /// Why an upload was refused: located, readable problems (at most 25).
    public struct Invalid: Error, Sendable, Equatable {
        public var problems: [String]
    }

    /// Parses a serialized `google.protobuf.FileDescriptorSet` and resolves every type it names.
    public static func compile(_ bytes: [UInt8]) throws(Invalid) -> ProtoSchema {
        guard bytes.count <= maximumBytes else { throw Invalid(problems: ["The descriptor set is larger than \(maximumBytes / 1024 / 1024) MiB."]) }
        let set: Google_Protobuf_FileDescriptorSet
        do {
            var options = BinaryDecodingOptions()
            options.messageDepthLimit = 64
            set = try Google_Protobuf_FileDescriptorSet(serializedBytes: bytes, partial: true, options: options)
        } catch {
            // the decoder's error is a Swift enum case (`malformedProtobuf`): said in words instead
            throw Invalid(problems: [
                "The file is not a protobuf descriptor set (google.protobuf.FileDescriptorSet): its bytes do not decode as one. "
                    + "Make one with \"protoc --include_imports --descriptor_set_out=api.binpb …\" or \"buf build -o api.binpb\"."
            ])
        }
        var compiler = Compiler()
        compiler.run(set)
        guard compiler.problems.isEmpty else { throw Invalid(problems: Array(compiler.problems.prefix(maximumProblems))) }
        return compiler.schema
    }

    /// Walks the files twice: first declares every type, then resolves field and method types.
    private struct Compiler {
        var schema = ProtoSchema()
        var problems: [String] = []
        var pendingFields: [(message: String, index: Int, typeName: String, declared: Google_Protobuf_FieldDescriptorProto.TypeEnum)] = []

        mutating func problem(_ text: String) {
            if problems.count < ProtoSchema.maximumProblems { problems.append(text) }
        }

        mutating func run(_ set: Google_Protobuf_FileDescriptorSet) {
            if set.file.isEmpty { problem("The descriptor set holds no files.") }
            var fileNames = Set<String>()
            for file in set.file {
                if !fileNames.insert(file.name).inserted { problem("The file \(file.name) appears twice.") }
                let syntax = file.syntax.isEmpty ? "proto2" : file.syntax
                guard let rules = FieldRules(syntax: syntax) else {
                    problem("\(file.name): syntax \"\(file.syntax)\" is not supported (proto2, proto3 and editions are).")
                    continue
                }
                let prefix = file.package.isEmpty ? "" : file.package + "."
                for message in file.messageType { declare(message, prefix: prefix, rules: rules, file: file.name) }
                for enumeration in file.enumType { declare(enumeration, prefix: prefix, file: file.name) }
            }
            resolveFields()
            for file in set.file where FieldRules(syntax: file.syntax.isEmpty ? "proto2" : file.syntax) != nil {
                let prefix = file.package.isEmpty ? "" : file.package + "."
                for service in file.service { declare(service, prefix: prefix, file: file.name) }
            }
            if problems.isEmpty, schema.methods.isEmpty {
                problem("The descriptor set declares no service with a method: there is nothing to translate. Build it from the .proto files that declare the service (with --include_imports).")
            }
        }

        /// What a file's syntax makes of fields that say nothing: proto3 packs repeated scalars and
        /// gives singular scalars no presence; proto2 the opposite; editions (2023) pack and keep
        /// presence (their per-field features are not read: they only refine these defaults).
        struct FieldRules {
            var packedByDefault: Bool
            var implicitPresence: Bool

            init?(syntax: String) {
                switch syntax {
                case "proto3": (packedByDefault, implicitPresence) = (true, true)
                case "proto2": (packedByDefault, implicitPresence) = (false, false)
                case "editions": (packedByDefault, implicitPresence) = (true, false)
                default: return nil
                }
            }
        }

        mutating func declare(_ message: Google_Protobuf_DescriptorProto, prefix: String, rules: FieldRules, file: String) {
            let fullName = prefix + message.name
            guard schema.messages[fullName] == nil, schema.enums[fullName] == nil else {
                problem("\(file): the type \(fullName) is defined twice.")
                return
            }
            var type = ProtoMessageType(fullName: fullName, isMapEntry: message.options.mapEntry)
            type.oneofNames = message.oneofDecl.map(\.name)
            for field in message.field {
                if field.type == .group {
                    problem("\(file): \(fullName).\(field.name) is a group, which is not supported.")
                    continue
                }
                guard field.number >= 1 else {
                    problem("\(file): \(fullName).\(field.name) has an invalid number \(field.number).")
                    continue
                }
                let repeated = field.label == .repeated
                let inOneof = field.hasOneofIndex && Int(field.oneofIndex) < message.oneofDecl.count
                let kind = ProtoFieldKind(field.type)
                // enums are packable too (their kind is resolved later, so the declared type decides)
                let packable = repeated && (kind?.isPackable ?? (field.type == .enum))
                let packed = packable && (field.options.hasPacked ? field.options.packed : rules.packedByDefault)
                let presence = !repeated && (field.type == .message || inOneof || !rules.implicitPresence)
                let protoField = ProtoField(
                    name: field.name, jsonName: field.hasJsonName ? field.jsonName : ProtoField.lowerCamelCase(field.name), number: field.number,
                    kind: kind ?? .bool, isRepeated: repeated, isPacked: packed, hasPresence: presence,
                    // a proto3 `optional` field sits in a synthetic oneof of its own: it has presence but no rival members
                    oneofIndex: inOneof && !field.proto3Optional ? Int(field.oneofIndex) : nil)
                if kind == nil || field.type == .message || field.type == .enum {
                    pendingFields.append((fullName, type.fields.count, field.typeName, field.type))
                }
                type.add(protoField)
            }
            schema.messages[fullName] = type
            for nested in message.nestedType { declare(nested, prefix: fullName + ".", rules: rules, file: file) }
            for enumeration in message.enumType { declare(enumeration, prefix: fullName + ".", file: file) }
        }

        mutating func declare(_ enumeration: Google_Protobuf_EnumDescriptorProto, prefix: String, file: String) {
            let fullName = prefix + enumeration.name
            guard schema.messages[fullName] == nil, schema.enums[fullName] == nil else {
                problem("\(file): the type \(fullName) is defined twice.")
                return
            }
            var type = ProtoEnumType(fullName: fullName)
            for value in enumeration.value {
                if type.names[value.number] == nil { type.names[value.number] = value.name }
                type.numbers[value.name] = value.number
            }
            if enumeration.value.isEmpty { problem("\(file): the enum \(fullName) has no values.") }
            schema.enums[fullName] = type
        }

        mutating func resolveFields() {
            for pending in pendingFields {
                guard pending.typeName.hasPrefix(".") else {
                    problem("\(pending.message): a field refers to \"\(pending.typeName)\", which is not a fully-qualified type name.")
                    continue
                }
                let name = String(pending.typeName.dropFirst())
                let kind: ProtoFieldKind
                if schema.messages[name] != nil, pending.declared != .enum {
                    kind = .message(name)
                } else if schema.enums[name] != nil, pending.declared != .message {
                    kind = .enumeration(name)
                } else {
                    problem("\(pending.message): the type \(name) is not in the descriptor set (build it with --include_imports).")
                    continue
                }
                schema.messages[pending.message]?.fields[pending.index].kind = kind
            }
            // a map field is a repeated field of a map-entry message: its key and value types come from that entry
            for (name, message) in schema.messages {
                for (index, field) in message.fields.enumerated() where field.isRepeated {
                    guard case .message(let entryName) = field.kind, let entry = schema.messages[entryName], entry.isMapEntry else { continue }
                    guard entry.field(number: 1) != nil, entry.field(number: 2) != nil else {
                        problem("\(name).\(field.name): the map entry \(entryName) needs a key (1) and a value (2).")
                        continue
                    }
                    schema.messages[name]?.fields[index].isMap = true
                }
            }
        }

        mutating func declare(_ service: Google_Protobuf_ServiceDescriptorProto, prefix: String, file: String) {
            let fullName = prefix + service.name
            var methods: [ProtoMethod] = []
            for method in service.method {
                var resolved: [String] = []
                for typeName in [method.inputType, method.outputType] {
                    let name = typeName.hasPrefix(".") ? String(typeName.dropFirst()) : typeName
                    if schema.messages[name] == nil {
                        problem("\(fullName).\(method.name): the message \(name) is not in the descriptor set (build it with --include_imports).")
                    }
                    resolved.append(name)
                }
                var bindings: [HTTPBinding] = []
                do {
                    bindings = try HTTPBinding.parse(methodOptionsUnknownFields: Array(method.options.unknownFields.data))
                } catch {
                    problem("\(fullName).\(method.name): its google.api.http option is malformed (\(error.reason)).")
                }
                methods.append(
                    ProtoMethod(
                        service: fullName, name: method.name, inputType: resolved[0], outputType: resolved[1],
                        clientStreaming: method.clientStreaming, serverStreaming: method.serverStreaming, httpBindings: bindings))
            }
            if schema.services.contains(where: { $0.name == fullName }) {
                problem("\(file): the service \(fullName) is defined twice.")
                return
            }
            schema.services.append(ProtoService(name: fullName, methods: methods))
        }
    }
}

/// A message type: its fields by number and by JSON key.
public struct ProtoMessageType: Sendable {
    public var fullName: String
    public var isMapEntry: Bool
    public internal(set) var fields: [ProtoField] = []
    var oneofNames: [String] = []
    private var byNumber: [Int32: Int] = [:]
    private var byJSONKey: [String: Int] = [:]

    init(fullName: String, isMapEntry: Bool) {
        self.fullName = fullName
        self.isMapEntry = isMapEntry
    }

    mutating func add(_ field: ProtoField) {
        byNumber[field.number] = fields.count
        // the proto3 JSON mapping accepts both the JSON name and the declared name on input
        byJSONKey[field.jsonName] = fields.count
        byJSONKey[field.name] = fields.count
        fields.append(field)
    }

    func field(number: Int32) -> ProtoField? { byNumber[number].map { fields[$0] } }
    func fieldIndex(number: Int32) -> Int? { byNumber[number] }
    func fieldIndex(jsonKey: String) -> Int? { byJSONKey[jsonKey] }
}

/// One field of a message type.
public struct ProtoField: Sendable {
    public var name: String
    public var jsonName: String
    public var number: Int32
    public var kind: ProtoFieldKind
    public var isRepeated: Bool
    public var isPacked: Bool
    /// Whether an unset field is told apart from its default (messages, oneof members, proto3
    /// `optional`, proto2 singular fields): such a field is written whenever it is set.
    public var hasPresence: Bool
    /// The index of the real oneof the field belongs to (not the synthetic one of proto3 `optional`).
    public var oneofIndex: Int?
    public var isMap = false

    /// protoc's default JSON name: underscores dropped, the letter after each one upper-cased.
    static func lowerCamelCase(_ name: String) -> String {
        var out = ""
        var upper = false
        for character in name {
            if character == "_" {
                upper = true
            } else if upper {
                out += character.uppercased()
                upper = false
            } else {
                out.append(character)
            }
        }
        return out
    }
}

/// The type of a field's values.
public enum ProtoFieldKind: Sendable, Equatable {
    case double, float, int64, uint64, int32, fixed64, fixed32, bool, string, bytes, uint32, sfixed32, sfixed64, sint32, sint64
    case enumeration(String)
    case message(String)

    init?(_ type: Google_Protobuf_FieldDescriptorProto.TypeEnum) {
        switch type {
        case .double: self = .double
        case .float: self = .float
        case .int64: self = .int64
        case .uint64: self = .uint64
        case .int32: self = .int32
        case .fixed64: self = .fixed64
        case .fixed32: self = .fixed32
        case .bool: self = .bool
        case .string: self = .string
        case .bytes: self = .bytes
        case .uint32: self = .uint32
        case .sfixed32: self = .sfixed32
        case .sfixed64: self = .sfixed64
        case .sint32: self = .sint32
        case .sint64: self = .sint64
        default: return nil
        }
    }

    /// Scalars that repeated fields may carry packed into one length-delimited run.
    var isPackable: Bool {
        switch self {
        case .string, .bytes, .message: false
        default: true
        }
    }

    var wireType: ProtoWire.WireType {
        switch self {
        case .double, .fixed64, .sfixed64: .fixed64
        case .float, .fixed32, .sfixed32: .fixed32
        case .string, .bytes, .message: .lengthDelimited
        default: .varint
        }
    }
}

/// An enum type: names by number (the first name of an aliased number) and numbers by name.
public struct ProtoEnumType: Sendable {
    public var fullName: String
    var names: [Int32: String] = [:]
    var numbers: [String: Int32] = [:]
}

/// A service and its methods.
public struct ProtoService: Sendable {
    /// The full name, `package.Service`.
    public var name: String
    public var methods: [ProtoMethod]
}

/// One RPC method, with the HTTP bindings its `google.api.http` option declares.
public struct ProtoMethod: Sendable {
    public var service: String
    public var name: String
    public var inputType: String
    public var outputType: String
    public var clientStreaming: Bool
    public var serverStreaming: Bool
    public var httpBindings: [HTTPBinding]

    /// The gRPC path, `/{package}.{Service}/{Method}`.
    public var grpcPath: String { "/\(service)/\(name)" }

    /// JSON clients can call every method at its gRPC path (a client or bidirectional stream as
    /// newline-delimited JSON), and at the `google.api.http` routes `routedBindings` lists.
    public var isTranslated: Bool { true }

    /// The `google.api.http` bindings the gateway serves, in declaration order; the others have
    /// an `unroutedReason`.
    public var routedBindings: [HTTPBinding] { httpBindings.filter { unroutedReason($0) == nil } }

    /// Why the gateway does not serve one of the method's bindings; nil when it does. A client or
    /// bidirectional stream's body is NDJSON, each line a whole message, so its route can fill
    /// nothing else: no path variables (a value for the whole stream would have to be copied into
    /// every message, which the HttpRule does not define) and `body: "*"`.
    public func unroutedReason(_ binding: HTTPBinding) -> String? {
        guard let template = PathTemplate(binding.pathTemplate) else {
            return "its path template is not one the gateway can read (literals, *, **, {field=pattern}, :verb, starting with /)"
        }
        guard clientStreaming else { return nil }
        if !template.variables.isEmpty {
            return "a client or bidirectional stream's messages are whole NDJSON lines, so path variables would have nothing to fill"
        }
        if binding.body != "*" {
            return "a client or bidirectional stream's messages are whole NDJSON lines, so its rule needs body: \"*\""
        }
        return nil
    }
}
