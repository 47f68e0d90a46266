import NIOCore
import NIOHPACK
import NIOHTTP1
import Testing

@testable import Gateway

@Suite struct TranscodedMetadataTests {
    private func metadata(_ pairs: [(String, String)]) throws(TranscodedMetadata.Problem) -> [String] {
        try TranscodedMetadata.request(HTTPHeaders(pairs)).map { "\($0.0)=\($0.1)" }
    }

    @Test func prefixedAndPermanentHeadersBecomeMetadataAndNothingElse() throws {
        // setup
        let headers = [
            ("Grpc-Metadata-Tenant-Region", "eu"), ("grpc-metadata-trace-bin", "AAEC/w=="), ("Accept-Language", "fr"), ("User-Agent", "curl/8"),
            ("Content-Type", "application/json"), ("X-Custom", "not sent"), ("Host", "gw.example"), ("Connection", "keep-alive"),
            ("Authorization", "Bearer secret"), ("X-API-Key", "secret"), ("Cookie", "s=secret"), ("X-Forwarded-For", "10.0.0.1"),
            ("Expect", "100-continue"), ("Grpc-Timeout", "1S"), ("TE", "trailers"),
        ]
        // act
        let made = try metadata(headers)
        // assert
        #expect(
            made == [
                "tenant-region=eu", "trace-bin=AAEC/w==", "grpcgateway-accept-language=fr", "grpcgateway-user-agent=curl/8",
                "grpcgateway-content-type=application/json",
            ])
        #expect(!made.joined().contains("secret"))
    }

    @Test(arguments: [
        "Authorization", "X-Api-Key", "Cookie", "Proxy-Authorization", "X-Request-Id", "X-Forwarded-For", "X-Tollgate-Tenant", "Grpc-Timeout",
        "Grpc-Status", "TE", "Connection", "Content-Type", "Host", "Forwarded",
    ])
    func credentialsGatewayHeadersAndReservedKeysAreRefusedAsMetadata(key: String) {
        #expect(throws: TranscodedMetadata.Problem.self) { try metadata([("Grpc-Metadata-" + key, "x")]) }
    }

    @Test(arguments: [
        ("Grpc-Metadata-", "x"), ("Grpc-Metadata-a b", "x"), ("Grpc-Metadata-caf\u{e9}", "x"), ("Grpc-Metadata-ok", "line\u{1}"),
        ("Grpc-Metadata-ok", "h\u{e9}"), ("Grpc-Metadata-trace-bin", "not base64!"), ("Grpc-Metadata-trace-bin", ""), ("Accept", "caf\u{e9}"),
    ])
    func keysAndValuesGRPCCannotCarryAreRefused(name: String, value: String) {
        #expect(throws: TranscodedMetadata.Problem.self) { try metadata([(name, value)]) }
    }

    @Test func responseMetadataComesBackPrefixedLessGRPCFieldsAndTheGatewaysHeaders() {
        // setup
        let block = HPACKHeaders([
            (":status", "200"), ("content-type", "application/grpc"), ("grpc-status", "0"), ("grpc-message", "ok"),
            ("grpc-status-details-bin", "AAA"), ("x-kitchen", "hot"), ("trace-bin", "AAE"), ("x-request-id", "theirs"), ("ratelimit", "theirs"),
            ("x-evil", "a\r\nSet-Cookie: b"),
        ])
        // act
        let headers = TranscodedMetadata.response(block, gatewayHeaders: ["ratelimit"])
        // assert
        #expect(headers.map { "\($0.0)=\($0.1)" } == ["Grpc-Metadata-x-kitchen=hot", "Grpc-Metadata-trace-bin=AAE"])
    }

    @Test func trailerMetadataIsNamedGrpcTrailerWithTheSameFilters() {
        // setup
        let trailers = HPACKHeaders([
            ("grpc-status", "0"), ("grpc-message", ""), ("trace-bin", "AAE"), ("x-done", "yes"), ("ratelimit", "theirs"), ("x-evil", "a\r\nb"),
            ("content-length", "9"), ("Upper", "not a key"),
        ])
        // act
        let fields = TranscodedMetadata.response(trailers, gatewayHeaders: ["ratelimit"], prefix: TranscodedMetadata.trailerPrefix)
        // assert
        #expect(fields.map { "\($0.0)=\($0.1)" } == ["Grpc-Trailer-trace-bin=AAE", "Grpc-Trailer-x-done=yes"])
    }

    @Test func requestTransformationsActOnTheMetadataAndKeepItCarriable() throws {
        // setup
        let transform = RequestTransform([
            try TransformTests.config(#"{"headers": {"set": {"X-Env": "prod", "X-Caller": "$app_id", "X-Bad": "a\tb"}, "remove": ["Tenant-Region"]}}"#)
        ])
        // act
        let made = TranscodedMetadata.transformed([("tenant-region", "eu"), ("grpcgateway-accept", "*/*")], by: transform, context: TransformTests.context)
        // assert: set names become keys (lowercased), removals match keys, a value gRPC cannot carry is dropped
        #expect(Set(made.map { "\($0.0)=\($0.1)" }) == ["grpcgateway-accept=*/*", "x-env=prod", "x-caller=00000000-0000-0000-0000-0000000000a1"])
    }

    @Test func aUnaryCallIsBoundedByTheResponseTimeoutAndTheClientsDeadline() {
        let thirty = TimeAmount.seconds(30)
        #expect(GRPCTranscodedCall.callDeadline(client: nil, elapsed: 0, streaming: false, responseTimeout: thirty) == 30_000_000_000)
        #expect(GRPCTranscodedCall.callDeadline(client: 500_000_000, elapsed: 100_000_000, streaming: false, responseTimeout: thirty) == 400_000_000)
        #expect(GRPCTranscodedCall.callDeadline(client: 3_600_000_000_000, elapsed: 0, streaming: false, responseTimeout: thirty) == 30_000_000_000)
        #expect(GRPCTranscodedCall.callDeadline(client: 5, elapsed: 1_000_000, streaming: false, responseTimeout: thirty) == 1)  // spent already
        #expect(GRPCTranscodedCall.callDeadline(client: UInt64.max, elapsed: 0, streaming: false, responseTimeout: thirty) == 30_000_000_000)
    }

    @Test func aServerStreamKeepsTheClientsDeadlineUpToADay() {
        let thirty = TimeAmount.seconds(30)
        #expect(GRPCTranscodedCall.callDeadline(client: nil, elapsed: 0, streaming: true, responseTimeout: thirty) == nil)
        #expect(GRPCTranscodedCall.callDeadline(client: 3_600_000_000_000, elapsed: 0, streaming: true, responseTimeout: thirty) == 3_600_000_000_000)
        #expect(GRPCTranscodedCall.callDeadline(client: UInt64.max, elapsed: 0, streaming: true, responseTimeout: thirty) == 86_400_000_000_000)
    }
}

