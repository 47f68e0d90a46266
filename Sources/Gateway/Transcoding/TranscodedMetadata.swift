import NIOHPACK
import NIOHTTP1

/// Which headers of a JSON client's request reach the gRPC upstream as metadata, and which of the
/// upstream's metadata come back to the client as headers. The rule is grpc-gateway's, less what
/// belongs to the gateway. Pure.
///
/// Request: a `Grpc-Metadata-{key}` header becomes metadata `{key}`. A permanent HTTP header
/// (RFC 4229's list as grpc-gateway has it) becomes `grpcgateway-{name}`. Other headers are not
/// sent. Never sent: hop-by-hop headers, the client's credentials (`Authorization`, `X-API-Key`,
/// cookies) and the gateway's own headers (`X-Request-Id`, `X-Forwarded-*`, `X-Tollgate-*`), since
/// the gateway sets those itself. A `Grpc-Metadata-` header that names one of them, or a reserved
/// gRPC key (`grpc-*`, `te`, `content-type`...), is refused (400): silently dropping it would
/// surprise the client that sent it. The same goes for a key or value gRPC cannot carry. A `-bin`
/// key's value is base64, passed on as it is.
///
/// Response: each metadata entry in the upstream's response headers becomes a
/// `Grpc-Metadata-{key}` header; its trailer metadata become `Grpc-Trailer-{key}` trailer fields
/// for a client that accepts trailers, `Grpc-Metadata-{key}` headers otherwise (`TranscodedTrailers`
/// decides which). A `-bin` entry stays base64 as it came. gRPC's own fields and the gateway's
/// headers are left out.
enum TranscodedMetadata {
    static let requestPrefix = "grpc-metadata-"
    static let permanentPrefix = "grpcgateway-"
    static let responsePrefix = "Grpc-Metadata-"
    static let trailerPrefix = "Grpc-Trailer-"

    /// grpc-gateway's permanent HTTP headers, less `Authorization` and `Cookie` (credentials),
    /// `Host` (the upstream hears it as `x-forwarded-host`) and `Expect` (the gateway answers it).
    static let permanentHeaders: Set<String> = [
        "accept", "accept-charset", "accept-language", "accept-ranges", "cache-control", "content-type", "date", "from", "if-match",
        "if-modified-since", "if-none-match", "if-schedule-tag-match", "if-unmodified-since", "max-forwards", "origin", "pragma", "referer",
        "user-agent", "via", "warning",
    ]

    /// Keys a client may not set through `Grpc-Metadata-`: credentials, the gateway's own headers,
    /// hop-by-hop headers and those HTTP/2 or gRPC reserve.
    static let refusedKeys: Set<String> = [
        "authorization", "proxy-authorization", "x-api-key", "cookie", "set-cookie", "x-request-id", "forwarded", "host", "connection",
        "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "te", "trailer", "content-type", "content-length", "user-agent",
    ]

    /// Why a request's headers do not make metadata (answered 400).
    struct Problem: Error, Equatable {
        var header: String
        var reason: String
    }

    /// The metadata a request's headers make, in their order.
    static func request(_ headers: HTTPHeaders) throws(Problem) -> [(String, String)] {
        var out: [(String, String)] = []
        for (name, value) in headers {
            let lower = name.lowercased()
            if permanentHeaders.contains(lower) {
                guard isASCIIValue(value) else { throw Problem(header: name, reason: "its value is not printable ASCII, which gRPC metadata needs") }
                out.append((permanentPrefix + lower, value))
                continue
            }
            guard lower.hasPrefix(requestPrefix) else { continue }
            let key = String(lower.dropFirst(requestPrefix.utf8.count))
            guard !key.isEmpty, key.utf8.allSatisfy(isKeyByte) else {
                throw Problem(header: name, reason: "a metadata key is made of a-z, 0-9, '-', '_' and '.'")
            }
            guard !isRefused(key) else {
                throw Problem(header: name, reason: "\(key) is a credential, the gateway's own header or reserved by gRPC, so it is not sent as metadata")
            }
            if key.hasSuffix("-bin") {
                guard !value.isEmpty, value.utf8.allSatisfy(isBase64Byte) else {
                    throw Problem(header: name, reason: "a -bin key's value is base64")
                }
            } else {
                guard isASCIIValue(value) else { throw Problem(header: name, reason: "its value is not printable ASCII, which gRPC metadata needs") }
            }
            out.append((key, value))
        }
        return out
    }

