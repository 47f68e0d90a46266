import Foundation
import SwiftProtobuf
import Testing

@testable import Gateway

/// Fixtures made by stock tools (scripts/transcoding-fixtures.sh): protoc's descriptor sets and
/// python protobuf's wire bytes and canonical JSON for the cases in scripts/transcoding_vectors.py.
enum TranscodingFixtures {
    static let directory = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("TranscodingVectors")

    static func bytes(_ name: String) throws -> [UInt8] { Array(try Data(contentsOf: directory.appendingPathComponent(name))) }

    static func kitchen() throws -> ProtoSchema { try ProtoSchema.compile(bytes("kitchen.binpb")) }

    struct Vector: Decodable {
        var name: String
        var message: String
        var json: String
        var wire: String
        var canonical: String
        var exact: Bool
    }

    static func vectors() throws -> [Vector] {
        try JSONDecoder().decode([Vector].self, from: Data(contentsOf: directory.appendingPathComponent("vectors.json")))
    }

    /// JSON texts compared as values (member order and number spelling aside).
    static func sameJSON(_ a: [UInt8], _ b: String) -> Bool {
        guard let left = try? JSONSerialization.jsonObject(with: Data(a), options: [.fragmentsAllowed]) as? NSObject,
            let right = try? JSONSerialization.jsonObject(with: Data(b.utf8), options: [.fragmentsAllowed]) as? NSObject
        else { return false }
        return left.isEqual(right)
    }
}

@Suite struct ProtoJSONTranscoderTests {
    let transcoder: ProtoJSONTranscoder

    init() throws {
        transcoder = ProtoJSONTranscoder(schema: try TranscodingFixtures.kitchen())
    }

    private func encode(_ json: String, _ message: String = "tollgate.test.Everything") throws(ProtoJSONTranscoder.Failure) -> [UInt8] {
        try transcoder.wire(json: Array(json.utf8), message: message)
    }

    private func failure(_ json: String, _ message: String = "tollgate.test.Everything") -> ProtoJSONTranscoder.Failure? {
        do {
            _ = try encode(json, message)
            return nil
        } catch {
            return error
        }
    }

    @Test func stockWireBytesDecodeToTheStockCanonicalJSON() throws {
        // setup
        let vectors = try TranscodingFixtures.vectors()
        #expect(vectors.count >= 25)
        for vector in vectors {
            // act
            let json = try transcoder.json(wire: Array(Data(base64Encoded: vector.wire)!), message: vector.message)
            // assert
            #expect(TranscodingFixtures.sameJSON(json, vector.canonical), "\(vector.name): \(String(decoding: json, as: UTF8.self))")
        }
    }

