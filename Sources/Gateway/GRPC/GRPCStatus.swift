import NIOHPACK
import NIOHTTP1

/// gRPC's side of the gateway's answers (the gRPC over HTTP/2 protocol, PROTOCOL-HTTP2.md): status
/// codes, the trailers-only answer a refusal becomes, `grpc-timeout`, and how a call's gRPC status
/// is metered. Pure.
enum GRPCStatus {
    static let ok = 0
    static let cancelled = 1
    static let unknown = 2
    static let invalidArgument = 3
    static let deadlineExceeded = 4
    static let notFound = 5
    static let permissionDenied = 7
    static let resourceExhausted = 8
    static let unimplemented = 12
    static let internalError = 13
    static let unavailable = 14
    static let unauthenticated = 16

    /// Whether a request is a gRPC call (`application/grpc`, `application/grpc+proto`, …).
    static func isGRPC(_ contentType: String?) -> Bool {
        guard let contentType, contentType.hasASCIIPrefix(caseInsensitively: "application/grpc") else { return false }
        let rest = contentType.utf8.dropFirst(16)
        return rest.isEmpty || rest.first == UInt8(ascii: "+") || rest.first == UInt8(ascii: ";")
    }

    /// The gRPC status a gateway refusal with this HTTP status becomes.
    static func forRefusal(_ status: HTTPResponseStatus) -> Int {
        switch status.code {
        case 401: unauthenticated
        case 403: permissionDenied
        case 429, 413: resourceExhausted
        case 404, 410: unimplemented
        case 405, 400, 431: internalError
        case 408, 504: deadlineExceeded
        case 502, 503: unavailable
        default: status.code >= 500 ? unavailable : internalError
        }
    }

    /// The HTTP status a call's gRPC status is metered as, so that `UsageEvent.isBillable`
    /// (forwarded, status below 500) bills exactly the calls the server handled: OK and client
    /// errors are billable; UNKNOWN, DEADLINE_EXCEEDED, UNIMPLEMENTED, INTERNAL, UNAVAILABLE and
    /// DATA_LOSS (server-side failures) are not. The mapping is grpc-gateway's.
    static func meteredHTTPStatus(_ code: Int) -> UInt {
        switch code {
        case 0: 200
        case 1: 499
        case 3, 9, 11: 400
        case 4: 504
        case 5: 404
        case 6, 10: 409
        case 7: 403
        case 8: 429
        case 12: 501
        case 14: 503
        case 16: 401
        default: 500  // 2 UNKNOWN, 13 INTERNAL, 15 DATA_LOSS, anything else
        }
    }

    /// The status's canonical name (`NOT_FOUND`), the title of a translated call's problem.
    static func name(_ code: Int) -> String {
        let names = [
            "OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND", "ALREADY_EXISTS", "PERMISSION_DENIED",
            "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS",
            "UNAUTHENTICATED",
        ]
        return names.indices.contains(code) ? names[code] : "UNKNOWN"
    }

    /// A `grpc-timeout` value ("100m", "5S", up to 8 digits and a unit), in nanoseconds; nil when
    /// malformed (the call then has no deadline of its own).
    static func timeout(_ value: String) -> UInt64? {
        let bytes = Array(value.utf8)
        guard bytes.count >= 2, bytes.count <= 9, let unit = bytes.last else { return nil }
        var amount: UInt64 = 0
        for byte in bytes.dropLast() {
            guard byte >= 0x30 && byte <= 0x39 else { return nil }
            amount = amount * 10 + UInt64(byte - 0x30)
        }
        let (result, overflow): (UInt64, Bool)
        switch unit {
        case UInt8(ascii: "H"): (result, overflow) = amount.multipliedReportingOverflow(by: 3_600_000_000_000)
        case UInt8(ascii: "M"): (result, overflow) = amount.multipliedReportingOverflow(by: 60_000_000_000)
        case UInt8(ascii: "S"): (result, overflow) = amount.multipliedReportingOverflow(by: 1_000_000_000)
        case UInt8(ascii: "m"): (result, overflow) = amount.multipliedReportingOverflow(by: 1_000_000)
        case UInt8(ascii: "u"): (result, overflow) = amount.multipliedReportingOverflow(by: 1_000)
        case UInt8(ascii: "n"): (result, overflow) = (amount, false)
        default: return nil
        }
        return overflow ? UInt64.max : result
    }

    /// A deadline as a `grpc-timeout` value: the finest unit whose amount fits in 8 digits,
    /// rounded up so the upstream's deadline never ends before the gateway's.
    static func timeoutValue(nanoseconds: UInt64) -> String {
        let units: [(UInt64, String)] = [(1, "n"), (1_000, "u"), (1_000_000, "m"), (1_000_000_000, "S"), (60_000_000_000, "M"), (3_600_000_000_000, "H")]
        for (scale, unit) in units {
            let amount = nanoseconds / scale + (nanoseconds % scale == 0 ? 0 : 1)
            if amount <= 99_999_999 { return "\(amount)\(unit)" }
        }
        return "99999999H"
    }

    /// `grpc-message`: percent-encoded UTF-8 (bytes outside printable ASCII and `%` itself).
    static func encodeMessage(_ message: String) -> String {
        var out = ""
        for byte in message.utf8 {
            if byte >= 0x20 && byte <= 0x7e && byte != UInt8(ascii: "%") {
                out.unicodeScalars.append(Unicode.Scalar(byte))
            } else {
                out += "%" + String(byte, radix: 16, uppercase: true).leftPadded(to: 2)
            }
        }
        return out
    }

    /// A trailers-only answer (HTTP 200, the status in the one header block that ends the stream)
    /// for a refusal the gateway made itself; rate-limit and other gateway headers stay.
    static func trailersOnly(_ response: LocalResponse, detail: String, requestID: String?, strictTransportSecurity: String?) -> HPACKHeaders {
        var block = HPACKHeaders()
        block.add(name: ":status", value: "200")
        block.add(name: "content-type", value: "application/grpc")
        for (name, value) in response.headers where !name.isASCII(caseInsensitively: "content-type") {
            block.add(name: name.lowercased(), value: value)
        }
        if let requestID { block.add(name: "x-request-id", value: requestID) }
        if let strictTransportSecurity { block.add(name: "strict-transport-security", value: strictTransportSecurity) }
        block.add(name: "grpc-status", value: String(forRefusal(response.status)))
        block.add(name: "grpc-message", value: encodeMessage(detail))
        return block
    }
}

extension String {
    fileprivate func leftPadded(to width: Int) -> String {
        count >= width ? self : String(repeating: "0", count: width - count) + self
    }
}
