import Testing

@testable import Portal

@Suite struct SQLScriptTests {
    @Test(arguments: [
        ("SELECT 1; SELECT 2;", ["SELECT 1", "SELECT 2"]),
        ("SELECT 'a;b'; SELECT 2", ["SELECT 'a;b'", "SELECT 2"]),
        ("SELECT 'it''s; fine'", ["SELECT 'it''s; fine'"]),
        ("CREATE TABLE \"x;y\" (a int);", ["CREATE TABLE \"x;y\" (a int)"]),
        ("-- comment; here\nSELECT 1;", ["-- comment; here\nSELECT 1"]),
        ("/* a; /* nested; */ b */ SELECT 1;", ["/* a; /* nested; */ b */ SELECT 1"]),
        ("DO $$ BEGIN PERFORM 1; END $$; SELECT 2;", ["DO $$ BEGIN PERFORM 1; END $$", "SELECT 2"]),
        ("CREATE FUNCTION f() RETURNS int AS $fn$ SELECT 1; $fn$ LANGUAGE sql;", ["CREATE FUNCTION f() RETURNS int AS $fn$ SELECT 1; $fn$ LANGUAGE sql"]),
        ("SELECT $1::int;", ["SELECT $1::int"]),
        ("  ;; -- only a comment\n", []),
    ])
    func splitsAtTopLevelSemicolons(script: String, expected: [String]) {
        // act
        let statements = SQLScript(script).statements
        // assert
        #expect(statements == expected)
    }

    @Test func splitsTheRealFoundationMigration() throws {
        // setup
        let text = try String(contentsOfFile: TestDatabase.migrationsDirectory + "/0001_foundation.sql", encoding: .utf8)
        // act
        let statements = SQLScript(text).statements
        // assert: the plpgsql function, with semicolons inside its $$ body, stays one statement
        #expect(statements.contains { $0.contains("CREATE FUNCTION tollgate_isolate_tenant_table") && $0.contains("ROW LEVEL SECURITY', t);") && $0.hasSuffix("$$") })
        #expect(statements.allSatisfy { !$0.hasSuffix(";") })
    }
}
