import Foundation
import PostgresNIO
import Testing

@testable import Billing
@testable import Portal

/// The meter's hand-written array columns against PostgresNIO's own array encoding, read back by
/// Postgres: the same values arrive either way.
@Suite struct PostgresColumnTests {
    /// `true` when Postgres reads the column and PostgresNIO's array as the same array.
    static func same(_ column: BinaryArrayColumn, _ reference: some PostgresNonThrowingEncodable, as type: String, _ database: Database) async throws -> Bool {
        try await database.withSystemScope { connection in
            var equal = false
            let query: PostgresQuery = "SELECT (\(column)::\(unescaped: type)[] IS NOT DISTINCT FROM \(reference)::\(unescaped: type)[])"
            for try await value in try await connection.query(query, logger: database.logger).decode(Bool.self) { equal = value }
            return equal
        }
    }

    @Test func everyKindOfColumnReadsBackAsPostgresNIOsArrayDoes() async throws {
        try await TestDatabase.withDatabase { database in
            let uuids = [UUID(), UUID(uuidString: "00000000-0000-0000-0000-000000000000")!, UUID()]
            // a fraction below a microsecond, before 2000, far ahead: truncated the same way
            let dates = [Date(), Date(timeIntervalSince1970: 946_684_799.999_999_7), Date(timeIntervalSince1970: 4_102_444_800.123_456_9)]
            let same1 = try await Self.same(.uuid(uuids), uuids, as: "uuid", database)
            #expect(same1)
            let same2 = try await Self.same(.timestamptz(dates), dates, as: "timestamptz", database)
            #expect(same2)
            let same3 = try await Self.same(.int64([0, -1, .max, .min, 42]), [Int64(0), -1, .max, .min, 42], as: "bigint", database)
            #expect(same3)
            let same4 = try await Self.same(.int32([0, -1, .max, .min]), [Int32(0), -1, .max, .min], as: "integer", database)
            #expect(same4)
            let same5 = try await Self.same(.int16([0, -1, .max, .min]), [Int16(0), -1, .max, .min], as: "smallint", database)
            #expect(same5)
            let same6 = try await Self.same(.bool([true, false, true]), [true, false, true], as: "boolean", database)
            #expect(same6)
            let same7 = try await Self.same(.text(["GET", "", "ümlaut ✓", String(repeating: "x", count: 300)]), ["GET", "", "ümlaut ✓", String(repeating: "x", count: 300)], as: "text", database)
            #expect(same7)
            let same8 = try await Self.same(.text([]), [String](), as: "text", database)
            #expect(same8)
            let same9 = try await Self.same(.uuid([]), [UUID](), as: "uuid", database)
            #expect(same9)
            // and a difference shows: the check above could fail
            let same10 = try await Self.same(.int64([1, 2]), [Int64(1), 3], as: "bigint", database)
            #expect(!same10)
        }
    }

    @Test func aTimeOutsidePostgresRangeIsClampedNotATrap() {
        #expect(BinaryArrayColumn.microsecondsSince2000(Date(timeIntervalSince1970: 946_684_800)) == 0)
        #expect(BinaryArrayColumn.microsecondsSince2000(Date(timeIntervalSince1970: 946_684_801.5)) == 1_500_000)
        #expect(BinaryArrayColumn.microsecondsSince2000(Date(timeIntervalSince1970: 1e300)) == .max)
        #expect(BinaryArrayColumn.microsecondsSince2000(Date(timeIntervalSince1970: -1e300)) == .min)
    }
}