@Suite struct TranscodedTrailersTests {
    private func head(_ version: HTTPVersion, _ te: [String]) -> HTTPRequestHead {
        HTTPRequestHead(version: version, method: .GET, uri: "/", headers: HTTPHeaders(te.map { ("TE", $0) }))
    }

    @Test(arguments: [
        (HTTPVersion.http1_1, ["trailers"], true), (.http1_1, ["TRAILERS"], true), (.http1_1, ["deflate;q=0.5, trailers"], true),
        (.http1_1, ["gzip", " trailers "], true), (.http2, ["trailers"], true), (.http1_1, [], false), (.http2, [], false),
        (.http1_1, ["gzip"], false), (.http1_1, ["trailersx"], false), (.http1_1, ["trailers-only"], false),
        // HTTP/1.0 has no chunked framing to carry a trailer section
        (.http1_0, ["trailers"], false),
    ])
    func aClientAcceptsTrailersWhenItsTEListsThem(version: HTTPVersion, te: [String], accepted: Bool) {
        #expect(TranscodedTrailers.accepted(by: head(version, te)) == accepted)
    }

    @Test func theAnnouncementNamesEachFieldOnce() {
        #expect(TranscodedTrailers.announcement([]) == nil)
        #expect(
            TranscodedTrailers.announcement([("Grpc-Trailer-a", "1"), ("Grpc-Trailer-b", "2"), ("Grpc-Trailer-a", "3")])
                == "Grpc-Trailer-a, Grpc-Trailer-b")
    }

    @Test func theLastChunkCarriesTheTrailerSection() {
        #expect(TranscodedTrailers.lastChunk([]) == "0\r\n\r\n")
        #expect(
            TranscodedTrailers.lastChunk([("Grpc-Trailer-a", "1"), ("Grpc-Trailer-a", "2"), ("Grpc-Trailer-trace-bin", "AAE=")])
                == "0\r\nGrpc-Trailer-a: 1\r\nGrpc-Trailer-a: 2\r\nGrpc-Trailer-trace-bin: AAE=\r\n\r\n")
    }

    @Test func aResponseTransformationsRemovalsDropTrailerFieldsAndNothingElseActsOnThem() throws {
        // setup
        let transform = ResponseTransform([
            try TransformTests.config(
                #"{"headers": {"remove": ["grpc-trailer-secret"], "set": {"X-Served": "tollgate"}, "rename": {"Grpc-Trailer-a": "X-A"}}}"#, .response
            ).headers
        ])
        let fields = [("Grpc-Trailer-secret", "s"), ("Grpc-Trailer-a", "1")]
        // act
        let kept = TranscodedTrailers.removing(fields, by: transform)
        // assert
        #expect(kept.map { "\($0.0)=\($0.1)" } == ["Grpc-Trailer-a=1"])
        #expect(TranscodedTrailers.removing(fields, by: nil).count == 2)
    }
}
