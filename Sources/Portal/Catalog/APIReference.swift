import Foundation

/// Turns a validated OpenAPI document into the values the reference page renders: operations
/// grouped by tag (in the document's tag order, untagged ones last), their parameters, request and
/// response schemas, and examples. Schemas are shown as indented type outlines; `$ref`s become
/// links to the schema section instead of being inlined, so recursive schemas stay finite.
enum APIReference {
    static func values(_ root: DocumentValue) -> [String: Any] {
        var groups: [(name: String, description: String, operations: [[String: Any]])] = []
        for tag in root["tags"]?.array ?? [] {
            if let name = tag["name"]?.string { groups.append((name, tag["description"]?.string ?? "", [])) }
        }
        for (path, item) in root["paths"]?.object ?? [] {
            for (method, operation) in item.object ?? [] where OpenAPIRules.methods.contains(method) {
                let tag = operation["tags"]?.array?.first?.string ?? "Other"
                if !groups.contains(where: { $0.name == tag }) { groups.append((tag, "", [])) }
                let index = groups.firstIndex { $0.name == tag } ?? 0
                groups[index].operations.append(self.operation(method: method, path: path, operation, pathItem: item, root: root))
            }
        }
        let schemas = (root["components"]?["schemas"]?.object ?? []).map { name, schema in
            ["name": name, "anchor": anchor(name), "outline": outline(schema, root: root)] as [String: Any]
        }
        return [
            "title": root["info"]?["title"]?.string ?? "", "version": root["info"]?["version"]?.string ?? "",
            "description_html": Markdown.html(root["info"]?["description"]?.string ?? ""),
            "servers": (root["servers"]?.array ?? []).compactMap { $0["url"]?.string },
            "groups": groups.filter { !$0.operations.isEmpty }.map {
                ["name": $0.name, "description": $0.description, "operations": $0.operations] as [String: Any]
            },
            "schemas": schemas, "has_schemas": !schemas.isEmpty,
        ]
    }

    private static func operation(method: String, path: String, _ operation: DocumentValue, pathItem: DocumentValue, root: DocumentValue) -> [String: Any] {
        let parameters = ((pathItem["parameters"]?.array ?? []) + (operation["parameters"]?.array ?? [])).map { raw -> [String: Any] in
            let parameter = raw["$ref"]?.string.flatMap { root.resolve(pointer: $0) } ?? raw
            return [
                "name": parameter["name"]?.string ?? "", "in": parameter["in"]?.string ?? "", "required": parameter["required"]?.bool ?? false,
                "type": parameter["schema"].map { typeName($0) } ?? "", "description": parameter["description"]?.string ?? "",
            ]
        }
        var values: [String: Any] = [
            "method": method.uppercased(), "method_class": method, "path": path, "summary": operation["summary"]?.string ?? "",
            "description_html": Markdown.html(operation["description"]?.string ?? ""), "deprecated": operation["deprecated"]?.bool ?? false,
            "id": operation["operationId"]?.string ?? "\(method)-\(path)", "parameters": parameters, "has_parameters": !parameters.isEmpty,
        ]
        var body = operation["requestBody"]
        if let ref = body?["$ref"]?.string { body = root.resolve(pointer: ref) }
        if let body {
            values["request"] = [
                "required": body["required"]?.bool ?? false, "description": body["description"]?.string ?? "",
                "media": media(body["content"], root: root),
            ] as [String: Any]
        }
        values["responses"] = (operation["responses"]?.object ?? []).map { code, raw -> [String: Any] in
            let response = raw["$ref"]?.string.flatMap { root.resolve(pointer: $0) } ?? raw
            return ["code": code, "description": response["description"]?.string ?? "", "media": media(response["content"], root: root)]
        }
        return values
    }

    private static func media(_ content: DocumentValue?, root: DocumentValue) -> [[String: Any]] {
        (content?.object ?? []).map { type, media in
            var example = media["example"]
            if example == nil, let first = media["examples"]?.object?.first?.1 {
                example = first["$ref"]?.string.flatMap { root.resolve(pointer: $0) }?["value"] ?? first["value"]
            }
            return [
                "type": type, "outline": media["schema"].map { outline($0, root: root) } ?? "",
                "example": example.map { $0.json() } ?? "", "has_example": example != nil,
            ]
        }
    }

    static func anchor(_ name: String) -> String {
        "schema-" + String(name.unicodeScalars.map { CharacterSet.alphanumerics.contains($0) ? Character($0) : "-" })
    }

    /// A one-line type name: `string (uuid)`, `array of Pet`, `Pet`, `object`.
    static func typeName(_ schema: DocumentValue) -> String {
        if let ref = schema["$ref"]?.string { return String(ref.split(separator: "/").last ?? "") }
        if let type = schema["type"]?.string {
            if type == "array" { return "array of " + (schema["items"].map(typeName) ?? "any") }
            if let format = schema["format"]?.string { return "\(type) (\(format))" }
            return type
        }
        if let types = schema["type"]?.array?.compactMap(\.string) { return types.joined(separator: " | ") }
        for combinator in ["oneOf", "anyOf", "allOf"] {
            if let options = schema[combinator]?.array { return "\(combinator) " + options.map(typeName).joined(separator: ", ") }
        }
        return schema["properties"] != nil ? "object" : "any"
    }

    /// An indented outline of an object's properties (two levels deep), with required marks.
    static func outline(_ schema: DocumentValue, root: DocumentValue, depth: Int = 0) -> String {
        let indent = String(repeating: "  ", count: depth)
        guard let properties = schema["properties"]?.object, depth < 3 else {
            if schema["type"]?.string == "array", let items = schema["items"], items["properties"] != nil, depth < 3 {
                return indent + "array of\n" + outline(items, root: root, depth: depth + 1)
            }
            var line = indent + typeName(schema)
            if let values = schema["enum"]?.array { line += " — one of " + values.map { $0.json() }.joined(separator: ", ") }
            return line
        }
        let required = Set(schema["required"]?.array?.compactMap(\.string) ?? [])
        var lines = [indent + "object"]
        for (name, property) in properties {
            var line = "\(indent)  \(name): \(typeName(property))"
            if required.contains(name) { line += "  (required)" }
            if let values = property["enum"]?.array { line += " — one of " + values.map { $0.json() }.joined(separator: ", ") }
            if let description = property["description"]?.string { line += "  — " + description.prefix(160) }
            lines.append(line)
            if property["properties"] != nil { lines.append(outline(property, root: root, depth: depth + 2)) }
        }
        return lines.joined(separator: "\n")
    }
}
