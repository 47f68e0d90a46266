import Testing

@testable import Portal

@Suite struct MarkdownTests {
    @Test(arguments: [
        ("Hello world", "<p>Hello world</p>"),
        ("# Title", "<h3>Title</h3>"),
        ("### Small", "<h5>Small</h5>"),
        ("#NoSpace", "<p>#NoSpace</p>"),
        ("- a\n- b", "<ul><li>a</li><li>b</li></ul>"),
        ("1. one\n2. two", "<ol><li>one</li><li>two</li></ol>"),
        ("use `GET /x`", "<p>use <code>GET /x</code></p>"),
        ("**bold** and *it*", "<p><strong>bold</strong> and <em>it</em></p>"),
        ("[docs](https://example.com/a)", "<p><a href=\"https://example.com/a\" rel=\"nofollow noopener\">docs</a></p>"),
        ("line one\nline two\n\nnext", "<p>line one line two</p>\n<p>next</p>"),
        ("```\n<b>x</b>\n```", "<pre><code>&lt;b&gt;x&lt;/b&gt;</code></pre>"),
    ])
    func renders(source: String, html: String) {
        #expect(Markdown.html(source) == html)
    }

    @Test(arguments: [
        "<script>alert(1)</script>",
        "[x](javascript:alert(1))",
        "<img src=x onerror=alert(1)>",
        "[x](https://ok.example/\" onmouseover=\"alert(1))",
        "`<script>`",
    ])
    func neverEmitsActiveContent(source: String) {
        let html = Markdown.html(source)
        #expect(!html.contains("<script"))
        #expect(!html.contains("<img"))
        #expect(!html.contains("javascript:"))
        #expect(!html.contains("\" onmouseover"))
    }
}
