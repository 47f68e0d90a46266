import NIOCore
import NIOHTTP1

/// The request line and headers the upstream hears, written straight into a buffer. The body
/// follows with the client's own framing, so `Content-Length`/`Transfer-Encoding` stay.
/// Credentials, the gateway's own `X-Tollgate-*` headers and the forwarding headers the client sent
/// do not pass; the gateway sets the forwarding headers, the request id and the caller's identity.
enum UpstreamRequestHead {
    struct Connection {
        /// The client's address as the gateway knows it (peer, or named by a PROXY protocol header).
        var clientIP: String
        /// The client came over TLS.
        var secure: Bool
    }

    /// - Parameters:
    ///   - upgrade: the protocol a WebSocket handshake asks for; `Connection: Upgrade` and this
    ///     `Upgrade` are forwarded (otherwise both are hop-by-hop and dropped).
    ///   - chunked: the gateway frames the body in chunks (an HTTP/2 request body of unknown length).
    static func write(
        _ head: HTTPRequestHead, plan: ForwardPlan, target: UpstreamTargetConfig, requestID: String, connection: Connection, upgrade: String?,
        chunked: Bool = false, allocator: ByteBufferAllocator
    ) -> ByteBuffer {
        var out = allocator.buffer(capacity: 1024)
        // a transformed API collects the passing headers first, so its operations see them all
        let transform = plan.route.requestTransform
        let context = transform.map { _ in TransformContext(plan: plan, requestID: requestID, clientIP: connection.clientIP) }
        var passing: [(name: String, value: String)] = []
        out.writeString(head.method.rawValue)
        out.writeStaticString(" ")
        out.writeString(target.pathPrefix)
        if let transform, let context {
            out.writeString(transform.uri(plan.upstreamURI, context: context))
        } else {
            out.writeString(plan.upstreamURI)
        }
        out.writeStaticString(" HTTP/1.1\r\nHost: ")
        out.writeString(target.hostHeader)
        out.writeStaticString("\r\n")
        let hop = HopByHop(head.headers)
        var forwardedFor: String?
        var host = ""
        for (name, value) in head.headers {
            if name.isASCII(caseInsensitively: "host") {
                host = value
                continue
            }
            if name.isASCII(caseInsensitively: "x-forwarded-for") {
                forwardedFor = value
                continue
            }
            // credentials stay at the gateway; ids and identity headers are the gateway's to set
            if hop.contains(name) || name.isASCII(caseInsensitively: "authorization") || name.isASCII(caseInsensitively: "x-api-key")
                || name.isASCII(caseInsensitively: "x-request-id") || name.hasASCIIPrefix(caseInsensitively: "x-tollgate-")
                || name.isASCII(caseInsensitively: "x-forwarded-proto") || name.isASCII(caseInsensitively: "x-forwarded-host")
            {
                continue
            }
            if transform != nil {
                passing.append((name, value))
            } else {
                out.writeHeader(name, value)
            }
        }
        if let transform, let context {
            // names the gateway sets (credentials, ids, forwarding, framing) are refused at
            // validation, so the operations cannot reach what follows
            transform.headers(&passing, context: context)
            for (name, value) in passing { out.writeHeader(name, value) }
        }
        if chunked { out.writeStaticString("Transfer-Encoding: chunked\r\n") }
        if let upgrade {
            out.writeStaticString("Connection: Upgrade\r\n")
            out.writeHeader("Upgrade", upgrade)
        }
        out.writeStaticString("X-Forwarded-For: ")
        if let forwardedFor {
            out.writeString(forwardedFor)
            out.writeStaticString(", ")
        }
        out.writeString(connection.clientIP)
        if connection.secure {
            out.writeStaticString("\r\nX-Forwarded-Proto: https\r\n")
        } else {
            out.writeStaticString("\r\nX-Forwarded-Proto: http\r\n")
        }
        if !host.isEmpty { out.writeHeader("X-Forwarded-Host", host) }
        out.writeHeader("X-Request-Id", requestID)
        // identity lines (tenant, app, client, team, plan, subscription) come preformatted with the snapshot
        out.writeString(plan.tenant.identityHeaderLine)
        out.writeString(plan.app.identityHeaderLines)
        out.writeString(plan.grant.identityHeaderLines)
        out.writeStaticString("\r\n")
        return out
    }
}

/// The response head the client gets: the upstream's status line and header lines as they came,
/// less hop-by-hop ones and those the gateway sets (rate limits, deprecation, CORS, request id),
/// which follow.
enum ClientResponseHead {
    struct Shape {
        /// The client spoke HTTP/1.0.
        var http10: Bool
        /// A chunked body goes to the client as its bare payload (an HTTP/1.0 client).
        var dechunk: Bool
        /// The client connection closes after this response.
        var close: Bool
        /// A relayed `101 Switching Protocols`: `Upgrade` passes and `Connection: Upgrade` is set.
        var switching: Bool
        /// `Strict-Transport-Security: …\r\n` on the TLS listener, when configured.
        var strictTransportSecurityLine: String?
    }

    static func write(
        _ response: ParsedResponse, bytes: UnsafeRawBufferPointer, added: [(String, String)], requestID: String, shape: Shape,
        allocator: ByteBufferAllocator
    ) -> ByteBuffer {
        var out = allocator.buffer(capacity: bytes.count + 512)
        out.writeStaticString(shape.http10 ? "HTTP/1.0 " : "HTTP/1.1 ")
        out.writeBytes(UnsafeRawBufferPointer(rebasing: bytes[response.statusText]))
        out.writeStaticString("\r\n")
        for field in response.fields {
            let name = field.name
            if shape.switching && HTTPHeadParser.equals(bytes, name, "upgrade") {
                out.writeBytes(UnsafeRawBufferPointer(rebasing: bytes[field.line]))
                out.writeStaticString("\r\n")
                continue
            }
            if HopByHop.isStandard(bytes, name) || HTTPHeadParser.equals(bytes, name, "x-request-id") { continue }
            if !response.connectionListed.isEmpty && response.connectionListed.contains(where: { HTTPHeadParser.equals(bytes, name, $0) }) { continue }
            if shape.dechunk && HTTPHeadParser.equals(bytes, name, "transfer-encoding") { continue }
            if added.contains(where: { HTTPHeadParser.equals(bytes, name, caseFolded: $0.0) }) { continue }
            out.writeBytes(UnsafeRawBufferPointer(rebasing: bytes[field.line]))
            out.writeStaticString("\r\n")
        }
        for (name, value) in added { out.writeHeader(name, value) }
        out.writeHeader("X-Request-Id", requestID)
        if let line = shape.strictTransportSecurityLine { out.writeString(line) }
        if shape.switching {
            out.writeStaticString("Connection: Upgrade\r\n")
        } else if shape.close {
            out.writeStaticString("Connection: close\r\n")
        } else if shape.http10 {
            out.writeStaticString("Connection: keep-alive\r\n")
        }
        out.writeStaticString("\r\n")
        return out
    }
}
