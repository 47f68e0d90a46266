import NIOCore
import NIOHTTP1

extension ByteBuffer {
    mutating func writeHeader(_ name: String, _ value: String) {
        writeString(name)
        writeStaticString(": ")
        writeString(value)
        writeStaticString("\r\n")
    }
}

/// Connection-scoped header names (RFC 9110 §7.6.1) of one message: the standard ones plus any its
/// `Connection` header lists. `Transfer-Encoding` is kept: the body is forwarded with the framing it
/// came with. Compares bytes without allocating: building a `Set` of lowercased names per
/// message showed in the gateway's profile.
struct HopByHop {
    /// Lowercased names the `Connection` header lists (nginx sends `keep-alive` on every response).
    private var listed: [String] = []

    init(_ headers: HTTPHeaders) {
        for value in headers["connection"] {
            for token in value.split(separator: ",") {
                let name = token.trimmingASCIIWhitespace().lowercased()
                if !name.isEmpty && name != "transfer-encoding" { listed.append(name) }
            }
        }
    }

    func contains(_ name: String) -> Bool {
        if Self.isStandard(name) { return true }
        return listed.contains { name.isASCII(caseInsensitively: $0) }
    }

    static func isStandard(_ name: String) -> Bool {
        isStandard(length: name.utf8.count) { name.isASCII(caseInsensitively: $0) }
    }

    /// The same for a name inside a raw head.
    static func isStandard(_ bytes: UnsafeRawBufferPointer, _ range: Range<Int>) -> Bool {
        isStandard(length: range.count) { HTTPHeadParser.equals(bytes, range, $0) }
    }

    private static func isStandard(length: Int, matches: (String) -> Bool) -> Bool {
        switch length {
        case 2: matches("te")
        case 7: matches("trailer") || matches("upgrade")
        case 10: matches("connection") || matches("keep-alive")
        case 16: matches("proxy-connection")
        case 18: matches("proxy-authenticate")
        case 19: matches("proxy-authorization")
        default: false
        }
    }
}

extension StringProtocol {
    /// Equal to `lowercase` (ASCII, already lowercased) when ASCII letters are folded to lower case.
    func isASCII(caseInsensitively lowercase: String) -> Bool {
        utf8.count == lowercase.utf8.count && hasASCIIPrefix(caseInsensitively: lowercase)
    }

    func hasASCIIPrefix(caseInsensitively lowercase: String) -> Bool {
        var mine = utf8.makeIterator()
        for expected in lowercase.utf8 {
            guard let byte = mine.next() else { return false }
            let folded = byte >= 0x41 && byte <= 0x5a ? byte | 0x20 : byte
            if folded != expected { return false }
        }
        return true
    }

    func trimmingASCIIWhitespace() -> Substring {
        let text = Substring(self)
        let isSpace = { (c: Character) in c == " " || c == "\t" }
        guard let first = text.firstIndex(where: { !isSpace($0) }), let last = text.lastIndex(where: { !isSpace($0) }) else { return "" }
        return text[first...last]
    }
}

extension HTTPMethod {
    /// RFC 9110 §9.2.2.
    var isIdempotent: Bool {
        switch self {
        case .GET, .HEAD, .OPTIONS, .PUT, .DELETE, .TRACE: true
        default: false
        }
    }
}
