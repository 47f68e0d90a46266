import NIOCore

/// A request body held back for `request_validation`: the exchange keeps the body's bytes as
/// they will go upstream (the client's framing, or the chunks the gateway makes for an HTTP/2 body
/// of unknown length) and, once the body ended, this reads the payload out of them and checks it.
struct BodyCheck {
    let validator: RequestValidator
    let schema: Int
    let required: Bool
    /// The held bytes are chunk-framed.
    let chunked: Bool

    /// The payload's violations of the operation's schema; empty when it matches.
    func violations(in parts: [ByteBuffer]) -> [Violation] {
        guard let payload = Self.payload(of: parts, chunked: chunked) else {
            return [Violation("/body", "The body's chunked framing is invalid.")]
        }
        return validator.checkBody(payload, schema: schema, required: required)
    }

    /// The payload inside `parts`: their bytes, or for chunked framing the chunks' data.
    static func payload(of parts: [ByteBuffer], chunked: Bool) -> ByteBuffer? {
        let total = parts.reduce(0) { $0 + $1.readableBytes }
        var payload = ByteBuffer()
        payload.reserveCapacity(total)
        if !chunked {
            for var part in parts { payload.writeBuffer(&part) }
            return payload
        }
        var framer = BodyFramer(.chunked)
        for part in parts {
            let consumed = part.withUnsafeReadableBytes { bytes -> Bool in
                do {
                    _ = try framer.consume(bytes) { range in payload.writeBytes(UnsafeRawBufferPointer(rebasing: bytes[range])) }
                    return true
                } catch {
                    return false
                }
            }
            if !consumed { return nil }
        }
        return payload
    }
}

/// Why a body is not a JSON value the validator can check: the violation's text.
struct BodyParseFailure: Error, Equatable {
    let message: String
}

extension JSONValue {
    /// A request body as the validator sees it, parsed byte by byte (`JSONTree`): a tenth of the
    /// CPU of `JSONDecoder` into `JSONValue`, whose `Decodable` conformance tries each JSON type in
    /// turn and throws for every miss. Duplicate member names are refused: the validator would see
    /// one value and the upstream's parser may take the other. The failure is the violation's text.
    static func parseBody(_ bytes: [UInt8]) -> Result<JSONValue, BodyParseFailure> {
        let tree: JSONTree
        do {
            tree = try JSONTree.parse(bytes, maximumDepth: 64)
        } catch {
            return .failure(BodyParseFailure(message: "The body is not valid JSON: \(error.reason) (at byte \(error.offset))."))
        }
        return JSONValue.from(tree).map(Result.success) ?? .failure(BodyParseFailure(message: "The body has a number too large for a 64-bit float."))
    }

    /// The value of `tree`; nil when a number does not fit a finite `Double`. An integer literal
    /// that fits `Int64` stays an integer, as `JSONDecoder` made it.
    static func from(_ tree: JSONTree) -> JSONValue? {
        switch tree {
        case .null: return .null
        case .bool(let value): return .bool(value)
        case .string(let text): return .string(text)
        case .number(let literal):
            if !literal.utf8.contains(where: { $0 == UInt8(ascii: ".") || $0 == UInt8(ascii: "e") || $0 == UInt8(ascii: "E") }),
                let integer = Int64(literal) {
                return .integer(integer)
            }
            guard let number = Double(literal), number.isFinite else { return nil }
            return .number(number)
        case .array(let items):
            var values: [JSONValue] = []
            values.reserveCapacity(items.count)
            for item in items {
                guard let value = from(item) else { return nil }
                values.append(value)
            }
            return .array(values)
        case .object(let members):
            var object: [String: JSONValue] = [:]
            object.reserveCapacity(members.count)
            for member in members {
                guard let value = from(member.value) else { return nil }
                object[member.key] = value
            }
            return .object(object)
        }
    }
}
