/// Splits a SQL script into single statements.
///
/// PostgresNIO uses the extended query protocol, which accepts one statement per query, so a
/// migration file has to be cut at its top-level semicolons. Semicolons inside quoted strings,
/// quoted identifiers, dollar-quoted bodies (`$$ ... $$`, `$tag$ ... $tag$`) and comments are
/// not statement ends.
struct SQLScript: Sendable, Equatable {
    let statements: [String]

    init(_ text: String) {
        var statements: [String] = []
        var current: [Character] = []
        let chars = Array(text)
        var i = 0

        func flush() {
            let statement = String(current).trimmingCharacters(in: .whitespacesAndNewlines)
            if !statement.isEmpty, !SQLScript.isOnlyComments(statement) { statements.append(statement) }
            current.removeAll(keepingCapacity: true)
        }

        while i < chars.count {
            let c = chars[i]
            let next: Character? = i + 1 < chars.count ? chars[i + 1] : nil
            switch c {
            case "-" where next == "-":
                while i < chars.count, chars[i] != "\n" { current.append(chars[i]); i += 1 }
                continue
            case "/" where next == "*":
                var depth = 0
                repeat {
                    if chars[i] == "/", i + 1 < chars.count, chars[i + 1] == "*" {
                        depth += 1; current.append(contentsOf: "/*"); i += 2
                    } else if chars[i] == "*", i + 1 < chars.count, chars[i + 1] == "/" {
                        depth -= 1; current.append(contentsOf: "*/"); i += 2
                    } else {
                        current.append(chars[i]); i += 1
                    }
                } while depth > 0 && i < chars.count
                continue
            case "'", "\"":
                current.append(c); i += 1
                while i < chars.count {
                    current.append(chars[i])
                    if chars[i] == c {
                        if i + 1 < chars.count, chars[i + 1] == c { current.append(c); i += 2; continue }
                        i += 1
                        break
                    }
                    i += 1
                }
                continue
            case "$":
                if let tag = SQLScript.dollarTag(chars, at: i) {
                    current.append(contentsOf: tag); i += tag.count
                    while i < chars.count {
                        if chars[i] == "$", SQLScript.matches(chars, at: i, tag) {
                            current.append(contentsOf: tag); i += tag.count
                            break
                        }
                        current.append(chars[i]); i += 1
                    }
                    continue
                }
            case ";":
                flush(); i += 1
                continue
            default:
                break
            }
            current.append(c); i += 1
        }
        flush()
        self.statements = statements
    }

    /// `$tag$` where tag is empty or an identifier; returns the whole delimiter.
    private static func dollarTag(_ chars: [Character], at start: Int) -> [Character]? {
        var j = start + 1
        while j < chars.count, chars[j] == "_" || chars[j].isLetter || (j > start + 1 && chars[j].isNumber) {
            j += 1
        }
        guard j < chars.count, chars[j] == "$" else { return nil }
        return Array(chars[start...j])
    }

    private static func matches(_ chars: [Character], at start: Int, _ tag: [Character]) -> Bool {
        guard start + tag.count <= chars.count else { return false }
        return Array(chars[start..<start + tag.count]) == tag
    }

    private static func isOnlyComments(_ statement: String) -> Bool {
        statement.split(separator: "\n").allSatisfy {
            let line = $0.trimmingCharacters(in: .whitespaces)
            return line.isEmpty || line.hasPrefix("--")
        }
    }
}

import Foundation
