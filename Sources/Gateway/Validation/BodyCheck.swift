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
