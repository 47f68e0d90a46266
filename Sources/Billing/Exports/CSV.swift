/// RFC 4180 CSV: comma separated, CRLF line ends, fields quoted when they contain a comma, quote,
/// CR or LF (quotes doubled). Pure. Scans UTF-8 bytes, not Characters: the separators are ASCII,
/// and grapheme iteration made the 1,000,000-row export spend most of its time here.
public enum CSV {
    public static func line(_ fields: [String]) -> String {
        var out = ""
        append(fields, to: &out)
        return out
    }

    /// Appends one line to `out` (the exports reuse one buffer).
    public static func append(_ fields: [String], to out: inout String) {
        for (index, value) in fields.enumerated() {
            if index > 0 { out.append(",") }
            if needsQuotes(value) {
                out.append("\"")
                out.append(value.replacingOccurrences(of: "\"", with: "\"\""))
                out.append("\"")
            } else {
                out.append(value)
            }
        }
        out.append("\r\n")
    }

    public static func field(_ value: String) -> String {
        guard needsQuotes(value) else { return value }
        return "\"" + value.replacingOccurrences(of: "\"", with: "\"\"") + "\""
    }

    static func needsQuotes(_ value: String) -> Bool {
        value.utf8.contains { $0 == 0x2C || $0 == 0x22 || $0 == 0x0D || $0 == 0x0A }
    }
}
