#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// An IPv4 or IPv6 address range in CIDR notation (`203.0.113.0/24`, `2001:db8::/32`, or a single
/// address). Addresses are kept as 16 bytes (IPv4 mapped into `::ffff:0:0/96`) so one comparison
/// serves both families; matching is a masked compare, cheap enough for every request.
public struct IPRange: Sendable, Hashable, CustomStringConvertible {
    public let network: [UInt8]
    public let prefixLength: Int
    private let text: String

    public var description: String { text }

    /// Parses `address` or `address/prefix`; nil when malformed or the prefix is out of range.
    public init?(_ raw: String) {
        let parts = raw.split(separator: "/", maxSplits: 1, omittingEmptySubsequences: false).map(String.init)
        guard let (bytes, isV4) = Self.parseAddress(parts[0]) else { return nil }
        let maxPrefix = isV4 ? 32 : 128
        var prefix = maxPrefix
        if parts.count == 2 {
            guard let value = Int(parts[1]), (0...maxPrefix).contains(value), parts[1].allSatisfy(\.isASCII) else { return nil }
            prefix = value
        }
        let bits = isV4 ? prefix + 96 : prefix
        network = Self.mask(bytes, bits: bits)
        prefixLength = bits
        text = parts.count == 2 ? "\(parts[0])/\(prefix)" : parts[0]
    }

    /// Whether `address` (16-byte form, see `IPRange.bytes(of:)`) lies in the range.
    public func contains(_ address: [UInt8]) -> Bool {
        guard address.count == 16 else { return false }
        return Self.mask(address, bits: prefixLength) == network
    }

    public func contains(_ address: String) -> Bool {
        guard let bytes = Self.bytes(of: address) else { return false }
        return contains(bytes)
    }

    /// The 16-byte form of an IPv4 or IPv6 address literal.
    public static func bytes(of address: String) -> [UInt8]? {
        parseAddress(address)?.0
    }

    private static func parseAddress(_ text: String) -> ([UInt8], Bool)? {
        var v4 = in_addr()
        if inet_pton(AF_INET, text, &v4) == 1 {
            let four = withUnsafeBytes(of: &v4) { Array($0) }
            return ([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff] + four, true)
        }
        var v6 = in6_addr()
        guard inet_pton(AF_INET6, text, &v6) == 1 else { return nil }
        return (withUnsafeBytes(of: &v6) { Array($0) }, false)
    }

    private static func mask(_ bytes: [UInt8], bits: Int) -> [UInt8] {
        var result = bytes
        for i in 0..<16 {
            let keep = max(0, min(8, bits - i * 8))
            result[i] &= keep == 8 ? 0xff : UInt8(truncatingIfNeeded: 0xff << (8 - keep))
        }
        return result
    }
}

/// Client address rules of an API: deny wins; an empty allow list allows everyone else.
public struct IPAccessRules: Sendable, Equatable {
    public var allow: [IPRange]
    public var deny: [IPRange]

    public init(allow: [IPRange] = [], deny: [IPRange] = []) {
        self.allow = allow
        self.deny = deny
    }

    public var isEmpty: Bool { allow.isEmpty && deny.isEmpty }

    public func permits(_ address: [UInt8]) -> Bool {
        if deny.contains(where: { $0.contains(address) }) { return false }
        return allow.isEmpty || allow.contains { $0.contains(address) }
    }
}
