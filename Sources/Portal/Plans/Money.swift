import Billing
import Foundation

/// Display of integer minor units; the single rounding rule for money lives with rating (billing).
enum Money {
    static func format(minor: Int64, currency: String) -> String {
        ISO4217.decimal(minor: minor, currency: currency) + " " + currency
    }

    /// Parses a non-negative decimal amount (`49`, `49.5`, `0.002`) into an integer count of
    /// 10^-`digits` units, exactly (no floating point); nil when malformed, negative, finer than
    /// `digits` allows, or too large.
    static func parseDecimal(_ text: String, digits: Int) -> Int64? {
        let trimmed = text.trimmingCharacters(in: .whitespaces)
        let parts = trimmed.split(separator: ".", maxSplits: 1, omittingEmptySubsequences: false)
        guard let whole = parts.first, !whole.isEmpty || parts.count == 2, whole.allSatisfy(\.isASCII), whole.allSatisfy(\.isNumber) else {
            return nil
        }
        let fraction = parts.count == 2 ? parts[1] : ""
        guard !(whole.isEmpty && fraction.isEmpty) else { return nil }
        guard fraction.allSatisfy({ $0.isASCII && $0.isNumber }), fraction.count <= digits, whole.count + digits <= 17 else { return nil }
        let padded = String(whole.isEmpty ? "0" : whole) + fraction + String(repeating: "0", count: digits - fraction.count)
        return Int64(padded)
    }

    /// Per-request price text in the currency's major unit → micros of a minor unit.
    static func parseUnitPrice(_ text: String, currency: String) -> Int64? {
        parseDecimal(text, digits: (ISO4217.minorUnits[currency] ?? 2) + 6)
    }

    /// Micros of a minor unit → major-unit text without trailing zeros (`0.002`).
    static func formatUnitPrice(micros: Int64, currency: String) -> String {
        ISO4217.unitPriceDecimal(micros: micros, currency: currency)
    }
}
