import NIOCore

/// A request's trailer fields on their way to the upstream (RFC 9112 §7.1.2, RFC 9110 §6.5): what
/// passes and how the last chunk carries it. Fields that are connection-specific, frame the
/// message, route it or carry credentials and identities the gateway owns never pass — a trailer
/// must not be a way around what the head's rules remove. Pure.
enum TrailerSection {
    /// Whether a trailer field (its name) is forwarded.
    static func forwards(_ name: String) -> Bool {
        guard !name.isEmpty, name.utf8.allSatisfy(HTTPHeadParser.isTokenByte) else { return false }
        if HopByHop.isStandard(name) { return false }
        for refused in ["content-length", "transfer-encoding", "host", "authorization", "x-api-key", "x-request-id", "expect", "content-encoding", "content-range", "cookie"]
        where name.isASCII(caseInsensitively: refused) {
            return false
        }
        return !name.hasASCIIPrefix(caseInsensitively: "x-forwarded-") && !name.hasASCIIPrefix(caseInsensitively: "x-tollgate-")
            && !name.hasASCIIPrefix(caseInsensitively: "proxy-") && !name.hasASCIIPrefix(caseInsensitively: "forwarded")
    }

    /// A value an HTTP/1.1 line may carry (no control characters but tab).
    static func isValue(_ value: String) -> Bool { !value.utf8.contains { ($0 < 0x20 && $0 != 0x09) || $0 == 0x7f } }

    /// The fields of a trailer section as an HTTP/1.1 client sent it (the lines after the last
    /// chunk's size line, up to and including the empty line; `BodyFramer` has checked its form).
    /// Lines without a colon are skipped.
    static func fields(in section: ByteBuffer) -> [(name: String, value: String)] {
        let text = String(buffer: section)
        var fields: [(name: String, value: String)] = []
        for line in text.utf8.split(separator: UInt8(ascii: "\n")) {
            let bytes = line.last == UInt8(ascii: "\r") ? line.dropLast() : line[...]
            guard let colon = bytes.firstIndex(of: UInt8(ascii: ":")) else { continue }
            let name = String(decoding: bytes[..<colon], as: UTF8.self)
            let value = String(decoding: bytes[bytes.index(after: colon)...], as: UTF8.self).trimmingASCIIWhitespace()
            fields.append((name, String(value)))
        }
        return fields
    }

    /// The forwarded fields as a trailer section: `Name: value` lines and the empty line.
    static func section(_ fields: [(name: String, value: String)], allocator: ByteBufferAllocator) -> ByteBuffer {
        var out = allocator.buffer(capacity: 64)
        for (name, value) in fields where forwards(name) && isValue(value) { out.writeHeader(name, value) }
        out.writeStaticString("\r\n")
        return out
    }
}
