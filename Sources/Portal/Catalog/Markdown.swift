/// Renders the Markdown subset API descriptions use into HTML that is safe to embed: everything is
/// escaped first, so raw HTML in the source shows as text; links are kept only for http(s) URLs.
///
/// Supported: paragraphs, `#`–`###` headings, `-`/`*` and `1.` lists, fenced code blocks, inline
/// code, `**bold**`, `*italic*` and `[text](https://…)`.
enum Markdown {
    static func html(_ source: String) -> String {
        var out: [String] = []
        var paragraph: [String] = []
        var list: (ordered: Bool, items: [String])?
        var code: [String]?

        func flushParagraph() {
            if !paragraph.isEmpty { out.append("<p>" + inline(paragraph.joined(separator: " ")) + "</p>") }
            paragraph.removeAll()
        }
        func flushList() {
            if let current = list {
                let tag = current.ordered ? "ol" : "ul"
                out.append("<\(tag)>" + current.items.map { "<li>" + inline($0) + "</li>" }.joined() + "</\(tag)>")
            }
            list = nil
        }

        for line in TextLines.all(source) {
            let trimmed = line.trimmingCharacters(in: .whitespaces)
            if var block = code {
                if trimmed.hasPrefix("```") {
                    out.append("<pre><code>" + escape(block.joined(separator: "\n")) + "</code></pre>")
                    code = nil
                } else {
                    block.append(line)
                    code = block
                }
                continue
            }
            if trimmed.hasPrefix("```") {
                flushParagraph(); flushList()
                code = []
            } else if trimmed.isEmpty {
                flushParagraph(); flushList()
            } else if let level = headingLevel(trimmed) {
                flushParagraph(); flushList()
                let text = trimmed.dropFirst(level).trimmingCharacters(in: .whitespaces)
                out.append("<h\(level + 2)>" + inline(text) + "</h\(level + 2)>")
            } else if let item = listItem(trimmed) {
                flushParagraph()
                if list == nil || list?.ordered != item.ordered { flushList(); list = (item.ordered, []) }
                list?.items.append(item.text)
            } else {
                flushList()
                paragraph.append(trimmed)
            }
        }
        if let block = code { out.append("<pre><code>" + escape(block.joined(separator: "\n")) + "</code></pre>") }
        flushParagraph(); flushList()
        return out.joined(separator: "\n")
    }

    /// The first paragraph (or heading or list item, if the text starts with one) as plain text,
    /// for catalog cards: formatting removed, link labels kept, cut at a word near `limit` characters.
    static func summary(_ source: String, limit: Int = 200) -> String {
        var block: [String] = []
        var inCode = false
        for line in TextLines.all(source) {
            let trimmed = line.trimmingCharacters(in: .whitespaces)
            if trimmed.hasPrefix("```") { inCode.toggle(); if !block.isEmpty { break }; continue }
            if inCode { continue }
            if trimmed.isEmpty { if block.isEmpty { continue } else { break } }
            if let level = headingLevel(trimmed) {
                if block.isEmpty { block.append(String(trimmed.dropFirst(level))); break } else { break }
            }
            if let item = listItem(trimmed) { block.append(item.text); continue }
            block.append(trimmed)
        }
        var text = plain(inline(block.joined(separator: " ")))
        if text.count > limit {
            let cut = text.prefix(limit)
            text = String(cut.lastIndex(of: " ").map { cut[..<$0] } ?? cut) + "…"
        }
        return text
    }

    /// Rendered inline HTML back to text: tags dropped, the escapes `escape` adds undone.
    private static func plain(_ html: String) -> String {
        var text = ""
        var inTag = false
        for ch in html {
            if ch == "<" { inTag = true } else if ch == ">" && inTag { inTag = false } else if !inTag { text.append(ch) }
        }
        for (entity, character) in [("&lt;", "<"), ("&gt;", ">"), ("&quot;", "\""), ("&#39;", "'"), ("&amp;", "&")] {
            text = text.replacingOccurrences(of: entity, with: character)
        }
        return text.trimmingCharacters(in: .whitespaces)
    }

    static func escape(_ text: String) -> String {
        var result = ""
        result.reserveCapacity(text.count)
        for ch in text {
            switch ch {
            case "&": result += "&amp;"
            case "<": result += "&lt;"
            case ">": result += "&gt;"
            case "\"": result += "&quot;"
            case "'": result += "&#39;"
            default: result.append(ch)
            }
        }
        return result
    }

    private static func headingLevel(_ line: String) -> Int? {
        let hashes = line.prefix { $0 == "#" }.count
        guard (1...3).contains(hashes), line.dropFirst(hashes).first == " " else { return nil }
        return hashes
    }

    private static func listItem(_ line: String) -> (ordered: Bool, text: String)? {
        if line.hasPrefix("- ") || line.hasPrefix("* ") { return (false, String(line.dropFirst(2))) }
        let digits = line.prefix { $0.isASCII && $0.isNumber }
        if !digits.isEmpty, digits.count <= 3, line.dropFirst(digits.count).hasPrefix(". ") {
            return (true, String(line.dropFirst(digits.count + 2)))
        }
        return nil
    }

    /// Inline spans on escaped text: code first (its content is not formatted), then links, bold, italic.
    static func inline(_ text: String) -> String {
        var result = ""
        var rest = Substring(text)
        while let tick = rest.firstIndex(of: "`") {
            result += spans(escape(String(rest[..<tick])))
            let after = rest[rest.index(after: tick)...]
            guard let close = after.firstIndex(of: "`") else {
                rest = rest[tick...]
                break
            }
            result += "<code>" + escape(String(after[..<close])) + "</code>"
            rest = after[after.index(after: close)...]
        }
        return result + spans(escape(String(rest)))
    }

    private static func spans(_ escaped: String) -> String {
        var text = links(escaped)
        text = wrap(text, marker: "**", tag: "strong")
        text = wrap(text, marker: "*", tag: "em")
        return text
    }

    private static func links(_ escaped: String) -> String {
        var result = ""
        var rest = Substring(escaped)
        while let open = rest.firstIndex(of: "[") {
            let afterOpen = rest[rest.index(after: open)...]
            guard let close = afterOpen.firstIndex(of: "]"), afterOpen[afterOpen.index(after: close)...].hasPrefix("("),
                let end = afterOpen[close...].firstIndex(of: ")")
            else { break }
            let label = afterOpen[..<close]
            let url = afterOpen[afterOpen.index(close, offsetBy: 2)..<end]
            result += rest[..<open]
            if (url.hasPrefix("https://") || url.hasPrefix("http://")) && !url.contains(" ") {
                result += "<a href=\"\(url)\" rel=\"nofollow noopener\">\(label)</a>"
            } else {
                result += label
            }
            rest = afterOpen[afterOpen.index(after: end)...]
        }
        return result + rest
    }

    private static func wrap(_ text: String, marker: String, tag: String) -> String {
        let parts = text.components(separatedBy: marker)
        guard parts.count >= 3 else { return text }
        var result = parts[0]
        var index = 1
        while index < parts.count {
            if index + 1 < parts.count, !parts[index].isEmpty {
                result += "<\(tag)>\(parts[index])</\(tag)>" + parts[index + 1]
                index += 2
            } else {
                result += marker + parts[index]
                index += 1
            }
        }
        return result
    }
}
