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

/// UTC months by arithmetic, checked against Foundation's Gregorian calendar.
@Suite struct UTCMonthTests {
    static func calendarMonth(_ date: Date) -> (year: Int, month: Int, start: Date, days: Int) {
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = TimeZone(identifier: "UTC")!
        let parts = calendar.dateComponents([.year, .month], from: date)
        let start = calendar.date(from: parts)!
        return (parts.year!, parts.month!, start, calendar.range(of: .day, in: .month, for: date)!.count)
    }

    @Test(arguments: [
        "1970-01-01T00:00:00Z", "1969-12-31T23:59:59Z", "2000-02-29T12:00:00Z", "2024-02-29T23:59:59Z", "2100-02-28T00:00:00Z",
        "2026-11-30T23:59:59Z", "2026-12-01T00:00:00Z", "2026-12-31T23:59:59Z", "2027-01-01T00:00:00Z", "1900-03-01T00:00:00Z",
    ])
    func agreesWithTheCalendar(text: String) throws {
        let date = try #require(ISO8601DateFormatter().date(from: text))
        let month = UTCMonth(containing: date)
        let expected = Self.calendarMonth(date)
        #expect(month.year == expected.year)
        #expect(month.month == expected.month)
        #expect(month.start == expected.start)
        #expect(month.days == expected.days)
    }

    @Test func everyDayOfFourHundredYearsRoundTrips() {
        // a whole Gregorian cycle, leap rules included
        let first = UTCMonth.daysSinceEpoch(year: 1900, month: 1, day: 1)
        let mismatches = (first..<(first + 146_097)).filter { days in
            let civil = UTCMonth.civil(daysSinceEpoch: days)
            return UTCMonth.daysSinceEpoch(year: civil.year, month: civil.month, day: civil.day) != days
        }
        #expect(mismatches.isEmpty)
        #expect(UTCMonth.civil(daysSinceEpoch: first) == (1900, 1, 1))
    }

    @Test func monthsRollOverAndPrintAsPeriods() {
        #expect(UTCMonth(year: 2026, month: 12).next == UTCMonth(year: 2027, month: 1))
        #expect(UTCMonth(year: 2026, month: 3).text == "2026-03")
        #expect(UTCMonth(year: 2026, month: 11).text == "2026-11")
        #expect(UTCMonth(year: 2024, month: 2).days == 29)
        #expect(UTCMonth(year: 2100, month: 2).days == 28)
    }
}
