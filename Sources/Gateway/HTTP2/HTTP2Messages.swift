import NIOCore
import NIOHPACK
import NIOHTTP1

/// Between an HTTP/2 stream's header blocks and what the rest of the gateway works with: the
/// request head `RequestGate` decides, and the response header block made from the upstream's
/// HTTP/1.1 head or a local answer. Pure.
enum HTTP2Messages {
    /// The version given to heads that came over HTTP/2 (no keep-alive or upgrade semantics apply).
    static let version = HTTPVersion(major: 2, minor: 0)

    enum RequestProblem: Error, Equatable {
        /// 400: the header block does not describe a request the gateway can forward.
        case malformed(String)
        /// 405: CONNECT, and extended CONNECT for anything but `websocket`, is not relayed.
        case connectNotSupported
    }

    /// A stream's request: the head the gate decides, and whether the stream opens a WebSocket
    /// (RFC 8441: `:method CONNECT` with `:protocol websocket`), whose head is then the `GET` an
    /// HTTP/1.1 handshake would be, so that every rule (methods, validation, limits) sees the same.
    struct Request {
        var head: HTTPRequestHead
        var webSocket: Bool
    }

    static func requestHead(_ block: HPACKHeaders) -> Result<HTTPRequestHead, RequestProblem> {
        request(block).map(\.head)
    }

    /// The request head from a stream's HEADERS: `:method` and `:path` become the request line,
    /// `:authority` the `Host` (a `host` field beside it is dropped), cookie crumbs are joined
    /// (RFC 9113 §8.2.3). NIOHTTP2 has already checked the block's form (pseudo-headers first and
    /// once, lowercase names, no connection-specific fields).
    static func request(_ block: HPACKHeaders) -> Result<Request, RequestProblem> {
        var method: String?
        var extendedProtocol: String?
        var path: String?
        var authority: String?
        var headers = HTTPHeaders()
        var cookies: [String] = []
        for (name, value, _) in block {
            switch name {
            case ":method": method = value
            case ":path": path = value
            case ":authority": authority = value
            case ":scheme": continue
            case ":protocol": extendedProtocol = value
            case "host": if authority == nil { authority = value }
            case "cookie": cookies.append(value)
            default:
                if name.hasPrefix(":") { return .failure(.malformed("The pseudo-header \(name) is not known.")) }
                headers.add(name: name, value: value)
            }
        }
        guard let method, !method.isEmpty else { return .failure(.malformed("The request has no :method.")) }
        var webSocket = false
        if method == "CONNECT" {
            // NIOHTTP2 lets `:protocol` through only when the gateway advertised extended CONNECT
            guard let extendedProtocol, extendedProtocol.lowercased() == "websocket" else { return .failure(.connectNotSupported) }
            webSocket = true
        }
        guard let path, path.utf8.first == UInt8(ascii: "/") || (path == "*" && method == "OPTIONS") else {
            return .failure(.malformed("The request's :path must start with /."))
        }
        if let authority {
            guard !authority.isEmpty, !authority.utf8.contains(where: { $0 <= 0x20 || $0 == 0x7f }) else {
                return .failure(.malformed("The request's :authority is not a host."))
            }
            headers.replaceOrAdd(name: "host", value: authority)
        }
        if !cookies.isEmpty { headers.add(name: "cookie", value: cookies.joined(separator: "; ")) }
        let head = HTTPRequestHead(version: version, method: webSocket ? .GET : HTTPMethod(rawValue: method), uri: path, headers: headers)
        return .success(Request(head: head, webSocket: webSocket))
    }

    /// The response header block for the upstream's HTTP/1.1 head: its fields less connection-
    /// specific ones (hop-by-hop, those its `Connection` lists, `Transfer-Encoding`) and those the
    /// gateway sets, then the gateway's (`added`, the request id, HSTS).
    static func responseHeaders(
        _ response: ParsedResponse, bytes: UnsafeRawBufferPointer, added: [(String, String)], requestID: String, strictTransportSecurity: String?
    ) -> HPACKHeaders {
        var block = HPACKHeaders()
        block.reserveCapacity(response.fields.count + added.count + 3)
        block.add(name: ":status", value: String(response.status))
        for field in response.fields {
            let name = field.name
            if HopByHop.isStandard(bytes, name) || HTTPHeadParser.equals(bytes, name, "x-request-id")
                || HTTPHeadParser.equals(bytes, name, "transfer-encoding") || HTTPHeadParser.equals(bytes, name, "proxy-connection")
            {
                continue
            }
            if !response.connectionListed.isEmpty && response.connectionListed.contains(where: { HTTPHeadParser.equals(bytes, name, $0) }) { continue }
            if added.contains(where: { HTTPHeadParser.equals(bytes, name, caseFolded: $0.0) }) { continue }
            let text = String(decoding: UnsafeRawBufferPointer(rebasing: bytes[name]), as: UTF8.self).lowercased()
            block.add(name: text, value: String(decoding: UnsafeRawBufferPointer(rebasing: bytes[field.value]), as: UTF8.self))
        }
        for (name, value) in added { block.add(name: name.lowercased(), value: value) }
        block.add(name: "x-request-id", value: requestID)
        if let strictTransportSecurity { block.add(name: "strict-transport-security", value: strictTransportSecurity) }
        return block
    }

