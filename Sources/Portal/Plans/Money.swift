import Foundation

/// Display of integer minor units; the single rounding rule for money lives with rating (billing).
enum Money {
    static func format(minor: Int64, currency: String) -> String {
        let digits = ISO4217.minorUnits[currency] ?? 2
        guard digits > 0 else { return "\(minor) \(currency)" }
        var scale: Int64 = 1
        for _ in 0..<digits { scale *= 10 }
        let sign = minor < 0 ? "-" : ""
        let magnitude = minor.magnitude
        let fraction = String(magnitude % UInt64(scale))
        return "\(sign)\(magnitude / UInt64(scale)).\(String(repeating: "0", count: digits - fraction.count))\(fraction) \(currency)"
    }
}
