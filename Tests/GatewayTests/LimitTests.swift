import Billing
import Foundation
import Testing

@testable import Gateway

/// Pure data-plane rules, table-driven.
@Suite struct TokenBucketTests {
    @Test func burstThenSteadyRate() {
        var bucket = TokenBucket(ratePerSecond: 2, burst: 3, now: 0)
        let second: UInt64 = 1_000_000_000
        // half a second refills one token at 2/s; never above the burst
        let decisions = [0, 0, 0, 0, second / 2, second / 2, 10 * second].map { bucket.take(now: $0) }
        #expect(
            decisions == [
                .allowed(remaining: 2), .allowed(remaining: 1), .allowed(remaining: 0), .refused(retryAfterSeconds: 1), .allowed(remaining: 0),
                .refused(retryAfterSeconds: 1), .allowed(remaining: 2),
            ])
    }

    @Test func slowRatesSayHowLongToWait() {
        var bucket = TokenBucket(ratePerSecond: 1, burst: 1, now: 0)
        let decisions = [0, 100_000_000].map { bucket.take(now: $0) }
        #expect(decisions.last == .refused(retryAfterSeconds: 1))
        #expect(bucket.secondsUntilFull() == 1)
    }

    @Test func timeGoingBackwardsChangesNothing() {
        var bucket = TokenBucket(ratePerSecond: 1, burst: 1, now: 5_000_000_000)
        let decisions = [5_000_000_000, 1_000_000_000].map { bucket.take(now: $0) }
        #expect(decisions.last == .refused(retryAfterSeconds: 1))
    }

    @Test func aPlanChangeStartsAFreshBucket() {
        let limiter = RateLimiter(stripes: 4)
        let id = UUID()
        _ = limiter.take(subscription: id, ratePerSecond: 1, burst: 1, now: 0)
        #expect(limiter.take(subscription: id, ratePerSecond: 1, burst: 1, now: 0).0 == .refused(retryAfterSeconds: 1))
        #expect(limiter.take(subscription: id, ratePerSecond: 50, burst: 50, now: 0).0 == .allowed(remaining: 49))
    }
}

@Suite struct CircuitBreakerTests {
    @Test func opensAfterConsecutiveFailuresThenTriesOnceAndCloses() {
        var breaker = CircuitBreaker(failureThreshold: 3, openNanoseconds: 100)
        breaker.recordFailure(now: 0)
        breaker.recordFailure(now: 0)
        breaker.recordSuccess()  // resets the streak
        breaker.recordFailure(now: 0)
        breaker.recordFailure(now: 0)
        let stillClosed = breaker.allow(now: 0)
        breaker.recordFailure(now: 10)
        let opened = breaker.state
        let whileOpen = breaker.allow(now: 50)
        let trial = breaker.allow(now: 110)  // the half-open trial
        let second = breaker.allow(now: 111)  // only one at a time
        breaker.recordFailure(now: 120)
        let reopened = breaker.state
        let trialAgain = breaker.allow(now: 220)
        breaker.recordSuccess()
        #expect(stillClosed && !whileOpen && trial && !second && trialAgain)
        #expect(opened == .open(until: 110))
        #expect(reopened == .open(until: 220))
        #expect(breaker.state == .closed(consecutiveFailures: 0))
        #expect(breaker.gaugeValue == 0)
    }
}

@Suite struct WeightedRoundRobinTests {
    @Test func picksInProportionAndInterleaves() {
        var balancer = WeightedRoundRobin(weights: [5, 1, 1])
        let picks = (0..<7).compactMap { _ in balancer.next { _ in true } }
        #expect(picks == [0, 0, 1, 0, 2, 0, 0])
    }

    @Test func skipsUnavailableTargetsAndReportsNone() {
        var balancer = WeightedRoundRobin(weights: [3, 1])
        let picks = (0..<4).compactMap { _ in balancer.next { $0 == 1 } }
        let none = balancer.next { _ in false }
        #expect(picks == [1, 1, 1, 1])
        #expect(none == nil)
    }
}

@Suite struct QuotaTrackerTests {
    @Test func reservationsCountUntilSettledAndOnlyBillableCallsStay() {
        let tracker = QuotaTracker(mode: .local)
        let id = UUID()
        let tenant = UUID()
        #expect(tracker.admit(subscription: id, tenant: tenant, quota: 2, period: "2026-11") == .allowed(remaining: 1))
        #expect(tracker.admit(subscription: id, tenant: tenant, quota: 2, period: "2026-11") == .allowed(remaining: 0))
        #expect(tracker.admit(subscription: id, tenant: tenant, quota: 2, period: "2026-11") == .exhausted)
        tracker.settle(subscription: id, billable: false)  // an upstream 5xx gives its unit back
        #expect(tracker.admit(subscription: id, tenant: tenant, quota: 2, period: "2026-11") == .allowed(remaining: 0))
        // a new month starts from zero
        #expect(tracker.admit(subscription: id, tenant: tenant, quota: 2, period: "2026-12") == .allowed(remaining: 1))
    }

    @Test(arguments: [
        ("2026-11-30T23:59:59Z", "2026-11"), ("2026-12-01T00:00:00Z", "2026-12"), ("2028-02-29T12:00:00Z", "2028-02"), ("2026-01-01T00:00:00Z", "2026-01"),
    ])
    func periodsAreUTCCalendarMonths(instant: String, period: String) throws {
        let date = try #require(ISO8601DateFormatter().date(from: instant))
        #expect(QuotaTracker.period(of: date) == period)
    }
}

@Suite struct UsageEventTests {
    @Test(arguments: [(true, 200, true), (true, 404, true), (true, 499, true), (true, 500, false), (true, 503, false), (false, 200, false), (false, 429, false)])
    func billableMeansForwardedAndNotAServerError(forwarded: Bool, status: Int, billable: Bool) {
        #expect(UsageEvent.isBillable(forwarded: forwarded, status: status) == billable)
    }

    @Test func uuidV7IsTimeOrderedAndVersioned() {
        let a = UUIDv7.make(milliseconds: 1_700_000_000_000)
        let b = UUIDv7.make(milliseconds: 1_700_000_000_001)
        #expect(a.uuidString < b.uuidString)
        #expect(a.uuidString.dropFirst(14).first == "7")
        #expect(["8", "9", "A", "B"].contains(a.uuidString.dropFirst(19).first.map(String.init) ?? ""))
    }
}
