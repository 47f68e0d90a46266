import Crypto
import Foundation
import NIOCore
import NIOHPACK
import NIOHTTP1

/// RFC 8441 on the gateway's side, as pure functions: an HTTP/2 stream's extended CONNECT
/// (`:protocol websocket`) becomes the HTTP/1.1 handshake (RFC 6455 §4.1) the upstream hears, with a
/// key the gateway makes and whose `Sec-WebSocket-Accept` it checks; the upstream's `101` becomes
/// the stream's `:status 200`. The frames themselves are never parsed.
enum WebSocketOverHTTP2 {
    /// RFC 6455 §1.3's GUID, appended to the key before hashing.
    static let acceptGUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

    /// A fresh `Sec-WebSocket-Key`: 16 random bytes in base64.
    static func newKey<Generator: RandomNumberGenerator>(using generator: inout Generator) -> String {
        var bytes = [UInt8](repeating: 0, count: 16)
        for index in bytes.indices { bytes[index] = UInt8.random(in: .min ... .max, using: &generator) }
        return Data(bytes).base64EncodedString()
    }

    static func newKey() -> String {
        var generator = SystemRandomNumberGenerator()
        return newKey(using: &generator)
    }

    /// The `Sec-WebSocket-Accept` an upstream must answer to `key` (RFC 6455 §4.2.2).
    static func accept(forKey key: String) -> String {
        Data(Insecure.SHA1.hash(data: Data((key + acceptGUID).utf8))).base64EncodedString()
    }

    /// The handshake the exchange forwards: the stream's request as the `GET` it stands for
    /// (`HTTP2Messages.request`), with the gateway's key and version 13. The client's
    /// `Sec-WebSocket-Protocol` and `-Extensions` pass as they came; a key or accept it sent is
    /// dropped (over HTTP/2 the client has none: RFC 8441 §5).
    static func upstreamHead(_ head: HTTPRequestHead, key: String) -> HTTPRequestHead {
        var head = head
        head.headers.remove(name: "sec-websocket-key")
        head.headers.remove(name: "sec-websocket-accept")
        head.headers.replaceOrAdd(name: "sec-websocket-version", value: "13")
        head.headers.add(name: "sec-websocket-key", value: key)
        return head
    }

    /// Whether the upstream's `Sec-WebSocket-Accept` fields (exactly one) answer `expected`.
    static func acceptMatches(_ values: [Substring], expected: String) -> Bool {
        values.count == 1 && values[0].trimmingASCIIWhitespace() == expected
    }

    /// The stream's answer once the upstream switched: `:status 200`, the subprotocol and
    /// extensions the upstream chose, and the gateway's headers (rate-limit fields, request id, HSTS).
    static func acceptedHeaders(
        _ response: ParsedResponse, bytes: UnsafeRawBufferPointer, added: [(String, String)], requestID: String, strictTransportSecurity: String?
    ) -> HPACKHeaders {
        var block = HPACKHeaders()
        block.add(name: ":status", value: "200")
        for field in response.fields {
            let name: String
            if HTTPHeadParser.equals(bytes, field.name, "sec-websocket-protocol") {
                name = "sec-websocket-protocol"
            } else if HTTPHeadParser.equals(bytes, field.name, "sec-websocket-extensions") {
                name = "sec-websocket-extensions"
            } else {
                continue
            }
            block.add(name: name, value: String(decoding: UnsafeRawBufferPointer(rebasing: bytes[field.value]), as: UTF8.self))
        }
        for (name, value) in added { block.add(name: name.lowercased(), value: value) }
        block.add(name: "x-request-id", value: requestID)
        if let strictTransportSecurity { block.add(name: "strict-transport-security", value: strictTransportSecurity) }
        return block
    }
}
