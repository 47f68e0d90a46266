import Foundation

/// A `google.api.http` path template (`/v1/{name=shelves/*}/books/{book_id}:publish`): literal
/// segments, `*` (one segment), `**` (the rest), variables naming a request field (one segment, or
/// the segments of their own pattern) and an optional `:verb`. Pure.
struct PathTemplate: Sendable, Equatable {
    enum Segment: Sendable, Equatable {
        case literal(String)
        case any
        case rest
    }

    /// A variable: the field path it fills and the range of segments it captures.
    struct Variable: Sendable, Equatable {
        var fieldPath: [String]
        var segments: Range<Int>
    }

    var segments: [Segment]
    var variables: [Variable]
    var verb: String?

    /// Parses a template; nil when it is not one (it must start with `/`).
    init?(_ template: String) {
        guard template.hasPrefix("/"), template.count <= 1024 else { return nil }
        var text = Substring(template.dropFirst())
        // a verb follows the last segment: the last ':' outside braces
        var verb: String?
        var depth = 0
        var lastColon: Substring.Index?
        for index in text.indices {
            switch text[index] {
            case "{": depth += 1
            case "}": depth -= 1
            case ":" where depth == 0: lastColon = index
            default: break
            }
        }
        if let lastColon, !text[lastColon...].contains("/") {
            verb = String(text[text.index(after: lastColon)...])
            text = text[..<lastColon]
        }
        var segments: [Segment] = []
        var variables: [Variable] = []
        var rest = text
        while !rest.isEmpty {
            if rest.hasPrefix("{") {
                guard let close = rest.firstIndex(of: "}") else { return nil }
                let inside = rest[rest.index(after: rest.startIndex)..<close]
                let parts = inside.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
                let fieldPath = parts[0].split(separator: ".", omittingEmptySubsequences: false).map(String.init)
                guard !fieldPath.contains(where: \.isEmpty) else { return nil }
                let start = segments.count
                let pattern = parts.count == 2 ? String(parts[1]) : "*"
                for piece in pattern.split(separator: "/", omittingEmptySubsequences: false) {
                    guard let segment = Self.segment(piece) else { return nil }
                    segments.append(segment)
                }
                variables.append(Variable(fieldPath: fieldPath, segments: start..<segments.count))
                rest = rest[rest.index(after: close)...]
            } else {
                let end = rest.firstIndex(of: "/") ?? rest.endIndex
                guard let segment = Self.segment(rest[..<end]) else { return nil }
                segments.append(segment)
                rest = rest[end...]
            }
            if rest.hasPrefix("/") {
                rest = rest.dropFirst()
                if rest.isEmpty { return nil }
            } else if !rest.isEmpty {
                return nil
            }
        }
        // `**` may only come last
        if let index = segments.firstIndex(of: .rest), index != segments.count - 1 { return nil }
        self.segments = segments
        self.variables = variables
        self.verb = verb
    }

    private static func segment(_ text: Substring) -> Segment? {
        switch text {
        case "*": return .any
        case "**": return .rest
        case "": return nil
        default: return text.contains(where: { "{}=*".contains($0) }) ? nil : .literal(String(text))
        }
    }

    /// The variables' values (percent-decoded; a multi-segment value keeps its `/`) when `path`
    /// matches; nil otherwise.
    func match(_ path: Substring) -> [(fieldPath: [String], value: String)]? {
        var path = path.hasPrefix("/") ? path.dropFirst() : path
        if let verb {
            guard path.hasSuffix(":" + verb) else { return nil }
            path = path.dropLast(verb.count + 1)
        }
        let parts = path.isEmpty ? [] : path.split(separator: "/", omittingEmptySubsequences: false)
        var captured: [Range<Int>] = []  // which request segments each template segment took
        var index = 0
        for segment in segments {
            switch segment {
            case .literal(let text):
                guard index < parts.count, parts[index] == text else { return nil }
                captured.append(index..<(index + 1))
                index += 1
            case .any:
                guard index < parts.count, !parts[index].isEmpty else { return nil }
                captured.append(index..<(index + 1))
                index += 1
            case .rest:
                captured.append(index..<parts.count)
                index = parts.count
            }
        }
        guard index == parts.count else { return nil }
        var values: [(fieldPath: [String], value: String)] = []
        for variable in variables {
            guard let first = captured[safe: variable.segments.lowerBound], let last = captured[safe: variable.segments.upperBound - 1] else { return nil }
            let raw = parts[first.lowerBound..<last.upperBound].joined(separator: "/")
            // a one-segment variable decodes %2F too; a multi-segment one keeps reserved characters encoded
            let single = variable.segments.count == 1 && segments[variable.segments.lowerBound] != .rest
            guard let value = single ? raw.removingPercentEncoding : Self.decodeKeepingSlashes(raw) else { return nil }
            values.append((variable.fieldPath, value))
        }
        return values
    }

    private static func decodeKeepingSlashes(_ text: String) -> String? {
        text.replacingOccurrences(of: "%2F", with: "%252F").replacingOccurrences(of: "%2f", with: "%252f").removingPercentEncoding
    }
}

extension Array {
    fileprivate subscript(safe index: Int) -> Element? { indices.contains(index) ? self[index] : nil }
}