    /// The header block of an interim (1xx) answer the upstream sent as an HTTP/1.1 head (`103 Early
    /// Hints`, `100 Continue`): its status and fields less connection-specific ones; nil for a head
    /// that is not interim or not readable (`101` never reaches here: the exchange refuses it).
    static func interimHeaders(_ head: ByteBuffer) -> HPACKHeaders? {
        head.withUnsafeReadableBytes { bytes -> HPACKHeaders? in
            guard case .complete(let response, _) = HTTPHeadParser.parseResponse(bytes, maxBytes: bytes.count, requestMethod: .GET),
                (100..<200).contains(response.status), response.status != 101
            else { return nil }
            var block = HPACKHeaders()
            block.add(name: ":status", value: String(response.status))
            for field in response.fields {
                let name = field.name
                if HopByHop.isStandard(bytes, name) || HTTPHeadParser.equals(bytes, name, "transfer-encoding")
                    || HTTPHeadParser.equals(bytes, name, "content-length") || HTTPHeadParser.equals(bytes, name, "proxy-connection")
                {
                    continue
                }
                if !response.connectionListed.isEmpty && response.connectionListed.contains(where: { HTTPHeadParser.equals(bytes, name, $0) }) { continue }
                let text = String(decoding: UnsafeRawBufferPointer(rebasing: bytes[name]), as: UTF8.self).lowercased()
                block.add(name: text, value: String(decoding: UnsafeRawBufferPointer(rebasing: bytes[field.value]), as: UTF8.self))
            }
            return block
        }
    }

    /// The header block of an answer the gateway makes itself.
    static func localHeaders(_ response: LocalResponse, requestID: String?, strictTransportSecurity: String?) -> HPACKHeaders {
        var block = HPACKHeaders()
        block.add(name: ":status", value: String(response.status.code))
        for (name, value) in response.headers { block.add(name: name.lowercased(), value: value) }
        block.add(name: "content-length", value: String(response.body.utf8.count))
        block.add(name: "cache-control", value: "no-store")
        if let requestID { block.add(name: "x-request-id", value: requestID) }
        if let strictTransportSecurity { block.add(name: "strict-transport-security", value: strictTransportSecurity) }
        return block
    }

    /// The header block an HTTP/2 upstream gets for a relayed stream: the request's own fields less
    /// credentials, the gateway's headers and connection-specific ones, the path rewritten for the
    /// target, then the forwarding headers, the request id and the caller's identity (the
    /// snapshot's preformatted `Name: value` lines, split back into fields).
    static func upstreamRequestHeaders(
        _ block: HPACKHeaders, method: String, target: UpstreamTargetConfig, path: String, requestID: String, clientIP: String, secure: Bool,
        identityLines: [String]
    ) -> HPACKHeaders {
        var out = HPACKHeaders()
        out.add(name: ":method", value: method)
        out.add(name: ":scheme", value: target.tls ? "https" : "http")
        out.add(name: ":authority", value: target.hostHeader)
        out.add(name: ":path", value: target.pathPrefix + path)
        var forwardedFor: String?
        var authority: String?
        for (name, value, indexing) in block {
            switch name {
            case ":authority", "host":
                if authority == nil { authority = value }
                continue
            case "x-forwarded-for":
                forwardedFor = value
                continue
            case "authorization", "x-api-key", "x-request-id", "x-forwarded-proto", "x-forwarded-host", "connection", "keep-alive",
                "proxy-connection", "transfer-encoding", "upgrade":
                continue
            default:
                if name.hasPrefix(":") || name.hasPrefix("x-tollgate-") { continue }
                if name == "te" && value != "trailers" { continue }
                out.add(name: name, value: value, indexing: indexing)
            }
        }
        out.add(name: "x-forwarded-for", value: forwardedFor.map { "\($0), \(clientIP)" } ?? clientIP)
        out.add(name: "x-forwarded-proto", value: secure ? "https" : "http")
        if let authority { out.add(name: "x-forwarded-host", value: authority) }
        out.add(name: "x-request-id", value: requestID)
        for lines in identityLines {
            for line in lines.split(separator: "\r\n") {
                guard let colon = line.firstIndex(of: ":") else { continue }
                out.add(name: line[..<colon].lowercased(), value: String(line[line.index(after: colon)...].drop { $0 == " " }))
            }
        }
        return out
    }
}