    /// The metadata after a route's request transformations: their header operations act on the
    /// metadata keys (a header name set or added becomes a key, lowercased). What they make must
    /// still be metadata a gRPC upstream can take: keys and values it cannot carry are dropped
    /// (the provider's configuration, not the client, is at fault), and so are credentials and the
    /// gateway's own names, as they are for a relayed call. Path and query operations do not apply
    /// to a gRPC method's path.
    static func transformed(_ metadata: [(String, String)], by transform: RequestTransform, context: TransformContext) -> [(String, String)] {
        var fields = metadata.map { (name: $0.0, value: $0.1) }
        transform.headers(&fields, context: context)
        return fields.compactMap { field in
            let key = field.name.lowercased()
            guard !key.isEmpty, key.utf8.allSatisfy(isKeyByte), !isRefused(key) else { return nil }
            let fits = key.hasSuffix("-bin") ? field.value.utf8.allSatisfy(isBase64Byte) : isASCIIValue(field.value)
            return fits ? (key, field.value) : nil
        }
    }

    static func isRefused(_ key: String) -> Bool {
        refusedKeys.contains(key) || key.hasPrefix("grpc-") || key.hasPrefix("x-forwarded-") || key.hasPrefix("x-tollgate-")
            || key.hasPrefix("proxy-")
    }

    /// The client fields made of the metadata in an upstream's response header block or trailers,
    /// less gRPC's own fields and the headers the gateway sets (`gatewayHeaders`, lowercase), each
    /// named `prefix` + key (`responsePrefix` for headers, `trailerPrefix` for trailer fields).
    static func response(_ block: HPACKHeaders, gatewayHeaders: Set<String>, prefix: String = responsePrefix) -> [(String, String)] {
        var out: [(String, String)] = []
        for (name, value, _) in block {
            guard !name.hasPrefix(":"), !name.hasPrefix("grpc-"), name.utf8.allSatisfy(isKeyByte), !gatewayHeaders.contains(name) else { continue }
            switch name {
            case "content-type", "content-length", "te", "trailer", "connection", "keep-alive", "transfer-encoding", "upgrade", "x-request-id",
                "date", "server":
                continue
            default:
                // an HTTP/1.1 head cannot carry control characters; HPACK values can
                guard value.utf8.allSatisfy({ $0 == 0x09 || ($0 >= 0x20 && $0 != 0x7F) }) else { continue }
                out.append((prefix + name, value))
            }
        }
        return out
    }

    private static func isKeyByte(_ byte: UInt8) -> Bool {
        (byte >= UInt8(ascii: "a") && byte <= UInt8(ascii: "z")) || (byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9"))
            || byte == UInt8(ascii: "-") || byte == UInt8(ascii: "_") || byte == UInt8(ascii: ".")
    }

    private static func isBase64Byte(_ byte: UInt8) -> Bool {
        (byte >= UInt8(ascii: "a") && byte <= UInt8(ascii: "z")) || (byte >= UInt8(ascii: "A") && byte <= UInt8(ascii: "Z"))
            || (byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9")) || byte == UInt8(ascii: "+") || byte == UInt8(ascii: "/")
            || byte == UInt8(ascii: "=")
    }

    private static func isASCIIValue(_ value: String) -> Bool {
        value.utf8.allSatisfy { $0 >= 0x20 && $0 <= 0x7E }
    }
}
