import Foundation

/// One call as the access log tells it: a JSON object on one line (JSON Lines), with fields like
/// AWS API Gateway's access log. Built only when a sink wants it (see `AccessLogs`), after the
/// call is over.
///
/// What it never holds: request or response headers (so no `Authorization`, `X-API-Key`, cookies)
/// and no query string (query parameters may carry keys and tokens); `route` is the path alone.
public struct AccessLogRecord: Sendable, Equatable {
    /// The protocol the client spoke.
    public enum CallProtocol: String, Sendable {
        case http1 = "HTTP/1.1"
        case http2 = "HTTP/2"
        case grpc
    }

    /// A path is cut to this many bytes in the log (a request head may hold 16 KiB of it).
    public static let maximumRouteBytes = 2048

    public var requestID: String
    public var clientIP: String
    /// Milliseconds since 1970 (UTC) when the call ended.
    public var epochMilliseconds: Int64
    public var protocolName: CallProtocol
    public var method: String
    /// The path the client called, without the query string.
    public var route: String
    public var status: Int
    public var latencyMicroseconds: Int64
    /// From the request's end being sent to the upstream's response head; nil when no upstream
    /// answered (a local answer, a cache hit, a failure before the response).
    public var upstreamLatencyMicroseconds: Int64?
    public var bytesIn: Int64
    public var bytesOut: Int64
    public var tenantID: UUID?
    public var tenant: String?
    public var apiID: UUID?
    public var appID: UUID?
    public var clientID: String?
    public var planID: UUID?
    public var rejection: String?
    /// `hit`, `miss`, `request` or `method` (Cache-Status's `fwd`) for an API with a response
    /// cache; nil (left out) otherwise.
    public var cache: String?

    public init(
        requestID: String, clientIP: String, epochMilliseconds: Int64, protocolName: CallProtocol, method: String, route: String, status: Int,
        latencyMicroseconds: Int64, upstreamLatencyMicroseconds: Int64? = nil, bytesIn: Int64, bytesOut: Int64, tenantID: UUID? = nil,
        tenant: String? = nil, apiID: UUID? = nil, appID: UUID? = nil, clientID: String? = nil, planID: UUID? = nil, rejection: String? = nil,
        cache: String? = nil
    ) {
        self.requestID = requestID
        self.clientIP = clientIP
        self.epochMilliseconds = epochMilliseconds
        self.protocolName = protocolName
        self.method = method
        self.route = route
        self.status = status
        self.latencyMicroseconds = latencyMicroseconds
        self.upstreamLatencyMicroseconds = upstreamLatencyMicroseconds
        self.bytesIn = bytesIn
        self.bytesOut = bytesOut
        self.tenantID = tenantID
        self.tenant = tenant
        self.apiID = apiID
        self.appID = appID
        self.clientID = clientID
        self.planID = planID
        self.rejection = rejection
        self.cache = cache
    }

    /// The path of a request target: everything before `?` (and `#`), cut to `maximumRouteBytes`
    /// on a character boundary.
    public static func route(ofTarget target: String) -> String {
        let end = target.utf8.firstIndex(where: { $0 == UInt8(ascii: "?") || $0 == UInt8(ascii: "#") }) ?? target.endIndex
        let path = target[target.startIndex..<end]
        guard path.utf8.count > maximumRouteBytes else { return String(path) }
        var cut = String(decoding: path.utf8.prefix(maximumRouteBytes), as: UTF8.self)
        // a multi-byte character split at the cut decodes as U+FFFD: leave it out
        while cut.unicodeScalars.last == "\u{FFFD}" { cut.unicodeScalars.removeLast() }
        return cut
    }

    /// The record as one line of JSON, ending in `\n`. Field names are fixed; absent values are
    /// `null` (except `cache`, present only for cached APIs).
    public var jsonLine: String {
        var out = "{\"request_id\":"
        out.reserveCapacity(512)
        AccessLogJSON.appendString(requestID, to: &out)
        out += ",\"client_ip\":"
        AccessLogJSON.appendOptional(clientIP.isEmpty ? nil : clientIP, to: &out)
        out += ",\"time\":\""
        out += RFC3339.milliseconds(epochMilliseconds)
        out += "\",\"protocol\":\""
        out += protocolName.rawValue
        out += "\",\"method\":"
        AccessLogJSON.appendString(method, to: &out)
        out += ",\"route\":"
        AccessLogJSON.appendString(route, to: &out)
        out += ",\"status\":"
        out += String(status)
        out += ",\"latency_ms\":"
        out += AccessLogJSON.milliseconds(latencyMicroseconds)
        out += ",\"upstream_latency_ms\":"
        out += upstreamLatencyMicroseconds.map(AccessLogJSON.milliseconds) ?? "null"
        out += ",\"bytes_in\":"
        out += String(bytesIn)
        out += ",\"bytes_out\":"
        out += String(bytesOut)
        out += ",\"tenant_id\":"
        AccessLogJSON.appendOptional(tenantID?.uuidString.lowercased(), to: &out)
        out += ",\"tenant\":"
        AccessLogJSON.appendOptional(tenant, to: &out)
        out += ",\"api_id\":"
        AccessLogJSON.appendOptional(apiID?.uuidString.lowercased(), to: &out)
        out += ",\"app_id\":"
        AccessLogJSON.appendOptional(appID?.uuidString.lowercased(), to: &out)
        out += ",\"client_id\":"
        AccessLogJSON.appendOptional(clientID, to: &out)
        out += ",\"plan_id\":"
        AccessLogJSON.appendOptional(planID?.uuidString.lowercased(), to: &out)
        out += ",\"rejection\":"
        AccessLogJSON.appendOptional(rejection, to: &out)
        if let cache {
            out += ",\"cache\":"
            AccessLogJSON.appendString(cache, to: &out)
        }
        out += "}\n"
        return out
    }
}

