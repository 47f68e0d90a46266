import Foundation

/// Server-rendered bar charts (no JavaScript): one bar per bucket, an overlay for a part of it
/// (errors of calls, say), the maximum on the axis and the first and last bucket labelled.
/// Pure; labels are escaped, so the result can go into a page unescaped.
enum SVGChart {
    struct Bar: Equatable {
        var label: String
        var value: Int64
        var part: Int64
    }

    static func bars(_ bars: [Bar], title: String, width: Int = 720, height: Int = 180) -> String {
        let left = 48, bottom = 22, top = 10
        let plotWidth = width - left - 8, plotHeight = height - bottom - top
        let maximum = max(1, bars.map(\.value).max() ?? 1)
        let step = bars.isEmpty ? 0 : Double(plotWidth) / Double(bars.count)
        let barWidth = max(1, step * 0.8)
        var svg = """
            <svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 \(width) \(height)" role="img" aria-label="\(escape(title))">
            <title>\(escape(title))</title>
            <line x1="\(left)" y1="\(top + plotHeight)" x2="\(width - 8)" y2="\(top + plotHeight)" stroke="#999"/>
            <text x="\(left - 4)" y="\(top + 8)" text-anchor="end" font-size="10">\(maximum)</text>
            <text x="\(left - 4)" y="\(top + plotHeight)" text-anchor="end" font-size="10">0</text>

            """
        for (index, bar) in bars.enumerated() {
            let x = Double(left) + Double(index) * step
            let h = Double(plotHeight) * Double(bar.value) / Double(maximum)
            let p = Double(plotHeight) * Double(min(bar.part, bar.value)) / Double(maximum)
            let base = Double(top + plotHeight)
            svg += "<rect x=\"\(format(x))\" y=\"\(format(base - h))\" width=\"\(format(barWidth))\" height=\"\(format(h))\" fill=\"#4c7bd9\">"
            svg += "<title>\(escape(bar.label)): \(bar.value)</title></rect>"
            if p > 0 { svg += "<rect x=\"\(format(x))\" y=\"\(format(base - p))\" width=\"\(format(barWidth))\" height=\"\(format(p))\" fill=\"#d9534f\"/>" }
            svg += "\n"
        }
        if let first = bars.first, let last = bars.last {
            svg += "<text x=\"\(left)\" y=\"\(height - 6)\" font-size=\"10\">\(escape(first.label))</text>"
            svg += "<text x=\"\(width - 8)\" y=\"\(height - 6)\" text-anchor=\"end\" font-size=\"10\">\(escape(last.label))</text>\n"
        }
        return svg + "</svg>"
    }

    static func format(_ value: Double) -> String { String(format: "%.1f", value) }

    static func escape(_ text: String) -> String {
        text.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;").replacingOccurrences(of: ">", with: "&gt;")
            .replacingOccurrences(of: "\"", with: "&quot;")
    }
}
