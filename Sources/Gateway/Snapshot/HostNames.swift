import Foundation

/// Host names that decide routing or identity (custom hosts, webhook targets) are canonicalised
/// before they are judged: resolvers and URL parsers accept many spellings of one address
/// (`2130706433`, `0x7f.1`, `0177.0.0.1`, `127.1` and `0` are all IPv4; `LOCALHOST.` is localhost),
/// so a check on the text as typed is a check an attacker chooses the outcome of.
public enum HostName {
    /// Lowercased, without one trailing dot (the root label) and without IPv6 brackets.
    public static func canonical(_ text: String) -> String {
        var host = text.trimmingCharacters(in: .whitespaces).lowercased()
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        if host.hasSuffix(".") { host.removeLast() }
        return host
    }

    /// DNS syntax: 1–253 characters, labels of 1–63 letters, digits and hyphens, no hyphen at
    /// either end of a label.
    public static func isValid(_ text: String) -> Bool {
        guard (1...253).contains(text.utf8.count) else { return false }
        return text.split(separator: ".", omittingEmptySubsequences: false).allSatisfy { label in
            (1...63).contains(label.utf8.count) && label.first != "-" && label.last != "-"
                && label.utf8.allSatisfy { byte in
                    (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(byte) || (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains(byte)
                        || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte) || byte == UInt8(ascii: "-")
                }
        }
    }

    /// The dotted quad of a host that a resolver reads as IPv4 (inet_aton's rules: one to four
    /// parts, each decimal, octal with a leading 0, or hex with 0x; the last part fills the rest).
    /// nil when the host is not numeric in that sense.
    public static func legacyIPv4(_ host: String) -> String? {
        let parts = host.split(separator: ".", omittingEmptySubsequences: false)
        guard (1...4).contains(parts.count) else { return nil }
        var values: [UInt64] = []
        for part in parts {
            guard let value = number(part) else { return nil }
            values.append(value)
        }
        // Every part but the last is one byte; the last fills the remaining bytes.
        let leading = values.dropLast()
        guard leading.allSatisfy({ $0 <= 255 }), let last = values.last else { return nil }
        let remainingBits = UInt64(8 * (4 - leading.count))
        guard last < (UInt64(1) << remainingBits) else { return nil }
        var address: UInt64 = 0
        for byte in leading { address = address << 8 | byte }
        address = address << remainingBits | last
        return [24, 16, 8, 0].map { String((address >> UInt64($0)) & 0xff) }.joined(separator: ".")
    }

    private static func number(_ text: Substring) -> UInt64? {
        guard !text.isEmpty, text.utf8.count <= 32 else { return nil }
        let lower = text.lowercased()
        if lower.hasPrefix("0x") { return lower.count == 2 ? 0 : UInt64(lower.dropFirst(2), radix: 16) }
        if lower.count > 1 && lower.hasPrefix("0") { return UInt64(lower.dropFirst(), radix: 8) }
        return UInt64(lower, radix: 10)
    }

    /// Names that always mean this machine (RFC 6761 `localhost` and everything under it).
    public static func isLocal(_ host: String) -> Bool {
        host == "localhost" || host.hasSuffix(".localhost") || host == "localhost.localdomain"
    }

    /// An address literal in any spelling (IPv6, or IPv4 as a resolver reads it).
    public static func isAddressLiteral(_ host: String) -> Bool {
        host.contains(":") || legacyIPv4(host) != nil
    }
}

/// The rule for a tenant's custom host: it routes every request that names it to that tenant (on
/// the portal and on every gateway), so it must be a public DNS name that no one else already
/// answers to.
public enum CustomHostRule {
    /// The canonical host, or the reason it is refused.
    public static func check(_ text: String, baseDomain: String) -> Result<String, Refusal> {
        let host = HostName.canonical(text)
        if text.trimmingCharacters(in: .whitespaces).hasSuffix("..") { return .failure(.syntax) }
        if HostName.isAddressLiteral(host) { return .failure(.addressLiteral) }
        guard HostName.isValid(host) else { return .failure(.syntax) }
        if HostName.isLocal(host) { return .failure(.local) }
        let labels = host.split(separator: ".")
        guard labels.count >= 2, let top = labels.last, !top.allSatisfy(\.isNumber) else { return .failure(.notQualified) }
        let base = HostName.canonical(baseDomain)
        if host == base || host.hasSuffix("." + base) { return .failure(.underBaseDomain(base)) }
        return .success(host)
    }

    public enum Refusal: Error, Equatable, CustomStringConvertible {
        case syntax, addressLiteral, local, notQualified
        case underBaseDomain(String)

        public var description: String {
            switch self {
            case .syntax: "Enter a host name such as portal.example.com (letters, digits, hyphens and dots)."
            case .addressLiteral: "Use a DNS name, not an IP address."
            case .local: "localhost and names under .localhost always mean this machine; use a public DNS name."
            case .notQualified: "Use a fully qualified name such as portal.example.com."
            case .underBaseDomain(let base): "Names under \(base) are tenants' own addresses; use a host outside it."
            }
        }
    }
}
