import NIOCore

/// The PROXY protocol header (versions 1 and 2) that a TCP load balancer in front of the gateway
/// (HAProxy `send-proxy`, AWS NLB proxy protocol v2) puts before the client's first byte, naming the
/// client's real address. Pure: bytes in, a decision out.
///
/// When a listener is set to expect it, every connection must start with a valid header: one
/// without is closed, so a client that reaches the listener directly cannot name any address it
/// likes. A `LOCAL` header (the balancer's own health check) or an `UNKNOWN`/unspecified family
/// keeps the connection's own peer address.
public enum ProxyProtocolHeader {
    public enum Outcome: Equatable, Sendable {
        /// Not enough bytes yet.
        case needMore
        /// Not a valid header: close the connection.
        case invalid(String)
        /// A header of `length` bytes; `address` is the client's (nil: keep the peer's).
        case parsed(address: String?, length: Int)
    }

    /// The longest version 1 header (the specification's bound).
    static let maximumV1Length = 107
    /// The most bytes a version 2 header may announce here (addresses plus TLVs).
    static let maximumV2Payload = 4_096
    static let v2Signature: [UInt8] = [0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A]

    public static func parse(_ bytes: some Collection<UInt8>) -> Outcome {
        let bytes = Array(bytes.prefix(16 + maximumV2Payload))
        guard let first = bytes.first else { return .needMore }
        if first == v2Signature[0] { return parseV2(bytes) }
        if first == UInt8(ascii: "P") { return parseV1(bytes) }
        return .invalid("the connection did not start with a PROXY protocol header")
    }

    private static func parseV1(_ bytes: [UInt8]) -> Outcome {
        let prefix = Array("PROXY ".utf8)
        let known = min(bytes.count, prefix.count)
        guard Array(bytes[..<known]) == Array(prefix[..<known]) else { return .invalid("not a PROXY protocol header") }
        guard let lineFeed = bytes.prefix(maximumV1Length).firstIndex(of: 0x0A) else {
            return bytes.count >= maximumV1Length ? .invalid("PROXY v1 header longer than 107 bytes") : .needMore
        }
        guard lineFeed > 0, bytes[lineFeed - 1] == 0x0D else { return .invalid("PROXY v1 header does not end in CRLF") }
        guard let line = String(bytes: bytes[..<(lineFeed - 1)], encoding: .ascii) else { return .invalid("PROXY v1 header is not ASCII") }
        let words = line.split(separator: " ", omittingEmptySubsequences: false).map(String.init)
        let length = lineFeed + 1
        guard words.count >= 2, words[0] == "PROXY" else { return .invalid("malformed PROXY v1 header") }
        switch words[1] {
        case "UNKNOWN":
            return .parsed(address: nil, length: length)
        case "TCP4", "TCP6":
            guard words.count == 6, UInt16(words[4]) != nil, UInt16(words[5]) != nil else { return .invalid("malformed PROXY v1 header") }
            let source = words[2]
            guard let parsed = IPRange.bytes(of: source) else { return .invalid("PROXY v1 source is not an IP address") }
            let isV4 = parsed.starts(with: [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff]) && !source.contains(":")
            guard (words[1] == "TCP4") == isV4, IPRange.bytes(of: words[3]) != nil else { return .invalid("PROXY v1 addresses do not match their family") }
            return .parsed(address: source, length: length)
        default:
            return .invalid("PROXY v1 protocol \(words[1].prefix(10)) is not supported")
        }
    }

    private static func parseV2(_ bytes: [UInt8]) -> Outcome {
        let known = min(bytes.count, v2Signature.count)
        guard Array(bytes[..<known]) == Array(v2Signature[..<known]) else { return .invalid("not a PROXY protocol header") }
        guard bytes.count >= 16 else { return .needMore }
        let versionCommand = bytes[12]
        guard versionCommand >> 4 == 2 else { return .invalid("PROXY v2 header of an unknown version") }
        let payload = Int(bytes[14]) << 8 | Int(bytes[15])
        guard payload <= maximumV2Payload else { return .invalid("PROXY v2 header longer than \(maximumV2Payload) bytes") }
        guard bytes.count >= 16 + payload else { return .needMore }
        let length = 16 + payload
        switch versionCommand & 0x0F {
        case 0x0:  // LOCAL: the balancer's own connection
            return .parsed(address: nil, length: length)
        case 0x1:  // PROXY
            break
        default:
            return .invalid("PROXY v2 command is not LOCAL or PROXY")
        }
        let body = bytes[16..<length]
        switch bytes[13] {
        case 0x11, 0x12:  // TCP or UDP over IPv4: source, destination, ports
            guard payload >= 12 else { return .invalid("PROXY v2 IPv4 addresses are cut short") }
            return .parsed(address: text(of: body.prefix(4)), length: length)
        case 0x21, 0x22:  // over IPv6
            guard payload >= 36 else { return .invalid("PROXY v2 IPv6 addresses are cut short") }
            return .parsed(address: text(of: body.prefix(16)), length: length)
        case 0x00:  // UNSPEC
            return .parsed(address: nil, length: length)
        default:
            return .invalid("PROXY v2 address family is not supported")
        }
    }
}

extension ProxyProtocolHeader {
    /// The canonical text of a packed IPv4 or IPv6 address.
    static func text(of packed: some Collection<UInt8>) -> String? {
        (try? SocketAddress(packedIPAddress: ByteBuffer(bytes: packed), port: 0))?.ipAddress
    }
}

/// What the decoder tells the handlers after it: the client address the balancer named.
public struct ProxiedClientAddress: Sendable {
    public let address: String
}

/// First in the pipeline of a listener that expects the PROXY protocol: reads the header (up to
/// its bounded length), tells the handlers after it the client's address, hands on the bytes that
/// followed it and steps out. A connection whose first bytes are not a header is closed.
final class ProxyProtocolDecoder: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    private var buffered: ByteBuffer?

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var incoming = unwrapInboundIn(data)
        if var held = buffered {
            held.writeBuffer(&incoming)
            incoming = held
        }
        switch ProxyProtocolHeader.parse(incoming.readableBytesView) {
        case .needMore:
            buffered = incoming
        case .invalid:
            buffered = nil
            context.close(promise: nil)
        case .parsed(let address, let length):
            buffered = nil
            incoming.moveReaderIndex(forwardBy: length)
            if let address { context.fireUserInboundEventTriggered(ProxiedClientAddress(address: address)) }
            if incoming.readableBytes > 0 { context.fireChannelRead(wrapInboundOut(incoming)) }
            context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
        }
    }
}
