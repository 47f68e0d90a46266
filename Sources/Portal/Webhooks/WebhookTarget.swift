import Foundation
import Gateway

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// Where webhooks may go. A webhook URL is chosen by a tenant's users but fetched by our server,
/// so it is a server-side request forgery vector: by default only public unicast addresses are
/// allowed (no loopback, private, link-local — cloud metadata lives there —, carrier-grade NAT,
/// multicast or unspecified addresses). `allowPrivateNetworks` (tests, single-machine setups)
/// lifts that, but our own listeners stay refused: the portal must not call itself.
struct WebhookTargetPolicy: Sendable {
    var allowPrivateNetworks = false
    /// Ports this process listens on; refused on any local address even when private targets are allowed.
    var ownPorts: Set<Int> = []

    /// A parsed webhook URL.
    struct Target: Sendable, Equatable {
        var url: String
        var secure: Bool
        var host: String
        var port: Int
    }

    /// Checks the URL's shape and, when the host is an address literal or a local name, the address.
    func validate(_ raw: String) throws -> Target {
        let text = raw.trimmingCharacters(in: .whitespacesAndNewlines)
        guard text.count <= 2000, !TextInput.hasControlCharacters(text), let components = URLComponents(string: text),
            let scheme = components.scheme?.lowercased(), scheme == "http" || scheme == "https",
            let rawHost = components.host, !rawHost.isEmpty
        else { throw AppError.validation(["url": "Give an absolute http:// or https:// URL."]) }
        guard components.user == nil, components.password == nil else {
            throw AppError.validation(["url": "Credentials in the URL are not allowed; authenticate with the signature header."])
        }
        guard components.fragment == nil else { throw AppError.validation(["url": "Remove the #fragment."]) }
        let secure = scheme == "https"
        let port = components.port ?? (secure ? 443 : 80)
        guard (1...65535).contains(port) else { throw AppError.validation(["url": "The port is out of range."]) }
        // Judged in canonical form: `2130706433`, `0x7f.1`, `0177.0.0.1` and `LOCALHOST.` are loopback too.
        let host = HostName.canonical(rawHost)
        let target = Target(url: text, secure: secure, host: host, port: port)
        if HostName.isLocal(host) {
            try check(address: "127.0.0.1", port: port)
        } else if let v4 = HostName.legacyIPv4(host) {
            try check(address: v4, port: port)
        } else if Self.isAddressLiteral(host) {
            try check(address: host, port: port)
        } else if !HostName.isValid(host) {
            throw AppError.validation(["url": "The host is not a valid DNS name."])
        }
        return target
    }

    /// Checks every address a host name resolved to (at delivery time, right before connecting).
    func check(addresses: [String], port: Int) throws {
        guard !addresses.isEmpty else { throw AppError.validation(["url": "The host name does not resolve."]) }
        for address in addresses { try check(address: address, port: port) }
    }

    func check(address: String, port: Int) throws {
        let kind = Self.classify(address)
        if kind == .invalid { throw AppError.validation(["url": "'\(address)' is not an IP address."]) }
        if kind == .loopback || kind == .unspecified, ownPorts.contains(port) {
            throw AppError.validation(["url": "Webhooks to Tollgate's own listeners are refused."])
        }
        if kind != .public && !allowPrivateNetworks {
            throw AppError.validation(["url": "Webhooks to \(kind.rawValue) addresses are refused."])
        }
    }

    enum AddressKind: String, Sendable {
        case `public`, loopback, `private`, linkLocal = "link-local", sharedNAT = "shared (carrier-grade NAT)", multicast, unspecified,
            reserved, invalid
    }

    static func isAddressLiteral(_ host: String) -> Bool {
        classify(host) != .invalid
    }

    /// Pure classification of an IPv4 or IPv6 literal (parsed by the gateway's `IPRange`, which
    /// maps IPv4 into `::ffff:0:0/96`, so mapped and plain IPv4 are classified alike).
    static func classify(_ address: String) -> AddressKind {
        guard let b = IPRange.bytes(of: address) else { return .invalid }
        if b[0..<10].allSatisfy({ $0 == 0 }) && b[10] == 0xff && b[11] == 0xff { return classifyV4(Array(b[12..<16])) }
        if b.allSatisfy({ $0 == 0 }) { return .unspecified }
        if b[0..<15].allSatisfy({ $0 == 0 }) && b[15] == 1 { return .loopback }
        if b[0] == 0xff { return .multicast }
        if b[0] & 0xfe == 0xfc { return .private }  // fc00::/7 unique local
        if b[0] == 0xfe && b[1] & 0xc0 == 0x80 { return .linkLocal }  // fe80::/10
        if b[0..<12].allSatisfy({ $0 == 0 }) { return .reserved }  // deprecated IPv4-compatible
        return .public
    }

    private static func classifyV4(_ b: [UInt8]) -> AddressKind {
        switch (b[0], b[1]) {
        case (0, _): return .unspecified
        case (127, _): return .loopback
        case (10, _), (192, 168): return .private
        case (172, 16...31): return .private
        case (169, 254): return .linkLocal
        case (100, 64...127): return .sharedNAT
        case (224...239, _): return .multicast
        case (240...255, _): return .reserved
        case (192, 0) where b[2] == 0: return .reserved  // IETF protocol assignments
        default: return .public
        }
    }

    /// Resolves a host name to its addresses (blocking getaddrinfo: call off the event loops).
    static func resolve(_ host: String) -> [String] {
        if isAddressLiteral(host) { return [host] }
        var hints = addrinfo()
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var result: UnsafeMutablePointer<addrinfo>?
        guard getaddrinfo(host, nil, &hints, &result) == 0, let first = result else { return [] }
        defer { freeaddrinfo(first) }
        var addresses: [String] = []
        var cursor: UnsafeMutablePointer<addrinfo>? = first
        while let info = cursor {
            var buffer = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
            if info.pointee.ai_family == AF_INET, let sa = info.pointee.ai_addr {
                sa.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { sin in
                    var addr = sin.pointee.sin_addr
                    _ = inet_ntop(AF_INET, &addr, &buffer, socklen_t(buffer.count))
                }
            } else if info.pointee.ai_family == AF_INET6, let sa = info.pointee.ai_addr {
                sa.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { sin in
                    var addr = sin.pointee.sin6_addr
                    _ = inet_ntop(AF_INET6, &addr, &buffer, socklen_t(buffer.count))
                }
            }
            let text = String(cString: buffer)
            if !text.isEmpty, !addresses.contains(text) { addresses.append(text) }
            cursor = info.pointee.ai_next
        }
        return addresses
    }
}
