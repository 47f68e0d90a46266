import NIOHTTP1
import Testing

@testable import Gateway

@Suite struct GRPCStatusTests {
    @Test(arguments: [
        (HTTPResponseStatus.unauthorized, 16), (.forbidden, 7), (.tooManyRequests, 8), (.payloadTooLarge, 8), (.notFound, 12), (.gone, 12),
        (.serviceUnavailable, 14), (.badGateway, 14), (.gatewayTimeout, 4), (.methodNotAllowed, 13),
    ])
    func refusalsBecomeTheStatusesStockClientsExpect(status: HTTPResponseStatus, code: Int) {
        #expect(GRPCStatus.forRefusal(status) == code)
    }

    @Test func serverSideFailuresAreMeteredAsNotBillable() {
        for code in [0, 1, 3, 5, 6, 7, 8, 9, 10, 11, 16] { #expect(GRPCStatus.meteredHTTPStatus(code) < 500, "status \(code) is the caller's") }
        for code in [2, 4, 12, 13, 14, 15, 99] { #expect(GRPCStatus.meteredHTTPStatus(code) >= 500, "status \(code) is a server-side failure") }
    }

    @Test func timeoutsParseTheirUnitsAndRefuseTheRest() {
        #expect(GRPCStatus.timeout("100m") == 100_000_000)
        #expect(GRPCStatus.timeout("5S") == 5_000_000_000)
        #expect(GRPCStatus.timeout("2M") == 120_000_000_000)
        #expect(GRPCStatus.timeout("1H") == 3_600_000_000_000)
        #expect(GRPCStatus.timeout("250u") == 250_000)
        #expect(GRPCStatus.timeout("7n") == 7)
        #expect(GRPCStatus.timeout("99999999H") == UInt64.max)  // beyond the clock: no earlier deadline than forever
        for bad in ["", "5", "S", "5s", "-5S", "123456789S", "1.5S"] { #expect(GRPCStatus.timeout(bad) == nil, "\(bad) is malformed") }
    }

    @Test func deadlinesAreWrittenInTheFinestUnitThatFitsAndNeverShortened() {
        #expect(GRPCStatus.timeoutValue(nanoseconds: 7) == "7n")
        #expect(GRPCStatus.timeoutValue(nanoseconds: 99_999_999) == "99999999n")
        #expect(GRPCStatus.timeoutValue(nanoseconds: 100_000_000) == "100000u")
        #expect(GRPCStatus.timeoutValue(nanoseconds: 100_000_001) == "100001u")  // rounded up, not down
        #expect(GRPCStatus.timeoutValue(nanoseconds: 30_000_000_000) == "30000000u")
        #expect(GRPCStatus.timeoutValue(nanoseconds: 86_400_000_000_000) == "86400000m")
        #expect(GRPCStatus.timeoutValue(nanoseconds: UInt64.max) == "5124096H")
        for value: UInt64 in [1, 999, 1_000_001, 5_000_000_000, 86_400_000_000_000, UInt64.max] {
            let written = GRPCStatus.timeoutValue(nanoseconds: value)
            #expect(GRPCStatus.timeout(written).map { $0 >= value } == true, "\(written) reads back as at least \(value)")
        }
    }

    @Test func gRPCContentTypesAreRecognised() {
        for yes in ["application/grpc", "application/grpc+proto", "Application/GRPC;charset=utf-8"] { #expect(GRPCStatus.isGRPC(yes)) }
        for no in [nil, "application/json", "application/grpc-web", "application/grpcx"] { #expect(!GRPCStatus.isGRPC(no)) }
    }

    @Test func aRefusalIsATrailersOnlyAnswerWithItsMessageEncoded() {
        let refusal = LocalResponse.problem(.tooManyRequests, "Too many", "Slow down: 100% used", rejection: nil, headers: [("Retry-After", "1")])
        let block = GRPCStatus.trailersOnly(refusal, detail: "Slow down: 100% used", requestID: "r1", strictTransportSecurity: nil)
        #expect(block[":status"] == ["200"])
        #expect(block["content-type"] == ["application/grpc"])
        #expect(block["grpc-status"] == ["8"])
        #expect(block["grpc-message"] == ["Slow down: 100%25 used"])
        #expect(block["retry-after"] == ["1"])
        #expect(block["x-request-id"] == ["r1"])
    }
}
