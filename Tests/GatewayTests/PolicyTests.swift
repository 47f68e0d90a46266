import Billing
import Testing
import Foundation
import NIOHTTP1

@testable import Gateway

/// Address ranges and CORS rules as the gateway applies them.
@Suite struct IPRangeTests {
    @Test(arguments: [
        ("203.0.113.0/24", "203.0.113.7", true), ("203.0.113.0/24", "203.0.114.1", false), ("10.0.0.0/8", "10.255.255.255", true),
        ("0.0.0.0/0", "198.51.100.1", true), ("192.0.2.1", "192.0.2.1", true), ("192.0.2.1", "192.0.2.2", false),
        ("2001:db8::/32", "2001:db8:1::1", true), ("2001:db8::/32", "2001:db9::1", false), ("::/0", "::1", true),
        ("10.0.0.0/8", "::ffff:10.1.1.1", true), ("0.0.0.0/0", "2001:db8::1", false), ("203.0.113.0/25", "203.0.113.200", false),
    ])
    func rangesContainTheirAddresses(range: String, address: String, inside: Bool) throws {
        let parsed = try #require(IPRange(range))
        #expect(parsed.contains(address) == inside)
    }

    @Test(arguments: ["", "10.0.0.0/33", "2001:db8::/129", "10.0.0/8", "banana", "10.0.0.0/-1", "10.0.0.0/8/8", "1.2.3.4/ 8"])
    func malformedRangesAreRefused(text: String) {
        #expect(IPRange(text) == nil)
    }

    @Test func denyWinsAndAnEmptyAllowListAllowsEveryoneElse() throws {
        let address = { (text: String) in IPRange.bytes(of: text) ?? [] }
        let open = IPAccessRules(deny: [try #require(IPRange("198.51.100.0/24"))])
        #expect(open.permits(address("203.0.113.9")))
        #expect(!open.permits(address("198.51.100.9")))
        let closed = IPAccessRules(allow: [try #require(IPRange("10.0.0.0/8"))], deny: [try #require(IPRange("10.0.0.13"))])
        #expect(closed.permits(address("10.1.2.3")))
        #expect(!closed.permits(address("10.0.0.13")))
        #expect(!closed.permits(address("203.0.113.9")))
    }
}

@Suite struct CORSPolicyTests {
    @Test func originsMustBeOriginsAndCredentialsNeedExplicitOnes() {
        #expect(CORSPolicy(allowedOrigins: ["https://app.example.com", "http://localhost:3000"]).problems().isEmpty)
        #expect(CORSPolicy(allowedOrigins: ["*"]).problems().isEmpty)
        #expect(CORSPolicy(allowedOrigins: []).problems()["cors.allowed_origins"] != nil)
        #expect(CORSPolicy(allowedOrigins: ["https://app.example.com/path"]).problems()["cors.allowed_origins"] != nil)
        #expect(CORSPolicy(allowedOrigins: ["javascript:alert(1)"]).problems()["cors.allowed_origins"] != nil)
        #expect(CORSPolicy(allowedOrigins: ["*"], allowCredentials: true).problems()["cors.allow_credentials"] != nil)
        #expect(CORSPolicy(allowedOrigins: ["*"], allowedMethods: ["GET\r\nX: y"]).problems()["cors.allowed_methods"] != nil)
        #expect(CORSPolicy(allowedOrigins: ["*"], maxAgeSeconds: 90_000).problems()["cors.max_age_seconds"] != nil)
    }

    @Test func theOriginEchoedBackDependsOnTheList() {
        let listed = CORSPolicy(allowedOrigins: ["https://a.example"], allowCredentials: true)
        #expect(listed.allowOrigin("https://a.example") == "https://a.example")
        #expect(listed.allowOrigin("https://evil.example") == nil)
        #expect(CORSPolicy(allowedOrigins: ["*"]).allowOrigin("https://any.example") == "*")
    }
}

/// Which headers stop at the gateway, compared without allocating.
@Suite struct HopByHopTests {
    @Test func standardAndListedNamesAreHopByHopWhateverTheirCase() {
        let hop = HopByHop(HTTPHeaders([("Connection", "Keep-Alive, X-Secret-Hop ,\tTransfer-Encoding"), ("X-Secret-Hop", "1")]))
        for name in ["connection", "Keep-Alive", "TE", "trailer", "Upgrade", "Proxy-Authorization", "proxy-authenticate", "Proxy-Connection", "x-secret-HOP"] {
            #expect(hop.contains(name), "\(name)")
        }
        // the body's framing is re-made by each side's codec, so it is never dropped
        for name in ["Transfer-Encoding", "Content-Length", "X-Secret", "X-Secret-Hops", "Authorization", "t", ""] { #expect(!hop.contains(name), "\(name)") }
        #expect(!HopByHop(HTTPHeaders()).contains("x-secret-hop"))
    }

    @Test func caseInsensitiveComparisonFoldsOnlyASCIILetters() {
        #expect("X-Tollgate-App-Id".hasASCIIPrefix(caseInsensitively: "x-tollgate-"))
        #expect(!"X-Tollgate".hasASCIIPrefix(caseInsensitively: "x-tollgate-"))
        #expect("HOST".isASCII(caseInsensitively: "host"))
        #expect(!"hosts".isASCII(caseInsensitively: "host"))
        #expect(!"X_API_KEY".isASCII(caseInsensitively: "x-api-key"))
        // '@' (0x40) and '`' (0x60) differ only in the bit that folds letters
        #expect(!"@".isASCII(caseInsensitively: "`"))
    }
}

@Suite struct RequestIDTextTests {
    @Test func lowercasedTextIsTheCanonicalFormInLowerCase() {
        for _ in 0..<200 {
            let id = UUID()
            #expect(id.lowercasedText == id.uuidString.lowercased())
        }
        #expect(UUID(uuidString: "FFFFFFFF-0000-A9A9-0F0F-123456789ABC")!.lowercasedText == "ffffffff-0000-a9a9-0f0f-123456789abc")
    }
}

/// Ids from the per-loop random buffer: distinct across refills, and valid UUIDv7s.
@Suite struct BufferedRandomTests {
    @Test func wordsStayDistinctAcrossRefillsAndMakeVersion7IDs() {
        var random = BufferedRandom()
        let words = (0..<2_000).map { _ in random.next() }
        #expect(Set(words).count == words.count)
        let id = UUIDv7.make(using: &random)
        #expect(id.uuid.6 >> 4 == 7)
        #expect(id.uuid.8 >> 6 == 0b10)
    }
}
