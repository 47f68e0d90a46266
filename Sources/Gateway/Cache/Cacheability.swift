import Foundation

/// What a shared cache may do with a request and a response (RFC 9111), as pure functions of
/// their header fields. The gateway is a shared cache: `private` responses are never kept.
enum Cacheability {
    /// Statuses a cache may store without special knowledge (RFC 9110 §15.1 "heuristically
    /// cacheable"); the policy's TTL stands in for the heuristic, bounded by what the upstream says.
    static let storableStatuses: Set<Int> = [200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501]

    enum Verdict: Equatable {
        case store(ttl: Int)
        /// Not kept; the reason goes into `Cache-Status`'s `detail`.
        case skip(String)
    }

    /// One `Cache-Control` directive, name lowercased, value unquoted.
    struct Directive: Equatable {
        var name: String
        var value: String?
    }

    static func directives(_ values: [String]) -> [Directive] {
        values.flatMap { $0.split(separator: ",") }.compactMap { item in
            let text = item.trimmingCharacters(in: .whitespaces)
            guard !text.isEmpty else { return nil }
            guard let equals = text.firstIndex(of: "=") else { return Directive(name: text.lowercased(), value: nil) }
            var value = text[text.index(after: equals)...].trimmingCharacters(in: .whitespaces)
            if value.count >= 2, value.hasPrefix("\""), value.hasSuffix("\"") { value = String(value.dropFirst().dropLast()) }
            return Directive(name: text[..<equals].trimmingCharacters(in: .whitespaces).lowercased(), value: value)
        }
    }

    /// Whether the client asked not to be answered from a cache (`Cache-Control: no-cache`,
    /// `no-store` or `max-age=0`, or `Pragma: no-cache` without `Cache-Control`). Such a request is
    /// forwarded (`fwd=request`); its response may still be stored unless it said `no-store`.
    static func requestBypasses(cacheControl: [String], pragma: [String]) -> (bypass: Bool, noStore: Bool) {
        let found = directives(cacheControl)
        if found.isEmpty, pragma.contains(where: { $0.lowercased().contains("no-cache") }) { return (true, false) }
        let noStore = found.contains { $0.name == "no-store" }
        let bypass = noStore || found.contains { $0.name == "no-cache" || ($0.name == "max-age" && $0.value == "0") }
        return (bypass, noStore)
    }

    /// Whether a response may be kept and for how long: the policy's TTL, never beyond the upstream's
    /// `s-maxage`, else `max-age`, else `Expires` (less `Date` when given), less `Age`.
    /// - Parameters:
    ///   - headers: the response's fields, names lowercased.
    ///   - vary: the request headers the policy keys on, lowercased.
    static func response(status: Int, headers: [(name: String, value: String)], policyTTL: Int, vary: [String], now: Date) -> Verdict {
        guard storableStatuses.contains(status) else { return .skip("status") }
        func values(_ name: String) -> [String] { headers.filter { $0.name == name }.map(\.value) }
        if !values("set-cookie").isEmpty { return .skip("set-cookie") }
        for name in values("vary").flatMap({ $0.split(separator: ",") }).map({ $0.trimmingCharacters(in: .whitespaces).lowercased() }) where !name.isEmpty {
            // a response that varies on what the key does not hold cannot be told apart
            if name == "*" || name == "authorization" || !vary.contains(name) { return .skip("vary") }
        }
        let control = directives(values("cache-control"))
        if control.contains(where: { $0.name == "no-store" }) { return .skip("no-store") }
        if control.contains(where: { $0.name == "private" }) { return .skip("private") }
        // no-cache means "revalidate every time": without revalidation, not kept at all
        if control.contains(where: { $0.name == "no-cache" }) { return .skip("no-cache") }
        var ttl = policyTTL
        if let shared = control.first(where: { $0.name == "s-maxage" }) ?? control.first(where: { $0.name == "max-age" }) {
            // an unreadable delta is treated as stale (RFC 9111 §1.2.2)
            guard let text = shared.value, let seconds = seconds(text) else { return .skip("max-age") }
            ttl = min(ttl, seconds)
        } else if let expires = values("expires").first {
            guard let at = HTTPDate.parse(expires) else { return .skip("expires") }
            let base = values("date").first.flatMap(HTTPDate.parse) ?? now
            let left = at.timeIntervalSince(base)
            guard left.isFinite, left > 0 else { return .skip("expires") }
            ttl = min(ttl, Int(min(left, Double(Int32.max))))
        }
        if let age = values("age").first.flatMap(seconds) { ttl -= min(age, ttl) }
        return ttl > 0 ? .store(ttl: ttl) : .skip("stale")
    }

    /// A delta-seconds value; huge values are capped (RFC 9111 §1.2.2), anything else is nil.
    static func seconds(_ text: String) -> Int? {
        guard !text.isEmpty, text.utf8.allSatisfy({ $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }) else { return nil }
        return Int(text.prefix(10)).map { min($0, Int(Int32.max)) }
    }
}

extension HTTPDate {
    /// IMF-fixdate only (what servers send); other forms are nil, which RFC 9111 treats as expired.
    static func parse(_ text: String) -> Date? {
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "GMT")
        formatter.dateFormat = "EEE, dd MMM yyyy HH:mm:ss 'GMT'"
        return formatter.date(from: text.trimmingCharacters(in: .whitespaces))
    }
}