/// The few JSON pieces the record needs, written straight into one string.
enum AccessLogJSON {
    static func appendOptional(_ text: String?, to out: inout String) {
        if let text { appendString(text, to: &out) } else { out += "null" }
    }

    /// A JSON string: `"` and `\` escaped, control characters (and U+2028/U+2029, which some
    /// JavaScript readers take for line ends) as `\u` escapes, so a record is always one line.
    static func appendString(_ text: String, to out: inout String) {
        out.unicodeScalars.append("\"")
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case "\u{2028}", "\u{2029}": out += scalar == "\u{2028}" ? "\\u2028" : "\\u2029"
            default:
                if scalar.value < 0x20 || scalar.value == 0x7F {
                    out += "\\u00"
                    out.unicodeScalars.append(hexDigits[Int(scalar.value >> 4)])
                    out.unicodeScalars.append(hexDigits[Int(scalar.value & 0xF)])
                } else {
                    out.unicodeScalars.append(scalar)
                }
            }
        }
        out.unicodeScalars.append("\"")
    }

    private static let hexDigits: [Unicode.Scalar] = Array("0123456789abcdef".unicodeScalars)

    /// Microseconds as milliseconds with three decimals (`12.345`); negative clock steps read 0.
    static func milliseconds(_ microseconds: Int64) -> String {
        let value = max(0, microseconds)
        let fraction = value % 1000
        let digits = String(fraction)
        return String(value / 1000) + "." + String(repeating: "0", count: 3 - digits.count) + digits
    }
}

/// RFC 3339 timestamps in UTC with milliseconds (`2026-12-05T02:28:12.123Z`), computed from the
/// epoch without a formatter (no locale, no shared state, cheap per call).
public enum RFC3339 {
    public static func milliseconds(_ epochMilliseconds: Int64) -> String {
        let millis = epochMilliseconds.remainderReportingOverflow(dividingBy: 86_400_000).partialValue
        var days = epochMilliseconds / 86_400_000
        var inDay = millis
        if inDay < 0 {
            inDay += 86_400_000
            days -= 1
        }
        let (year, month, day) = civil(daysSinceEpoch: days)
        let hours = inDay / 3_600_000
        let minutes = inDay / 60_000 % 60
        let seconds = inDay / 1000 % 60
        let ms = inDay % 1000
        return pad(year, 4) + "-" + pad(month, 2) + "-" + pad(day, 2) + "T" + pad(hours, 2) + ":" + pad(minutes, 2) + ":" + pad(seconds, 2) + "."
            + pad(ms, 3) + "Z"
    }

    /// Howard Hinnant's days-to-civil algorithm (proleptic Gregorian calendar).
    static func civil(daysSinceEpoch: Int64) -> (Int64, Int64, Int64) {
        let z = daysSinceEpoch + 719_468
        let era = (z >= 0 ? z : z - 146_096) / 146_097
        let dayOfEra = z - era * 146_097
        let yearOfEra = (dayOfEra - dayOfEra / 1460 + dayOfEra / 36524 - dayOfEra / 146_096) / 365
        let dayOfYear = dayOfEra - (365 * yearOfEra + yearOfEra / 4 - yearOfEra / 100)
        let mp = (5 * dayOfYear + 2) / 153
        let day = dayOfYear - (153 * mp + 2) / 5 + 1
        let month = mp < 10 ? mp + 3 : mp - 9
        return (yearOfEra + era * 400 + (month <= 2 ? 1 : 0), month, day)
    }

    private static func pad(_ value: Int64, _ width: Int) -> String {
        let digits = String(value)
        return digits.count >= width ? digits : String(repeating: "0", count: width - digits.count) + digits
    }
}
