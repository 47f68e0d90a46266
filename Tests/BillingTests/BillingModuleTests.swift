import Testing

@testable import Billing

/// Billing arrives with the metering issue; this suite keeps the target compiled and linked.
@Suite struct BillingModuleTests {
    @Test func moduleIsLinked() {
        #expect(String(describing: BillingModule.self) == "BillingModule")
    }
}
