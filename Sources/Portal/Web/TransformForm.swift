import Gateway

/// A form's problems keyed by field name (an `Error`, for `Result`).
struct FormFieldErrors: Error, Sendable, Equatable {
    var fields: [String: String]
}

/// The API page's form for a request or response transformation: one text area per operation,
/// one entry per line (`Name` to remove, `Old New` to rename, `Name: value` to set or add), and the
/// path rewrite's two fields. It builds the same config object the JSON API takes, so the kind's
/// parser decides, and maps each problem's pointer back to the text area it came from.
enum TransformForm {
    static let requestFields = [
        "header_remove", "header_rename", "header_set", "header_add", "query_remove", "query_rename", "query_set", "query_add", "path_match",
        "path_replace",
    ]
    static let responseFields = ["header_remove", "header_rename", "header_set", "header_add"]

    static func fields(_ side: TransformConfig.Side) -> [String] { side == .request ? requestFields : responseFields }

    /// The config object from the form, or the problems keyed by form field.
    static func config(_ side: TransformConfig.Side, from form: FormData) -> Result<TransformConfig, FormFieldErrors> {
        var errors: [String: String] = [:]
        var object: [String: JSONValue] = [:]
        for (prefix, key) in side == .request ? [("header", "headers"), ("query", "query")] : [("header", "headers")] {
            var ops: [String: JSONValue] = [:]
            let removed = TextLines.split(form[prefix + "_remove"] ?? "")
            if !removed.isEmpty { ops["remove"] = .array(removed.map(JSONValue.string)) }
            var renames: [String: JSONValue] = [:]
            for line in TextLines.split(form[prefix + "_rename"] ?? "") {
                let parts = line.split(whereSeparator: \.isWhitespace)
                guard parts.count == 2 else {
                    errors[prefix + "_rename"] = "Write one rename per line: the old name, a space, the new name."
                    continue
                }
                renames[String(parts[0])] = .string(String(parts[1]))
            }
            if !renames.isEmpty { ops["rename"] = .object(renames) }
            for operation in ["set", "add"] {
                var pairs: [String: JSONValue] = [:]
                for line in TextLines.split(form[prefix + "_" + operation] ?? "") {
                    guard let colon = line.firstIndex(of: ":") else {
                        errors[prefix + "_" + operation] = "Write one entry per line: Name: value."
                        continue
                    }
                    let name = line[..<colon].trimmingCharacters(in: .whitespaces)
                    if pairs[name] != nil { errors[prefix + "_" + operation] = "\(name) is listed twice." }
                    pairs[name] = .string(line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces))
                }
                if !pairs.isEmpty { ops[operation] = .object(pairs) }
            }
            if !ops.isEmpty { object[key] = .object(ops) }
        }
        if side == .request {
            let match = (form["path_match"] ?? "").trimmingCharacters(in: .whitespaces)
            let replace = (form["path_replace"] ?? "").trimmingCharacters(in: .whitespaces)
            if !match.isEmpty || !replace.isEmpty { object["path"] = .object(["match": .string(match), "replace": .string(replace)]) }
        }
        guard errors.isEmpty else { return .failure(FormFieldErrors(fields: errors)) }
        switch TransformConfig.parse(object, side: side) {
        case .success(let config): return .success(config)
        case .failure(let problems):
            for problem in problems.list {
                let field = formField(problem.pointer)
                if errors[field] == nil { errors[field] = problem.message }
            }
            return .failure(FormFieldErrors(fields: errors))
        }
    }

    /// `/headers/set/X-Caller` → `header_set`; `/path/match` → `path_match`; anything else → `header_set`
    /// (the first area, so a message about the whole policy still shows next to a field).
    static func formField(_ pointer: String) -> String {
        let parts = pointer.split(separator: "/").map(String.init)
        guard let first = parts.first else { return "header_set" }
        switch first {
        case "headers" where parts.count > 1: return "header_" + parts[1]
        case "query" where parts.count > 1: return "query_" + parts[1]
        case "path": return parts.count > 1 && parts[1] == "replace" ? "path_replace" : "path_match"
        default: return "header_set"
        }
    }

    /// The form's values for a stored config (nil: empty fields).
    static func values(_ config: TransformConfig?, side: TransformConfig.Side) -> [String: Any] {
        func lines(_ ops: TransformConfig.FieldOps?) -> [String: String] {
            guard let ops else { return ["remove": "", "rename": "", "set": "", "add": ""] }
            return [
                "remove": ops.remove.joined(separator: "\n"), "rename": ops.rename.map { "\($0.from) \($0.to)" }.joined(separator: "\n"),
                "set": ops.set.map { "\($0.name): \($0.value.text)" }.joined(separator: "\n"),
                "add": ops.add.map { "\($0.name): \($0.value.text)" }.joined(separator: "\n"),
            ]
        }
        var values: [String: Any] = ["errors": [String: String]()]
        for (prefix, ops) in [("header", config?.headers), ("query", config?.query)] {
            for (operation, text) in lines(ops) { values[prefix + "_" + operation] = text }
        }
        values["path_match"] = config?.path?.match ?? ""
        values["path_replace"] = config?.path?.replace ?? ""
        return values
    }
}