    @Test func jsonInputsEncodeToWhatTheStockEncoderWrites() throws {
        for vector in try TranscodingFixtures.vectors() {
            // act
            let wire = try transcoder.wire(json: Array(vector.json.utf8), message: vector.message)
            // assert: byte for byte where the order is fixed, and always the same message back
            if vector.exact { #expect(Data(wire).base64EncodedString() == vector.wire, "\(vector.name)") }
            let back = try transcoder.json(wire: wire, message: vector.message)
            #expect(TranscodingFixtures.sameJSON(back, vector.canonical), "\(vector.name): \(String(decoding: back, as: UTF8.self))")
        }
    }

    @Test func packedAndUnpackedRunsAreBothAccepted() throws {
        // setup: packed_ints (18) sent unpacked, unpacked_ints (20) sent packed, a packed run split in two
        var writer = ProtoWire.Writer()
        writer.tag(18, .varint)
        writer.varint(5)
        writer.tag(18, .varint)
        writer.varint(6)
        writer.lengthDelimited(18, [7, 8])
        writer.lengthDelimited(20, [1, 2])
        // act
        let json = try transcoder.json(wire: writer.bytes, message: "tollgate.test.Everything")
        // assert
        #expect(TranscodingFixtures.sameJSON(json, #"{"packedInts":[5,6,7,8],"unpackedInts":[1,2]}"#))
    }

    @Test func laterOccurrencesWinAndMessagesMerge() throws {
        // setup: f_int32 twice, inner twice (id then label)
        var writer = ProtoWire.Writer()
        writer.tag(5, .varint)
        writer.varint(1)
        writer.tag(5, .varint)
        writer.varint(2)
        writer.lengthDelimited(17, [8, 3])
        writer.lengthDelimited(17, [18, 1, UInt8(ascii: "x")])
        writer.tag(999, .varint)  // unknown: dropped
        writer.varint(1)
        // act
        let json = try transcoder.json(wire: writer.bytes, message: "tollgate.test.Everything")
        // assert
        #expect(TranscodingFixtures.sameJSON(json, #"{"fInt32":2,"inner":{"id":3,"label":"x"}}"#))
    }

    @Test(arguments: [
        (#"{"nope": 1}"#, "/nope", "no field"),
        (#"{"inner": {"id": 1, "extra": true}}"#, "/inner/extra", "no field"),
        (#"{"inners": [{}, {"x~y/z": 1}]}"#, "/inners/1/x~0y~1z", "no field"),
        (#"{"fInt32": "abc"}"#, "/fInt32", "not a number"),
        (#"{"fInt32": 2147483648}"#, "/fInt32", "range of int32"),
        (#"{"fUint32": -1}"#, "/fUint32", "range of uint32"),
        (#"{"fInt64": "9223372036854775808"}"#, "/fInt64", "range of int64"),
        (#"{"fInt32": 1.5}"#, "/fInt32", "range of int32"),
        (#"{"fInt32": " 1"}"#, "/fInt32", "not a number"),
        (#"{"fFloat": 1e39}"#, "/fFloat", "range of float"),
        (#"{"fDouble": 1e400}"#, "/fDouble", "range of double"),
        (#"{"fBool": "true"}"#, "/fBool", "true or false"),
        (#"{"fString": 5}"#, "/fString", "Expected a string"),
        (#"{"fBytes": "%%%"}"#, "/fBytes", "base64"),
        (#"{"color": "BLUE"}"#, "/color", "not a value of the enum"),
        (#"{"colors": ["RED", null]}"#, "/colors/1", "cannot be null"),
        (#"{"names": "a"}"#, "/names", "Expected an array"),
        (#"{"counts": []}"#, "/counts", "Expected an object"),
        (#"{"counts": {"a": null}}"#, "/counts/a", "cannot be null"),
        (#"{"byId": {"x": {}}}"#, "/byId/x", "not a number"),
        (#"{"flags": {"yes": "x"}}"#, "/flags/yes", "true or false"),
        (#"{"choiceText": "a", "choiceNumber": 1}"#, "/choiceNumber", "same oneof"),
        (#"{"fInt32": 1, "f_int32": 2}"#, "/f_int32", "given twice"),
        (#"{"at": "2021-02-29T00:00:00Z"}"#, "/at", "RFC 3339"),
        (#"{"at": "2021-01-01 00:00:00Z"}"#, "/at", "RFC 3339"),
        (#"{"at": "10000-01-01T00:00:00Z"}"#, "/at", "RFC 3339"),
        (#"{"took": "315576000001s"}"#, "/took", "duration"),
        (#"{"took": "1.5"}"#, "/took", "duration"),
        (#"{"mask": "a_b"}"#, "/mask", "lowerCamelCase"),
        (#"{"nothing": {"x": 1}}"#, "/nothing/x", "Empty"),
        (#"{"wInt64": true}"#, "/wInt64", "Expected a number"),
        (#"{"inner": []}"#, "/inner", "Expected an object"),
        (#"[]"#, "", "Expected an object"),
    ])
    func badJSONIsRefusedWithAPointerToTheValue(json: String, pointer: String, reason: String) {
        let failure = failure(json)
        #expect(failure?.pointer == pointer, "\(json)")
        #expect(failure?.reason.contains(reason) == true, "\(json): \(failure?.reason ?? "accepted")")
        #expect(failure?.isTooLarge == false)
    }

    @Test func malformedJSONTextIsRefused() {
        for text in ["", "{", #"{"a":1,}"#, #"{"a":1}{"#, #"{"fInt32": 01}"#, #"{"fString": "\ud800"}"#, #"{"fInt32": 1, "fInt32": 2}"#, "nul"] {
            let failure = failure(text)
            #expect(failure?.reason.hasPrefix("The body is not valid JSON") == true, "\(text): \(failure?.reason ?? "accepted")")
        }
    }

    @Test func nestingIsBounded() {
        // setup: Everything.child nested far deeper than the bound; and a Struct of nested arrays
        let deep = String(repeating: #"{"child":"#, count: 100) + "{}" + String(repeating: "}", count: 100)
        let deepValue = #"{"anyValue":"# + String(repeating: "[", count: 100) + String(repeating: "]", count: 100) + "}"
        // act, assert
        #expect(failure(deep) != nil)
        #expect(failure(deepValue) != nil)
        // the same message nested within the bound is fine
        let shallow = String(repeating: #"{"child":"#, count: 10) + "{}" + String(repeating: "}", count: 10)
        #expect(failure(shallow) == nil)
        // and wire data nested past the bound is refused too
        var payload: [UInt8] = []
        for _ in 0..<100 {
            var writer = ProtoWire.Writer()
            writer.lengthDelimited(54, payload)
            payload = writer.bytes
        }
        #expect(throws: ProtoJSONTranscoder.Failure.self) { try transcoder.json(wire: payload, message: "tollgate.test.Everything") }
    }

    @Test func outputIsBounded() throws {
        // setup: a small limit and a packed run of zeros, each a one-byte varint that grows in JSON
        var small = transcoder
        small.maximumOutputBytes = 1000
        var writer = ProtoWire.Writer()
        writer.lengthDelimited(18, [UInt8](repeating: 0, count: 900))
        // act, assert
        #expect {
            try small.json(wire: writer.bytes, message: "tollgate.test.Everything")
        } throws: { error in
            (error as? ProtoJSONTranscoder.Failure)?.isTooLarge == true
        }
        #expect {
            try small.wire(json: Array(("{\"names\":[" + Array(repeating: "\"0123456789\"", count: 200).joined(separator: ",") + "]}").utf8), message: "tollgate.test.Everything")
        } throws: { error in
            (error as? ProtoJSONTranscoder.Failure)?.isTooLarge == true
        }
    }

    @Test func malformedWireDataIsRefused() {
        let cases: [[UInt8]] = [
            [0x28],  // a tag without its varint
            [0x28, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x01],  // an eleven-byte varint
            [0x4A, 0x05, 0x61],  // a string whose length runs past the end
            [0x28 | 2, 0x00],  // f_int32 as length-delimited
            [0x0B],  // a group
            [0x07],  // wire type 7
            [0x4A, 0x01, 0xFF],  // a string that is not UTF-8
        ]
        for bytes in cases {
            #expect(throws: ProtoJSONTranscoder.Failure.self, "\(bytes)") { try transcoder.json(wire: bytes, message: "tollgate.test.Everything") }
        }
        // a Duration and a Timestamp far outside their ranges (Int64.min seconds) are refused, not trapped on
        for number: Int32 in [40, 41] {
            var inner = ProtoWire.Writer()
            inner.tag(1, .varint)
            inner.varint(UInt64(bitPattern: Int64.min))
            var outer = ProtoWire.Writer()
            outer.lengthDelimited(number, inner.bytes)
            #expect(throws: ProtoJSONTranscoder.Failure.self) { try transcoder.json(wire: outer.bytes, message: "tollgate.test.Everything") }
        }
    }

    @Test(arguments: [
        (#"{"item":{"@type":"type.googleapis.com/nope.Missing","id":1}}"#, "/item/@type"),
        (#"{"item":{"@type":"tollgate.test.Inner"}}"#, "/item/@type"),  // no URL prefix
        (#"{"item":{"@type":"type.googleapis.com/"}}"#, "/item/@type"),
        (#"{"item":{"@type":7}}"#, "/item/@type"),
        (#"{"item":{"id":1}}"#, "/item"),
        (#"{"item":[]}"#, "/item"),
        (#"{"items":[{},{"@type":"type.googleapis.com/tollgate.test.Inner","nope":1}]}"#, "/items/1/nope"),
        (#"{"item":{"@type":"type.googleapis.com/google.protobuf.Duration","value":"1s","extra":1}}"#, "/item/extra"),
        (#"{"item":{"@type":"type.googleapis.com/google.protobuf.Duration","value":"soon"}}"#, "/item/value"),
    ])
    func anyResolvesItsTypeAgainstTheDescriptorSet(json: String, pointer: String) {
        #expect(failure(json)?.pointer == pointer, "\(json)")
    }

    @Test func anyOfATypeTheSetLacksIsRefusedOnOutputToo() throws {
        // setup: an Everything whose item names a type the set does not declare
        var any = ProtoWire.Writer()
        any.lengthDelimited(1, Array("type.googleapis.com/nope.Missing".utf8))
        any.lengthDelimited(2, [0x08, 0x01])
        var outer = ProtoWire.Writer()
        outer.lengthDelimited(56, any.bytes)
        // act
        let refused = #expect(throws: ProtoJSONTranscoder.Failure.self) { try transcoder.json(wire: outer.bytes, message: "tollgate.test.Everything") }
        // assert
        #expect(refused?.reason.contains("nope.Missing") == true)
    }

    @Test func anysNestedInAnysAreBoundedBothWays() throws {
        // setup: 200 Anys, each the value of the next — deeper than the 64 levels translated
        var wire: [UInt8] = []
        for _ in 0..<200 {
            var any = ProtoWire.Writer()
            any.lengthDelimited(1, Array("type.googleapis.com/google.protobuf.Any".utf8))
            if !wire.isEmpty { any.lengthDelimited(2, wire) }
            wire = any.bytes
        }
        var json = #"{"@type":"type.googleapis.com/tollgate.test.Inner"}"#
        for _ in 0..<200 { json = #"{"@type":"type.googleapis.com/google.protobuf.Any","value":"# + json + "}" }
        // act / assert: refused, not a crash
        #expect(throws: ProtoJSONTranscoder.Failure.self) { try transcoder.json(wire: wire, message: "google.protobuf.Any") }
        #expect(throws: ProtoJSONTranscoder.Failure.self) { try encode(json, "google.protobuf.Any") }
    }
}

@Suite struct ProtoSchemaTests {
    /// A one-file descriptor set: `t.Req { <type> payload = 1; }` and `t.S/Call(Req) returns (Req)`.
    static func schema(fieldType: String, withAny: Bool = false) throws -> ProtoSchema {
        try ProtoSchema.compile(descriptorSet(fieldType: fieldType, withAny: withAny))
    }

    static func descriptorSet(fieldType: String, withAny: Bool = false, service: Bool = true, syntax: String = "proto3") throws -> [UInt8] {
        var file = Google_Protobuf_FileDescriptorProto()
        file.name = "t.proto"
        file.package = "t"
        file.syntax = syntax
        var message = Google_Protobuf_DescriptorProto()
        message.name = "Req"
        var field = Google_Protobuf_FieldDescriptorProto()
        field.name = "payload"
        field.number = 1
        field.label = .optional
        field.type = .message
        field.typeName = fieldType
        message.field = [field]
        file.messageType = [message]
        if service {
            var method = Google_Protobuf_MethodDescriptorProto()
            method.name = "Call"
            method.inputType = ".t.Req"
            method.outputType = ".t.Req"
            var serviceProto = Google_Protobuf_ServiceDescriptorProto()
            serviceProto.name = "S"
            serviceProto.method = [method]
            file.service = [serviceProto]
        }
        var set = Google_Protobuf_FileDescriptorSet()
        if withAny {
            var anyFile = Google_Protobuf_FileDescriptorProto()
            anyFile.name = "google/protobuf/any.proto"
            anyFile.package = "google.protobuf"
            anyFile.syntax = "proto3"
            var any = Google_Protobuf_DescriptorProto()
            any.name = "Any"
            anyFile.messageType = [any]
            set.file.append(anyFile)
        }
        set.file.append(file)
        return try set.serializedBytes()
    }

    private func problems(_ bytes: [UInt8]) -> [String] {
        do {
            _ = try ProtoSchema.compile(bytes)
            return []
        } catch {
            return error.problems
        }
    }

    @Test func aStockDescriptorSetCompilesWithItsServicesAndHTTPBindings() throws {
        // act
        let schema = try TranscodingFixtures.kitchen()
        // assert
        #expect(schema.services.map(\.name) == ["tollgate.test.Kitchen"])
        #expect(schema.methods.map(\.grpcPath) == ["/tollgate.test.Kitchen/Echo", "/tollgate.test.Kitchen/Get", "/tollgate.test.Kitchen/Count", "/tollgate.test.Kitchen/Upload",
            "/tollgate.test.Kitchen/Chat",
        ])
        let get = try #require(schema.method(grpcPath: "/tollgate.test.Kitchen/Get"))
        #expect(get.httpBindings == [HTTPBinding(method: "GET", pathTemplate: "/v1/inners/{id}"), HTTPBinding(method: "GET", pathTemplate: "/v1/labels/{label}")])
        #expect(schema.method(grpcPath: "/tollgate.test.Kitchen/Echo")?.httpBindings == [HTTPBinding(method: "POST", pathTemplate: "/v1/echo", body: "*")])
        #expect(schema.method(grpcPath: "/tollgate.test.Kitchen/Count")?.serverStreaming == true)
        #expect(schema.method(grpcPath: "/tollgate.test.Kitchen/Upload")?.clientStreaming == true)
        let everything = try #require(schema.messages["tollgate.test.Everything"])
        #expect(everything.fields.first { $0.name == "json_named" }?.jsonName == "customName")
        #expect(everything.fields.first { $0.name == "counts" }?.isMap == true)
        #expect(everything.fields.first { $0.name == "packed_ints" }?.isPacked == true)
        #expect(everything.fields.first { $0.name == "unpacked_ints" }?.isPacked == false)
        #expect(everything.fields.first { $0.name == "colors" }?.isPacked == true)
        #expect(everything.fields.first { $0.name == "maybe" }.map { $0.hasPresence && $0.oneofIndex == nil } == true)
        #expect(everything.fields.first { $0.name == "f_int32" }?.hasPresence == false)
    }

    @Test func theDemoGreeterDescriptorSetCompiles() throws {
        let schema = try ProtoSchema.compile(TranscodingFixtures.bytes("greeter.binpb"))
        #expect(schema.method(grpcPath: "/demo.Greeter/SayHello")?.httpBindings.map(\.method) == ["POST", "GET"])
    }

    @Test func garbageIsNotADescriptorSet() {
        #expect(problems(Array("hello, world".utf8)).first?.contains("not a protobuf descriptor set") == true)
        #expect(problems([0x0A, 0x05, 0x01]).first?.contains("not a protobuf descriptor set") == true)
        #expect(problems([]).first?.contains("no files") == true)
    }

    @Test func everyReferencedTypeMustBeInTheSet() throws {
        // a set built without --include_imports: the timestamp's file is missing
        let found = problems(try Self.descriptorSet(fieldType: ".google.protobuf.Timestamp"))
        #expect(found.count == 1)
        #expect(found.first?.contains("google.protobuf.Timestamp is not in the descriptor set") == true)
        #expect(problems(try Self.descriptorSet(fieldType: "Req")).first?.contains("not a fully-qualified type name") == true)
    }

    @Test func aSetWithoutAServiceHasNothingToTranslate() throws {
        #expect(problems(try Self.descriptorSet(fieldType: ".t.Req", service: false)).first?.contains("no service") == true)
        #expect(problems(try Self.descriptorSet(fieldType: ".t.Req", syntax: "proto4")).contains { $0.contains("not supported") })
        #expect(problems(try Self.descriptorSet(fieldType: ".t.Req")).isEmpty)
    }

    @Test func aTooLargeSetIsRefusedBeforeParsing() {
        #expect(problems([UInt8](repeating: 0, count: ProtoSchema.maximumBytes + 1)).first?.contains("larger than") == true)
    }

    @Test func malformedHTTPOptionsAreReported() throws {
        // setup: a method whose options carry field 72295728 as a varint instead of a message
        var set = try Google_Protobuf_FileDescriptorSet(serializedBytes: Self.descriptorSet(fieldType: ".t.Req"))
        var writer = ProtoWire.Writer()
        writer.tag(HTTPBinding.extensionNumber, .varint)
        writer.varint(1)
        var options = Google_Protobuf_MethodOptions()
        try options.merge(serializedBytes: writer.bytes)
        set.file[0].service[0].method[0].options = options
        // act
        let found = problems(try set.serializedBytes())
        // assert
        #expect(found.first?.contains("google.api.http option is malformed") == true)
    }
}

@Suite struct TranscodingPartsTests {
    @Test func jsonNumbersKeepTheirLiteralAndStringsTheirEscapes() throws {
        let tree = try JSONTree.parse(Array(#" {"a": 18446744073709551615, "b": [-0.5e-3, "\u00e9\ud83d\ude00\n"], "c": null} "#.utf8))
        #expect(
            tree == .object([
                .init(key: "a", value: .number("18446744073709551615")),
                .init(key: "b", value: .array([.number("-0.5e-3"), .string("é😀\n")])), .init(key: "c", value: .null),
            ]))
        #expect(throws: JSONTree.SyntaxError.self) { try JSONTree.parse(Array("[[[1]]]".utf8), maximumDepth: 2) }
        #expect(throws: JSONTree.SyntaxError.self) { try JSONTree.parse(Array("\"a\tb\"".utf8)) }
    }

    @Test(arguments: [
        ("1970-01-01T00:00:00Z", Int64(0), Int32(0)), ("2000-02-29T12:00:00.5Z", 951_825_600, 500_000_000),
        ("1969-12-31T23:59:59.999999999Z", -1, 999_999_999), ("0001-01-01T00:00:00Z", -62_135_596_800, 0),
        ("9999-12-31T23:59:59Z", 253_402_300_799, 0), ("2024-01-01T01:00:00+01:00", 1_704_067_200, 0),
    ])
    func timestampsRoundTrip(text: String, seconds: Int64, nanos: Int32) throws {
        let parsed = try #require(ProtoCalendar.parseTimestamp(text))
        #expect(parsed.seconds == seconds && parsed.nanos == nanos)
        let formatted = try #require(ProtoCalendar.formatTimestamp(seconds: seconds, nanos: nanos))
        #expect(ProtoCalendar.parseTimestamp(formatted).map { $0.seconds == seconds && $0.nanos == nanos } == true)
    }

    @Test func impossibleDatesAndDurationsAreRefused() {
        for bad in ["2023-02-29T00:00:00Z", "2024-13-01T00:00:00Z", "2024-01-01T24:00:00Z", "2024-01-01T00:00:00", "2024-01-01T00:00:00.Z", "2024-01-01T00:00:00.1234567890Z", "0000-12-31T00:00:00Z"] {
            #expect(ProtoCalendar.parseTimestamp(bad) == nil, "\(bad)")
        }
        for bad in ["1", "s", "-s", "1.s", "1.0000000001s", "+1s", "1e3s"] { #expect(ProtoCalendar.parseDuration(bad) == nil, "\(bad)") }
        #expect(ProtoCalendar.formatDuration(seconds: 1, nanos: -1) == nil)
        // extreme values from the wire are refused, not trapped on
        #expect(ProtoCalendar.formatDuration(seconds: .min, nanos: 0) == nil)
        #expect(ProtoCalendar.formatDuration(seconds: 0, nanos: .min) == nil)
        #expect(ProtoCalendar.formatTimestamp(seconds: .min, nanos: .min) == nil)
        #expect(ProtoCalendar.formatDuration(seconds: -1, nanos: -500_000_000) == "-1.500s")
        #expect(ProtoCalendar.formatTimestamp(seconds: ProtoCalendar.maximumSeconds + 1, nanos: 0) == nil)
    }

    @Test func varintsAndZigzagRoundTrip() throws {
        for value in [Int64.min, -1, 0, 1, 300, Int64.max] {
            var writer = ProtoWire.Writer()
            writer.varint(ProtoWire.zigzag64(value))
            var reader = ProtoWire.Reader(bytes: writer.bytes)
            #expect(ProtoWire.unzigzag(try reader.varint()) == value)
            #expect(reader.isAtEnd)
        }
    }
}

@Suite struct GRPCTranscodingRouteTests {
    let transcoding: GRPCTranscoding

    init() throws {
        transcoding = GRPCTranscoding(schema: try TranscodingFixtures.kitchen())
    }

    private func message(_ method: String, _ uri: String, body: String = "") throws -> String {
        let call = try #require(transcoding.resolve(httpMethod: method, uri: uri))
        let wire = try transcoding.requestMessage(call, body: Array(body.utf8))
        return String(decoding: try transcoding.transcoder.json(wire: wire, message: call.method.inputType), as: UTF8.self)
    }

    @Test func theGRPCPathIsAPostWithTheWholeMessage() throws {
        let call = try #require(transcoding.resolve(httpMethod: "POST", uri: "/tollgate.test.Kitchen/Echo"))
        #expect(call.method.name == "Echo")
        #expect(call.body == "*")
        #expect(transcoding.resolve(httpMethod: "GET", uri: "/tollgate.test.Kitchen/Echo") == nil)
        // a client stream is called at its gRPC path (with NDJSON); unknown methods resolve to nothing
        #expect(transcoding.resolve(httpMethod: "POST", uri: "/tollgate.test.Kitchen/Upload")?.method.clientStreaming == true)
        #expect(transcoding.resolve(httpMethod: "POST", uri: "/tollgate.test.Kitchen/Missing") == nil)
        #expect(TranscodingFixtures.sameJSON(Array(try message("POST", "/tollgate.test.Kitchen/Echo", body: #"{"fInt32": 3}"#).utf8), #"{"fInt32":3}"#))
        // an empty body is the empty message
        #expect(try message("POST", "/tollgate.test.Kitchen/Count") == "{}")
    }

    @Test func aClientStreamIsRoutedAtATemplateWithoutVariablesAndABodyOfStar() throws {
        // Upload: post "/v1/uploads" body "*"; Chat: post "/v1/chats/{id}" (a variable), then "/v1/chat"
        let upload = try #require(transcoding.resolve(httpMethod: "POST", uri: "/v1/uploads?ignored=1"))
        #expect(upload.method.name == "Upload" && upload.body == "*" && upload.pathValues.isEmpty)
        // each NDJSON line is the whole message: the query is not set on top of it
        #expect(TranscodingFixtures.sameJSON(Array(try message("POST", "/v1/uploads?label=q", body: #"{"id": 1}"#).utf8), #"{"id":1}"#))
        #expect(transcoding.resolve(httpMethod: "POST", uri: "/v1/chat")?.method.name == "Chat")
        #expect(transcoding.resolve(httpMethod: "POST", uri: "/v1/chats/7") == nil)
        #expect(transcoding.resolve(httpMethod: "GET", uri: "/v1/uploads") == nil)
    }

    @Test(arguments: [
        // (client streaming, template, body, routed)
        (false, "/v1/things/{id}", "", true), (false, "/v1/things", "*", true), (true, "/v1/things", "*", true), (true, "/v1/things:batch", "*", true),
        (true, "/v1/things/*", "*", true), (true, "/v1/things/{id}", "*", false), (true, "/v1/{parent=shelves/*}/books", "*", false),
        (true, "/v1/things", "", false), (true, "/v1/things", "inner", false), (false, "v1/no-slash", "*", false), (true, "/v1/{unclosed", "*", false),
    ])
    func whichBindingsAreRouted(clientStreaming: Bool, template: String, body: String, routed: Bool) {
        // setup
        let binding = HTTPBinding(method: "POST", pathTemplate: template, body: body)
        let method = ProtoMethod(
            service: "pkg.S", name: "M", inputType: "pkg.In", outputType: "pkg.Out", clientStreaming: clientStreaming, serverStreaming: false,
            httpBindings: [binding])
        // act
        let reason = method.unroutedReason(binding)
        // assert
        #expect((reason == nil) == routed, "\(template) body \(body): \(reason ?? "routed")")
        #expect(method.routedBindings.count == (routed ? 1 : 0))
    }

    @Test func httpRoutesFillFieldsFromThePathAndTheQuery() throws {
        #expect(TranscodingFixtures.sameJSON(Array(try message("GET", "/v1/inners/42?label=a+b%21").utf8), #"{"id":42,"label":"a b!"}"#))
        #expect(TranscodingFixtures.sameJSON(Array(try message("GET", "/v1/labels/x%2Fy").utf8), #"{"label":"x/y"}"#))
        #expect(transcoding.resolve(httpMethod: "GET", uri: "/v1/inners") == nil)
        #expect(transcoding.resolve(httpMethod: "GET", uri: "/v1/inners/1/extra") == nil)
        // a path value that does not fit its field is the client's error, located
        let call = try #require(transcoding.resolve(httpMethod: "GET", uri: "/v1/inners/abc"))
        #expect(throws: ProtoJSONTranscoder.Failure.self) { try transcoding.requestMessage(call, body: []) }
        let unknown = try #require(transcoding.resolve(httpMethod: "GET", uri: "/v1/inners/1?nope=1"))
        #expect {
            try transcoding.requestMessage(unknown, body: [])
        } throws: { error in
            (error as? ProtoJSONTranscoder.Failure)?.pointer == "/nope"
        }
    }

    @Test(arguments: [
        ("/v1/{name=shelves/*}/books/{book}", "/v1/shelves/s1/books/b2", [["name"]: "shelves/s1", ["book"]: "b2"]),
        ("/v1/{a.b}:publish", "/v1/x:publish", [["a", "b"]: "x"]),
        ("/v1/files/{path=**}", "/v1/files/a/b%2Fc/d", [["path"]: "a/b%2Fc/d"]),
        ("/v1/*/x", "/v1/anything/x", [:]),
    ])
    func pathTemplatesMatchAndCapture(template: String, path: String, expected: [[String]: String]) throws {
        let parsed = try #require(PathTemplate(template))
        let values = try #require(parsed.match(Substring(path)))
        #expect(Dictionary(uniqueKeysWithValues: values.map { ($0.fieldPath, $0.value) }) == expected)
    }

    @Test func malformedTemplatesAndMismatchesAreRefused() {
        for bad in ["v1/x", "/v1/{x", "/v1/**/y", "/v1//x", "/v1/{=x}", "/v1/x/"] { #expect(PathTemplate(bad) == nil, "\(bad)") }
        #expect(PathTemplate("/v1/{name}:publish")?.match("/v1/x") == nil)
        #expect(PathTemplate("/v1/{name}")?.match("/v1/") == nil)
        #expect(PathTemplate("/v1/{name}")?.match("/v2/x") == nil)
    }
}
