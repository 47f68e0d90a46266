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
}
