import Foundation

/// A `multipart/form-data` body (RFC 7578) as name → value pairs; file parts contribute their
/// content as text when it is UTF-8 (OpenAPI documents) and as bytes in any case (protobuf
/// descriptor sets are binary). Pure.
enum MultipartForm {
    /// One part: its name, its raw content, and whether it came from a file input (`filename=`).
    struct Part: Sendable {
        var name: String
        var bytes: [UInt8]
        var isFile: Bool
    }

    /// The boundary parameter of a `multipart/form-data` content type.
    static func boundary(contentType: String) -> String? {
        guard contentType.lowercased().hasPrefix("multipart/form-data") else { return nil }
        for parameter in contentType.split(separator: ";").dropFirst() {
            let pair = parameter.split(separator: "=", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
            if pair.count == 2, pair[0].lowercased() == "boundary" {
                let value = pair[1].trimmingCharacters(in: CharacterSet(charactersIn: "\""))
                return (1...70).contains(value.count) ? value : nil
            }
        }
        return nil
    }

    /// Parses the parts as text fields; nil when the body is not well-formed multipart or a
    /// non-file part is not UTF-8. A binary file part is left out here (see `parts`).
    static func parse(_ body: [UInt8], boundary: String) -> [(String, String)]? {
        guard let parts = parts(body, boundary: boundary) else { return nil }
        return textFields(parts)
    }

    /// The parts as text fields; nil when a non-file part is not UTF-8.
    static func textFields(_ parts: [Part]) -> [(String, String)]? {
        var pairs: [(String, String)] = []
        for part in parts {
            if let text = String(validating: part.bytes, as: UTF8.self) {
                pairs.append((part.name, text))
            } else if !part.isFile {
                return nil
            }
        }
        return pairs
    }

    /// Parses the parts with their raw bytes; nil when the body is not well-formed multipart.
    static func parts(_ body: [UInt8], boundary: String) -> [Part]? {
        let delimiter = Array("--\(boundary)".utf8)
        var positions: [Int] = []
        var index = 0
        while let found = find(delimiter, in: body, from: index) {
            positions.append(found)
            index = found + delimiter.count
        }
        guard positions.count >= 2 else { return nil }
        var parts: [Part] = []
        for (start, end) in zip(positions, positions.dropFirst()) {
            var partStart = start + delimiter.count
            // each part starts with CRLF after the delimiter; the part ends with CRLF before the next one
            guard partStart + 2 <= end, body[partStart] == 13, body[partStart + 1] == 10 else { return nil }
            partStart += 2
            let partEnd = end >= 2 && body[end - 2] == 13 && body[end - 1] == 10 ? end - 2 : end
            guard let headerEnd = find(Array("\r\n\r\n".utf8), in: body, from: partStart), headerEnd <= partEnd else { return nil }
            let headers = String(decoding: body[partStart..<headerEnd], as: UTF8.self)
            guard let name = dispositionName(headers) else { return nil }
            let isFile = headers.lowercased().components(separatedBy: "\r\n").contains { $0.hasPrefix("content-disposition:") && $0.contains("filename=") }
            parts.append(Part(name: name, bytes: Array(body[(headerEnd + 4)..<partEnd]), isFile: isFile))
        }
        return parts
    }

    private static func dispositionName(_ headers: String) -> String? {
        for line in headers.components(separatedBy: "\r\n") where line.lowercased().hasPrefix("content-disposition:") {
            guard let range = line.range(of: "name=\"") else { return nil }
            let rest = line[range.upperBound...]
            return rest.firstIndex(of: "\"").map { String(rest[..<$0]) }
        }
        return nil
    }

    private static func find(_ needle: [UInt8], in haystack: [UInt8], from start: Int) -> Int? {
        guard !needle.isEmpty, haystack.count >= needle.count, start <= haystack.count - needle.count else { return nil }
        let first = needle[0]
        var i = start
        while i <= haystack.count - needle.count {
            if haystack[i] == first && haystack[i..<(i + needle.count)].elementsEqual(needle) { return i }
            i += 1
        }
        return nil
    }
}
