import Foundation

/// The `format` values the gateway checks. Any other format is an annotation and accepts every
/// value (JSON Schema's default). Each check is a hand-written scan: no regular expression, no
/// allocation beyond the string's own view, bounded by the string's length.
enum SchemaFormat: String, Sendable {
    case dateTime = "date-time"
    case date
    case time
    case email
    case uuid
    case ipv4
    case ipv6
    case uri
    case int32
    case int64

    func accepts(string text: String) -> Bool {
        let bytes = Array(text.utf8.prefix(2049))
        guard bytes.count <= 2048 else { return false }
        switch self {
        case .dateTime:
            guard let t = bytes.firstIndex(where: { $0 == UInt8(ascii: "T") || $0 == UInt8(ascii: "t") }) else { return false }
            return Self.isDate(bytes[..<t]) && Self.isTime(bytes[(t + 1)...])
        case .date: return Self.isDate(bytes[...])
        case .time: return Self.isTime(bytes[...])
        case .email: return Self.isEmail(bytes)
        case .uuid: return Self.isUUID(bytes)
        case .ipv4: return Self.isIPv4(bytes[...])
        case .ipv6: return text.utf8.count <= 45 && Self.isIPv6(text)
        case .uri: return Self.isURI(bytes)
        case .int32, .int64: return true
        }
    }

    func accepts(number value: JSONValue) -> Bool {
        switch (self, value) {
        case (.int32, .integer(let whole)): Int32(exactly: whole) != nil
        case (.int32, .number(let number)): number.rounded() == number && number >= -2_147_483_648 && number <= 2_147_483_647
        case (.int64, .number(let number)): number.rounded() == number && abs(number) < 9.3e18
        default: true
        }
    }

    private static func digits(_ bytes: ArraySlice<UInt8>) -> Int? {
        guard !bytes.isEmpty, bytes.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }) else { return nil }
        return bytes.reduce(0) { $0 * 10 + Int($1 - 0x30) }
    }

    /// RFC 3339 full-date: YYYY-MM-DD with a day the month has.
    static func isDate(_ bytes: ArraySlice<UInt8>) -> Bool {
        let b = Array(bytes)
        guard b.count == 10, b[4] == UInt8(ascii: "-"), b[7] == UInt8(ascii: "-"),
            let year = digits(b[0..<4]), let month = digits(b[5..<7]), let day = digits(b[8..<10]), (1...12).contains(month)
        else { return false }
        let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
        let days = [31, leap ? 29 : 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31][month - 1]
        return (1...days).contains(day)
    }

    /// RFC 3339 full-time: HH:MM:SS[.frac](Z|±HH:MM); a leap second (60) is accepted.
    static func isTime(_ bytes: ArraySlice<UInt8>) -> Bool {
        let b = Array(bytes)
        guard b.count >= 9, b[2] == UInt8(ascii: ":"), b[5] == UInt8(ascii: ":"),
            let hour = digits(b[0..<2]), let minute = digits(b[3..<5]), let second = digits(b[6..<8]), hour < 24, minute < 60, second <= 60
        else { return false }
        var i = 8
        if b[i] == UInt8(ascii: ".") {
            i += 1
            let start = i
            while i < b.count, b[i] >= 0x30, b[i] <= 0x39 { i += 1 }
            guard i > start else { return false }
        }
        guard i < b.count else { return false }
        if b[i] == UInt8(ascii: "Z") || b[i] == UInt8(ascii: "z") { return i == b.count - 1 }
        guard b[i] == UInt8(ascii: "+") || b[i] == UInt8(ascii: "-"), b.count - i == 6, b[i + 3] == UInt8(ascii: ":"),
            let offsetHour = digits(b[(i + 1)..<(i + 3)]), let offsetMinute = digits(b[(i + 4)..<(i + 6)])
        else { return false }
        return offsetHour < 24 && offsetMinute < 60
    }

    /// A practical address: one `@`, a non-empty local part without spaces, a dotted domain of
    /// letters, digits and hyphens.
    static func isEmail(_ b: [UInt8]) -> Bool {
        guard let at = b.firstIndex(of: UInt8(ascii: "@")), at > 0, at <= 64, b.lastIndex(of: UInt8(ascii: "@")) == at else { return false }
        let local = b[..<at]
        let domain = b[(at + 1)...]
        guard local.allSatisfy({ $0 > 0x20 && $0 < 0x7F && $0 != UInt8(ascii: "(") && $0 != UInt8(ascii: ")") && $0 != UInt8(ascii: ",") }),
            local.first != UInt8(ascii: "."), local.last != UInt8(ascii: ".")
        else { return false }
        let labels = domain.split(separator: UInt8(ascii: "."), omittingEmptySubsequences: false)
        guard labels.count >= 2, domain.count <= 253 else { return false }
        return labels.allSatisfy { label in
            !label.isEmpty && label.count <= 63 && label.first != UInt8(ascii: "-") && label.last != UInt8(ascii: "-")
                && label.allSatisfy { isAlphanumeric($0) || $0 == UInt8(ascii: "-") || $0 >= 0x80 }
        }
    }

    static func isUUID(_ b: [UInt8]) -> Bool {
        guard b.count == 36 else { return false }
        for (i, byte) in b.enumerated() {
            if [8, 13, 18, 23].contains(i) {
                if byte != UInt8(ascii: "-") { return false }
            } else if !isHex(byte) {
                return false
            }
        }
        return true
    }

    /// Dotted quad, no leading zeros.
    static func isIPv4(_ bytes: ArraySlice<UInt8>) -> Bool {
        let parts = bytes.split(separator: UInt8(ascii: "."), omittingEmptySubsequences: false)
        guard parts.count == 4 else { return false }
        return parts.allSatisfy { part in
            guard part.count <= 3, let value = digits(part) else { return false }
            return value <= 255 && (part.count == 1 || part.first != UInt8(ascii: "0"))
        }
    }

    static func isIPv6(_ text: String) -> Bool {
        guard text.contains(":"), !text.contains("%") else { return false }
        var address = in6_addr()
        return inet_pton(AF_INET6, text, &address) == 1
    }

    /// An absolute URI (RFC 3986): a scheme, `:`, then characters a URI may hold (no spaces,
    /// no controls), with valid percent escapes.
    static func isURI(_ b: [UInt8]) -> Bool {
        guard let colon = b.firstIndex(of: UInt8(ascii: ":")), colon > 0, isLetter(b[0]) else { return false }
        guard b[..<colon].allSatisfy({ isAlphanumeric($0) || $0 == UInt8(ascii: "+") || $0 == UInt8(ascii: "-") || $0 == UInt8(ascii: ".") }) else {
            return false
        }
        var i = colon + 1
        while i < b.count {
            let byte = b[i]
            if byte == UInt8(ascii: "%") {
                guard i + 2 < b.count, isHex(b[i + 1]), isHex(b[i + 2]) else { return false }
                i += 3
                continue
            }
            guard byte > 0x20, byte < 0x7F, !"<>\"{}|\\^` ".utf8.contains(byte) else { return false }
            i += 1
        }
        return true
    }

    private static func isHex(_ byte: UInt8) -> Bool {
        (byte >= 0x30 && byte <= 0x39) || (byte >= 0x41 && byte <= 0x46) || (byte >= 0x61 && byte <= 0x66)
    }

    private static func isLetter(_ byte: UInt8) -> Bool { (byte | 0x20) >= 0x61 && (byte | 0x20) <= 0x7A }

    private static func isAlphanumeric(_ byte: UInt8) -> Bool { isLetter(byte) || (byte >= 0x30 && byte <= 0x39) }
}
