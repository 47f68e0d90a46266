/// Currencies a marketplace can bill in, with the digits of their minor unit; kept to the ones
/// with 2 or 0 digits that the rounding rule in `Rating` handles.
public enum ISO4217 {
    public static let minorUnits: [String: Int] = [
        "USD": 2, "EUR": 2, "GBP": 2, "CHF": 2, "CAD": 2, "AUD": 2, "NZD": 2, "SEK": 2, "NOK": 2, "DKK": 2,
        "PLN": 2, "CZK": 2, "HUF": 2, "INR": 2, "BRL": 2, "MXN": 2, "SGD": 2, "HKD": 2, "CNY": 2, "ZAR": 2,
        "JPY": 0, "KRW": 0,
    ]

    public static func isKnown(_ code: String) -> Bool { minorUnits[code] != nil }

    /// Integer minor units as a decimal string in the major unit, exactly: 4900 USD → "49.00",
    /// -5 USD → "-0.05", 120 JPY → "120". The form exports and JSON use.
    public static func decimal(minor: Int64, currency: String) -> String {
        let digits = minorUnits[currency] ?? 2
        guard digits > 0 else { return String(minor) }
        var scale: UInt64 = 1
        for _ in 0..<digits { scale *= 10 }
        let magnitude = minor.magnitude
        let fraction = String(magnitude % scale)
        return (minor < 0 ? "-" : "") + "\(magnitude / scale)." + String(repeating: "0", count: digits - fraction.count) + fraction
    }

    /// A per-request price in micros of a minor unit as a major-unit decimal without trailing
    /// zeros: 200_000 USD → "0.002".
    public static func unitPriceDecimal(micros: Int64, currency: String) -> String {
        let digits = (minorUnits[currency] ?? 2) + 6
        var scale: UInt64 = 1
        for _ in 0..<digits { scale *= 10 }
        let magnitude = micros.magnitude
        var fraction = String(magnitude % scale)
        fraction = String(repeating: "0", count: digits - fraction.count) + fraction
        while fraction.hasSuffix("0") { fraction.removeLast() }
        return (micros < 0 ? "-" : "") + "\(magnitude / scale)" + (fraction.isEmpty ? "" : "." + fraction)
    }
}
