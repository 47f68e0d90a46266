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
    ///   - dropExpect: the gateway answered the client's `Expect: 100-continue` itself.
    static func write(
        _ head: HTTPRequestHead, plan: ForwardPlan, target: UpstreamTargetConfig, requestID: String, connection: Connection, upgrade: String?,
        chunked: Bool = false, dropExpect: Bool = false, allocator: ByteBufferAllocator
    ) -> ByteBuffer {
        // a transformed API collects the passing headers first, so its operations see them all
        let transform = plan.route.requestTransform
        let context = transform.map { _ in TransformContext(plan: plan, requestID: requestID, clientIP: connection.clientIP) }
        let hop = HopByHop(head.headers)
        var estimate =
            head.method.rawValue.utf8.count + target.pathPrefix.utf8.count + plan.upstreamURI.utf8.count + target.hostHeader.utf8.count
            + connection.clientIP.utf8.count + requestID.utf8.count + plan.tenant.identityHeaderLine.utf8.count
            + plan.app.identityHeaderLines.utf8.count + plan.grant.identityHeaderLines.utf8.count + 200
        for (name, value) in head.headers { estimate += name.utf8.count + value.utf8.count + 4 }
        if transform != nil { estimate += 1024 }
        var out = allocator.buffer(capacity: estimate)
        HeadBytes.write(into: &out, estimate: estimate) { out in
            var passing: [(name: String, value: String)] = []
            out.put(head.method.rawValue)
            out.put(" ")
            out.put(target.pathPrefix)
            if let transform, let context {
                out.put(transform.uri(plan.upstreamURI, context: context))
            } else {
                out.put(plan.upstreamURI)
            }
            out.put(" HTTP/1.1\r\nHost: ")
            out.put(target.hostHeader)
            out.put("\r\n")
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
                    || (dropExpect && name.isASCII(caseInsensitively: "expect"))
                {
                    continue
                }
                if transform != nil {
                    passing.append((name, value))
                } else {
                    out.header(name, value)
                }
            }
            if let transform, let context {
                // names the gateway sets (credentials, ids, forwarding, framing) are refused at
                // validation, so the operations cannot reach what follows
                transform.headers(&passing, context: context)
                for (name, value) in passing { out.header(name, value) }
            }
            if chunked { out.put("Transfer-Encoding: chunked\r\n") }
            if let upgrade {
                out.put("Connection: Upgrade\r\n")
                out.header("Upgrade", upgrade)
            }
            out.put("X-Forwarded-For: ")
            if let forwardedFor {
                out.put(forwardedFor)
                out.put(", ")
            }
            out.put(connection.clientIP)
            if connection.secure {
                out.put("\r\nX-Forwarded-Proto: https\r\n")
            } else {
                out.put("\r\nX-Forwarded-Proto: http\r\n")
            }
            if !host.isEmpty { out.header("X-Forwarded-Host", host) }
            out.header("X-Request-Id", requestID)
            // identity lines (tenant, app, client, team, plan, subscription) come preformatted with the snapshot
            out.put(plan.tenant.identityHeaderLine)
            out.put(plan.app.identityHeaderLines)
            out.put(plan.grant.identityHeaderLines)
            out.put("\r\n")
        }
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
        var estimate = bytes.count + requestID.utf8.count + (shape.strictTransportSecurityLine?.utf8.count ?? 0) + 128
        for (name, value) in added { estimate += name.utf8.count + value.utf8.count + 4 }
        var out = allocator.buffer(capacity: estimate)
        HeadBytes.write(into: &out, estimate: estimate) { out in
            out.put(shape.http10 ? "HTTP/1.0 " : "HTTP/1.1 ")
            out.put(UnsafeRawBufferPointer(rebasing: bytes[response.statusText]))
            out.put("\r\n")
            for field in response.fields {
                let name = field.name
                if shape.switching && HTTPHeadParser.equals(bytes, name, "upgrade") {
                    out.put(UnsafeRawBufferPointer(rebasing: bytes[field.line]))
                    out.put("\r\n")
                    continue
                }
                if HopByHop.isStandard(bytes, name) || HTTPHeadParser.equals(bytes, name, "x-request-id") { continue }
                if !response.connectionListed.isEmpty && response.connectionListed.contains(where: { HTTPHeadParser.equals(bytes, name, $0) }) { continue }
                if shape.dechunk && HTTPHeadParser.equals(bytes, name, "transfer-encoding") { continue }
                if added.contains(where: { HTTPHeadParser.equals(bytes, name, caseFolded: $0.0) }) { continue }
                out.put(UnsafeRawBufferPointer(rebasing: bytes[field.line]))
                out.put("\r\n")
            }
            for (name, value) in added { out.header(name, value) }
            out.header("X-Request-Id", requestID)
            if let line = shape.strictTransportSecurityLine { out.put(line) }
            if shape.switching {
                out.put("Connection: Upgrade\r\n")
            } else if shape.close {
                out.put("Connection: close\r\n")
            } else if shape.http10 {
                out.put("Connection: keep-alive\r\n")
            }
            out.put("\r\n")
        }
        return out
    }
}
