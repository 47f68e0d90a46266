import Foundation
import PostgresNIO
import Testing

@testable import Portal

@Suite struct MigratorTests {
    static func migrations(_ files: [(Int, String)]) throws -> Migrator {
        try Migrator(migrations: files.map { .init(version: $0.0, name: String(format: "%04d_m.sql", $0.0), sql: $0.1) }, logger: TestDatabase.logger)
    }

    @Test func appliesInOrderOnceAndRecordsChecksums() async throws {
        try await TestDatabase.withDatabase(migrate: false) { database in
            // setup
            let migrator = try Self.migrations([(2, "INSERT INTO t VALUES (2);"), (1, "CREATE TABLE t (v int); INSERT INTO t VALUES (1);")])
            // act
            let first = try await migrator.migrate(database.client)
            let second = try await migrator.migrate(database.client)
            // assert
            #expect(first == ["0001_m.sql", "0002_m.sql"])
            #expect(second.isEmpty)
            let rows = try await database.client.query("SELECT v FROM t ORDER BY v", logger: TestDatabase.logger)
            var values: [Int] = []
            for try await v in rows.decode(Int.self) { values.append(v) }
            #expect(values == [1, 2])
            #expect(try await migrator.isUpToDate(database.client))
        }
    }

    @Test func refusesAnEditedAppliedMigration() async throws {
        try await TestDatabase.withDatabase(migrate: false) { database in
            try await Self.migrations([(1, "CREATE TABLE t (v int);")]).migrate(database.client)
            let edited = try Self.migrations([(1, "CREATE TABLE t (v bigint);")])
            await #expect(throws: Migrator.MigrationError.self) { try await edited.migrate(database.client) }
            #expect(try await !edited.isUpToDate(database.client))
        }
    }

    @Test func aFailingMigrationLeavesNoTrace() async throws {
        try await TestDatabase.withDatabase(migrate: false) { database in
            let broken = try Self.migrations([(1, "CREATE TABLE ok (v int); SELECT no_such_function();")])
            await #expect(throws: Migrator.MigrationError.self) { try await broken.migrate(database.client) }
            let rows = try await database.client.query("SELECT to_regclass('ok') IS NULL", logger: TestDatabase.logger)
            for try await absent in rows.decode(Bool.self) { #expect(absent) }
        }
    }

    @Test func concurrentMigratorsApplyEachFileOnce() async throws {
        try await TestDatabase.withDatabase(migrate: false) { database in
            // setup: a migration that fails if it runs twice
            let migrator = try Self.migrations([(1, "CREATE TABLE once (v int);"), (2, "INSERT INTO once VALUES (1);")])
            // act
            let results = try await withThrowingTaskGroup(of: [String].self) { group in
                for _ in 0..<4 { group.addTask { try await migrator.migrate(database.client) } }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            // assert
            #expect(results.flatMap { $0 }.sorted() == ["0001_m.sql", "0002_m.sql"])
            let rows = try await database.client.query("SELECT count(*)::int FROM once", logger: TestDatabase.logger)
            for try await count in rows.decode(Int.self) { #expect(count == 1) }
        }
    }

    @Test func rejectsBadFileNamesAndDuplicates() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent(UUID().uuidString).path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        FileManager.default.createFile(atPath: directory + "/first.sql", contents: Data("SELECT 1;".utf8))
        #expect(throws: Migrator.MigrationError.self) { try Migrator(directory: directory, logger: TestDatabase.logger) }
        #expect(throws: Migrator.MigrationError.self) { try Self.migrations([(1, "SELECT 1"), (1, "SELECT 2")]) }
        #expect(throws: Migrator.MigrationError.self) { try Migrator(directory: directory + "/missing", logger: TestDatabase.logger) }
    }

    @Test func theRealMigrationsApplyAndAreIdempotent() async throws {
        try await TestDatabase.withDatabase { database in
            let migrator = try Migrator(directory: TestDatabase.migrationsDirectory, logger: TestDatabase.logger)
            #expect(try await migrator.migrate(database.client).isEmpty)
            #expect(try await migrator.isUpToDate(database.client))
        }
    }
}
