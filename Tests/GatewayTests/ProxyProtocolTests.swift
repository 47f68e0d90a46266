import Foundation
import NIOCore
import Testing

@testable import Gateway

/// The PROXY protocol (v1 text, v2 binary) before a connection's first byte: the parser alone, then
/// a gateway listener that expects it.
@Suite struct ProxyProtocolTests {
    static func v2(command: UInt8 = 0x1, family: UInt8 = 0x11, addresses: [UInt8], extra: [UInt8] = []) -> [UInt8] {
        let payload = addresses + extra
        return ProxyProtocolHeader.v2Signature + [0x20 | command, family, UInt8(payload.count >> 8), UInt8(payload.count & 0xff)] + payload
    }

    static let v4Addresses: [UInt8] = [198, 51, 100, 9, 127, 0, 0, 1, 0xC3, 0x50, 0x1F, 0x40]
    static let v6Addresses: [UInt8] = [0x20, 0x01, 0x0d, 0xb8] + [UInt8](repeating: 0, count: 11) + [1] + [UInt8](repeating: 0, count: 15) + [1] + [0, 80, 0, 80]

    @Test(arguments: [
        ("PROXY TCP4 203.0.113.7 127.0.0.1 51000 8000\r\nGET", ProxyProtocolHeader.Outcome.parsed(address: "203.0.113.7", length: 45)),
        ("PROXY TCP6 2001:db8::7 ::1 51000 8000\r\n", .parsed(address: "2001:db8::7", length: 39)),
        ("PROXY UNKNOWN\r\n", .parsed(address: nil, length: 15)),
        ("PROXY UNKNOWN ffff::1 ::1 1 2\r\n", .parsed(address: nil, length: 31)),
        ("PROXY TCP4 203.0.113.7 127.0.0.1 51000", .needMore),
        ("PRO", .needMore),
        ("", .needMore),
        ("GET / HTTP/1.1\r\n\r\n", .invalid("the connection did not start with a PROXY protocol header")),
        ("PROXY TCP4 203.0.113.7 127.0.0.1 51000 8000\n", .invalid("PROXY v1 header does not end in CRLF")),
        ("PROXY TCP4 2001:db8::7 127.0.0.1 1 2\r\n", .invalid("PROXY v1 addresses do not match their family")),
        ("PROXY TCP4 not-an-ip 127.0.0.1 1 2\r\n", .invalid("PROXY v1 source is not an IP address")),
        ("PROXY TCP4 203.0.113.7 127.0.0.1 99999 2\r\n", .invalid("malformed PROXY v1 header")),
        ("PROXY UDP4 203.0.113.7 127.0.0.1 1 2\r\n", .invalid("PROXY v1 protocol UDP4 is not supported")),
        ("PROXY TCP4 " + String(repeating: "1", count: 120) + "\r\n", .invalid("PROXY v1 header longer than 107 bytes")),
    ])
    func versionOneHeaders(text: String, expected: ProxyProtocolHeader.Outcome) {
        #expect(ProxyProtocolHeader.parse(Array(text.utf8)) == expected, "\(text.debugDescription)")
    }

    @Test func versionTwoHeaders() {
        let v4 = Self.v2(addresses: Self.v4Addresses)
        #expect(ProxyProtocolHeader.parse(v4 + Array("GET".utf8)) == .parsed(address: "198.51.100.9", length: 28))
        #expect(ProxyProtocolHeader.parse(Self.v2(family: 0x21, addresses: Self.v6Addresses)) == .parsed(address: "2001:db8::1", length: 52))
        // TLVs after the addresses are skipped with them
        #expect(ProxyProtocolHeader.parse(Self.v2(addresses: Self.v4Addresses, extra: [0x04, 0x00, 0x02, 0x41, 0x42])) == .parsed(address: "198.51.100.9", length: 33))
        // the balancer's own health check keeps the peer address
        #expect(ProxyProtocolHeader.parse(Self.v2(command: 0x0, family: 0x00, addresses: [])) == .parsed(address: nil, length: 16))
        // cut anywhere: wait for more
        for cut in [1, 11, 12, 15, 16, 27] { #expect(ProxyProtocolHeader.parse(v4.prefix(cut)) == .needMore, "cut at \(cut)") }
        // broken ones
        #expect(ProxyProtocolHeader.parse(Self.v2(addresses: [1, 2, 3])) == .invalid("PROXY v2 IPv4 addresses are cut short"))
        #expect(ProxyProtocolHeader.parse(Self.v2(command: 0x2, addresses: Self.v4Addresses)) == .invalid("PROXY v2 command is not LOCAL or PROXY"))
        var wrongVersion = v4
        wrongVersion[12] = 0x11
        #expect(ProxyProtocolHeader.parse(wrongVersion) == .invalid("PROXY v2 header of an unknown version"))
        var huge = Self.v2(addresses: Self.v4Addresses)
        huge[14] = 0xff
        #expect(ProxyProtocolHeader.parse(huge) == .invalid("PROXY v2 header longer than 4096 bytes"))
        var garbled = v4
        garbled[5] = 0x77
        #expect(ProxyProtocolHeader.parse(garbled) == .invalid("not a PROXY protocol header"))
    }

    @Test func aListenerThatExpectsItTakesTheClientAddressFromTheHeader() async throws {
        let call = "GET /t/demo/echo/v1/hello HTTP/1.1\r\nHost: g\r\nX-API-Key: \(TestWorld.apiKey)\r\nConnection: close\r\n\r\n"
        try await GatewayProxyTests.withWorld(
            { world, upstream in world.snapshot(targets: [.loopback(upstream.port)], ipRules: IPAccessRules(deny: [IPRange("192.0.2.0/24")!])) },
            configure: { $0.proxyProtocol = true }
        ) { _, upstream, gateway in
            // v1 in the same packet as the request: the upstream hears the named client
            let v1 = try await GatewayListenerTests.exchange(port: gateway.port, "PROXY TCP4 203.0.113.7 127.0.0.1 51000 8000\r\n" + call)
            #expect(v1.hasPrefix("HTTP/1.1 200"), "\(v1)")
            #expect(upstream.seen.last?.header("x-forwarded-for") == "203.0.113.7")
            // v2 split in two writes, the header itself cut
            let (channel, received) = try await GatewayListenerTests.connect(port: gateway.port)
            let header = Self.v2(family: 0x21, addresses: Self.v6Addresses)
            try await channel.writeAndFlush(ByteBuffer(bytes: header.prefix(10)))
            try await Task.sleep(for: .milliseconds(50))
            try await channel.writeAndFlush(ByteBuffer(bytes: header.dropFirst(10) + Array(call.utf8)))
            #expect(try await received.get().hasPrefix("HTTP/1.1 200"))
            #expect(upstream.seen.last?.header("x-forwarded-for") == "2001:db8::1")
            // the API's address rules apply to the named client, not the balancer
            let denied = try await GatewayListenerTests.exchange(port: gateway.port, "PROXY TCP4 192.0.2.55 127.0.0.1 51000 8000\r\n" + call)
            #expect(denied.hasPrefix("HTTP/1.1 403"))
            // no header: closed without an answer, nothing forwarded
            let before = upstream.seen.count
            #expect(try await GatewayListenerTests.exchange(port: gateway.port, call).isEmpty)
            #expect(upstream.seen.count == before)
        }
    }
}
