import Foundation
import Testing

@testable import Billing

@Suite struct CSVTests {
    @Test(arguments: [
        ("plain", "plain"), ("a,b", "\"a,b\""), ("say \"hi\"", "\"say \"\"hi\"\"\""), ("two\nlines", "\"two\nlines\""), ("", ""), ("Zürich", "Zürich"),
    ])
    func fieldsAreQuotedOnlyWhenNeeded(value: String, encoded: String) {
        #expect(CSV.field(value) == encoded)
    }

    @Test func linesEndWithCRLF() {
        #expect(CSV.line(["a", "b,c"]) == "a,\"b,c\"\r\n")
    }

    /// The export formats rollup days itself; checked against Foundation's calendar, including
    /// leap days, century rules and days before 1970 (back to 1900).
    @Test(arguments: [-25_567, -1, 0, 59, 11_016, 20_422, 20_513, 47_540, 2_932_896] as [Int32])
    func exportDatesMatchTheGregorianCalendar(days: Int32) {
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = TimeZone(identifier: "UTC")!
        let parts = calendar.dateComponents([.year, .month, .day], from: Date(timeIntervalSince1970: Double(days) * 86_400))
        let expected = String(format: "%04d-%02d-%02d", parts.year!, parts.month!, parts.day!)
        #expect(UsageNames.isoDate(daysSinceEpoch: days) == expected)
    }
}
