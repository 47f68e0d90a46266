import Foundation
import Testing

@testable import Gateway

/// The pure parts of quota leases: block sizing, the database's accounting, one gateway's lease,
/// and many gateways interleaved at random against an in-memory ledger.
@Suite struct LeaseSizingTests {
    @Test(arguments: [
        // (pool, holders, need, block)
        (Int64(0), 1, Int64(1), Int64(0)),  // nothing left: nothing granted, whatever the need
        (-5, 1, 1, 0),
        (300, 1, 1, 75),  // a quarter of the pool for the only gateway
        (225, 2, 1, 28),  // an eighth with two
        (300, 3, 1, 25),
        (7, 2, 1, 1),  // a small remainder: blocks of one
        (1, 3, 1, 1),
        (1_000_000_000_000, 1, 1, 50_000),  // capped
        (10, 1, 4, 4),  // the advance already admitted is covered
        (3, 1, 9, 3),  // but never more than the pool
        (Int64.max, Int.max, 1, 1),  // divisor × holders overflows: saturates, never traps
        (100, 0, 1, 25),  // no holders is treated as one
    ])
    func blocksShrinkWithThePool(pool: Int64, holders: Int, need: Int64, block: Int64) {
        #expect(LeaseSizing().block(pool: pool, holders: holders, need: need) == block)
    }
}

@Suite struct LeaseLedgerTests {
    static let sizing = LeaseSizing()
    static let tenant = UUID(), subscription = UUID()

    static func request(_ lease: UUID, used: Int64 = 0, reported: Int64 = 0, want: Bool = true, keep: Int64? = nil, known: Int64 = 0, close: Bool = false)
        -> LeaseRequest
    {
        LeaseRequest(
            leaseID: lease, tenantID: tenant, subscriptionID: subscription, period: "2026-12", holder: "test", quota: 300, used: used,
            reported: reported, want: want, need: 1, keepAtMost: keep, knownGranted: known, close: close, leaseSeconds: 30)
    }

    @Test func theFirstGatewayGetsAQuarterAndTheSecondAnEighthOfTheRest() {
        let a = UUID(), b = UUID()
        let first = LeaseLedger.decide(quota: 300, usageUsed: 0, rows: [], request: Self.request(a), sizing: Self.sizing)
        #expect(first.answer.grant == 75)
        #expect(first.answer.granted == 75)
        #expect(first.answer.pool == 225)
        #expect(first.answer.standing == .open)
        #expect(first.row == LeaseRow(id: a, granted: 75, used: 0, live: true))
        let second = LeaseLedger.decide(quota: 300, usageUsed: 0, rows: [first.row!], request: Self.request(b), sizing: Self.sizing)
        #expect(second.answer.grant == 28)
        #expect(second.answer.heldElsewhere == 75)
        #expect(second.answer.pool == 197)
    }

    @Test func theLastUnitGoesToOneGatewayOnly() {
        // setup: 299 used, a second lease holds nothing
        let a = UUID(), b = UUID()
        let rows = [LeaseRow(id: a, granted: 150, used: 150, live: true), LeaseRow(id: b, granted: 149, used: 149, live: true)]
        // act: both ask, one after the other (the row lock orders them)
        let first = LeaseLedger.decide(quota: 300, usageUsed: 299, rows: rows, request: Self.request(a, used: 150, reported: 150, known: 150), sizing: Self.sizing)
        let after = [first.row!, rows[1]]
        let second = LeaseLedger.decide(quota: 300, usageUsed: 299, rows: after, request: Self.request(b, used: 149, reported: 149, known: 149), sizing: Self.sizing)
        // assert
        #expect(first.answer.grant == 1)
        #expect(first.answer.standing == .exhausted)  // after this unit nothing is left
        #expect(second.answer.grant == 0)
        #expect(second.answer.standing == .heldElsewhere)  // a's unit is not used yet
        let third = LeaseLedger.decide(
            quota: 300, usageUsed: 300, rows: [LeaseRow(id: a, granted: 151, used: 151, live: true), rows[1]],
            request: Self.request(b, used: 149, reported: 149, known: 149), sizing: Self.sizing)
        #expect(third.answer.grant == 0)
        #expect(third.answer.standing == .exhausted)
    }

    @Test func reportsAreAbsoluteSoARepeatedOrLateOneCountsOnce() {
        let a = UUID()
        let row = LeaseRow(id: a, granted: 75, used: 10, live: true)
        let report = LeaseLedger.decide(quota: 300, usageUsed: 10, rows: [row], request: Self.request(a, used: 25, reported: 10, want: false, known: 75), sizing: Self.sizing)
        #expect(report.usageDelta == 15)
        #expect(report.answer.used == 25)
        #expect(report.answer.grant == 0)
        // the same request again (its answer was lost): nothing added
        let again = LeaseLedger.decide(quota: 300, usageUsed: 25, rows: [report.row!], request: Self.request(a, used: 25, reported: 10, want: false, known: 75), sizing: Self.sizing)
        #expect(again.usageDelta == 0)
        // an abandoned older request landing late: nothing added, nothing lowered
        let late = LeaseLedger.decide(quota: 300, usageUsed: 25, rows: [report.row!], request: Self.request(a, used: 12, reported: 10, want: false, known: 75), sizing: Self.sizing)
        #expect(late.usageDelta == 0)
        #expect(late.row?.used == 25)
        // a row cleaned up meanwhile: the gateway's own `reported` is the baseline
        let gone = LeaseLedger.decide(quota: 300, usageUsed: 25, rows: [], request: Self.request(a, used: 30, reported: 25, want: false), sizing: Self.sizing)
        #expect(gone.usageDelta == 5)
    }

    @Test func anExpiredLeaseGivesItsUnusedUnitsToOthers() {
        // setup: a crashed gateway's lease, 20 used of 75
        let dead = UUID(), alive = UUID()
        let expired = LeaseRow(id: dead, granted: 75, used: 20, live: false)
        let live = LeaseRow(id: dead, granted: 75, used: 20, live: true)
        // act
        let whileLive = LeaseLedger.decide(quota: 100, usageUsed: 20, rows: [live], request: Self.request(alive), sizing: Self.sizing)
        let afterExpiry = LeaseLedger.decide(quota: 100, usageUsed: 20, rows: [expired], request: Self.request(alive), sizing: Self.sizing)
        // assert: 100 - 20 used - 55 held = 25 while it lives, 80 once it expired
        #expect(whileLive.answer.pool + whileLive.answer.grant == 25)
        #expect(whileLive.answer.heldElsewhere == 55)
        #expect(afterExpiry.answer.pool + afterExpiry.answer.grant == 80)
        #expect(afterExpiry.answer.heldElsewhere == 0)
        // the expired holder coming back keeps only what it used, and its new use is counted
        let back = LeaseLedger.decide(quota: 100, usageUsed: 20, rows: [expired], request: Self.request(dead, used: 22, reported: 20, want: false, known: 75), sizing: Self.sizing)
        #expect(back.answer.granted == 22)
        #expect(back.usageDelta == 2)
    }

    @Test func unitsGoBackOnlyWhenTheGatewayKnewTheRow() {
        let a = UUID()
        let row = LeaseRow(id: a, granted: 75, used: 10, live: true)
        let kept = LeaseLedger.decide(quota: 300, usageUsed: 10, rows: [row], request: Self.request(a, used: 10, reported: 10, want: false, keep: 12, known: 75), sizing: Self.sizing)
        #expect(kept.answer.granted == 12)
        #expect(kept.answer.pool == 288)
        // a grant landed that the gateway never heard of: it does not give back blindly
        let stale = LeaseLedger.decide(quota: 300, usageUsed: 10, rows: [row], request: Self.request(a, used: 10, reported: 10, want: false, keep: 12, known: 50), sizing: Self.sizing)
        #expect(stale.answer.granted == 75)
        // closing counts the use and deletes the row: everything unused returns
        let closed = LeaseLedger.decide(quota: 300, usageUsed: 10, rows: [row], request: Self.request(a, used: 11, reported: 10, close: true), sizing: Self.sizing)
        #expect(closed.row == nil)
        #expect(closed.usageDelta == 1)
        #expect(closed.answer.grant == 0)
        #expect(closed.answer.pool == 289)
    }

    @Test func callsAdmittedOnCreditAreCoveredNotLost() {
        // setup: the lease holds 10, its gateway admitted 2 more on credit and both were billable
        let a = UUID()
        let row = LeaseRow(id: a, granted: 10, used: 10, live: true)
        var request = Self.request(a, used: 12, reported: 10, known: 10)
        request.need = 1
        // act: 290 used by others, so 300 - 290 - 12 = nothing left
        let outcome = LeaseLedger.decide(quota: 300, usageUsed: 300, rows: [row], request: request, sizing: Self.sizing)
        let room = LeaseLedger.decide(quota: 300, usageUsed: 298, rows: [row], request: Self.request(a, used: 12, reported: 10, known: 10), sizing: Self.sizing)
        // assert: the 2 are counted; with no room they are the overshoot, with room the lease still gets the 2 left
        #expect(outcome.answer.granted == 12)
        #expect(outcome.answer.grant == 0)
        #expect(outcome.answer.standing == .exhausted)
        #expect(room.answer.used == 300)
        #expect(room.answer.granted == 12)
        #expect(room.answer.standing == .exhausted)
        let more = LeaseLedger.decide(quota: 300, usageUsed: 290, rows: [LeaseRow(id: a, granted: 10, used: 10, live: true)], request: Self.request(a, used: 12, reported: 10, known: 10), sizing: Self.sizing)
        #expect(more.answer.granted == 14)  // 12 used + a block of the 8 left (a quarter), not 10 + 2
        #expect(more.answer.pool == 6)
    }

    @Test func hugeNumbersSaturateInsteadOfTrapping() {
        let a = UUID()
        let rows = [LeaseRow(id: UUID(), granted: .max, used: 0, live: true), LeaseRow(id: UUID(), granted: .max, used: 0, live: true)]
        var request = Self.request(a, used: .max, reported: 0)
        request.quota = .max
        let outcome = LeaseLedger.decide(quota: .max, usageUsed: .max, rows: rows, request: request, sizing: Self.sizing)
        #expect(outcome.answer.grant == 0)
        #expect(outcome.answer.used == .max)
    }
}

@Suite struct QuotaLeaseStateTests {
    static func lease(granted: Int64, standing: QuotaStanding = .open, validUntil: UInt64 = .max) -> QuotaLease {
        var lease = QuotaLease(tenantID: UUID(), subscriptionID: UUID(), period: "2026-12", quota: 300, now: 0)
        lease.granted = granted
        lease.standing = standing
        lease.validUntil = validUntil
        return lease
    }

    @Test func theAdvanceIsBoundedAndOnlyWhileTheMonthIsNotKnownToBeGone() {
        var lease = Self.lease(granted: 1)
        #expect(lease.admit(now: 1, advance: 2).admission == .allowed(remaining: 299))
        // used up: two on credit, then refused (pending, not exhausted)
        #expect(lease.admit(now: 2, advance: 2).admission == .allowed(remaining: 298))
        #expect(lease.admit(now: 3, advance: 2).admission == .allowed(remaining: 297))
        #expect(lease.admit(now: 4, advance: 2).admission == .refused(.unknown))
        #expect(lease.consumed == 3)
        #expect(lease.wanted)
        // a non-billable outcome gives its unit back, a billable one keeps it
        lease.settle(billable: false)
        lease.settle(billable: true)
        #expect(lease.consumed == 2)
        var dry = Self.lease(granted: 0, standing: .exhausted)
        #expect(dry.admit(now: 1, advance: 2).admission == .refused(.exhausted))
        var elsewhere = Self.lease(granted: 0, standing: .heldElsewhere)
        #expect(elsewhere.admit(now: 1, advance: 2).admission == .refused(.heldElsewhere))
    }

    @Test func aLeaseSaysNothingOfTheMonthBeforeTheDatabaseAnswered() {
        // a new lease (first call, or after an idle one was given back) admits on credit but does
        // not know the month's use: no remaining count rather than the whole quota
        var fresh = QuotaLease(tenantID: UUID(), subscriptionID: UUID(), period: "2026-12", quota: 300, now: 0)
        #expect(fresh.admit(now: 1, advance: 2).admission == .allowed(remaining: nil))
        var answered = Self.lease(granted: 10)
        #expect(answered.admit(now: 1, advance: 2).admission == .allowed(remaining: 299))
    }

    @Test func aLeasePastItsLocalDeadlineStopsUsingItsUnits() {
        var lease = Self.lease(granted: 50, validUntil: 100)
        #expect(lease.admit(now: 99, advance: 0).admission == .allowed(remaining: 299))
        #expect(lease.admit(now: 100, advance: 0).admission == .refused(.unknown))
        #expect(lease.granted == 1)
    }

    @Test func theNextBlockIsAskedForAtHalfTheLastOne() {
        var lease = Self.lease(granted: 0)
        let answer = LeaseAnswer(granted: 10, grant: 10, used: 0, heldElsewhere: 0, pool: 290, standing: .open)
        let request = lease.request(sequence: 1, now: 0, holder: "t", leaseSeconds: 30, advance: 2)
        #expect(request.want)
        lease.apply(answer, to: request, sequence: 1, sentAt: 0, now: 1, validFor: .max)
        var signals = 0
        for step in 0..<10 where lease.admit(now: UInt64(2 + step), advance: 2).signal { signals += 1 }
        #expect(signals == 1)  // one signal, when 5 were left
        // an answer to an older request is ignored
        lease.apply(LeaseAnswer(granted: 99, grant: 99, used: 0, heldElsewhere: 0, pool: 0, standing: .open), to: request, sequence: 1, sentAt: 0, now: 3, validFor: .max)
        #expect(lease.granted == 10)
    }
}

/// Several gateways against one in-memory ledger, every step interleaved at random: answers
/// delayed, reordered, lost (the database may still apply a lost one later), calls settled late
/// and some not billable. The bound must hold at every step and the whole quota must be usable.
@Suite struct QuotaLeaseSimulationTests {
    struct Ledger {
        var used: Int64 = 0
        var rows: [UUID: LeaseRow] = [:]
        mutating func apply(_ request: LeaseRequest, quota: Int64) -> LeaseAnswer {
            let outcome = LeaseLedger.decide(quota: quota, usageUsed: used, rows: Array(rows.values), request: request, sizing: LeaseSizing())
            used = QuotaMath.add(used, outcome.usageDelta)
            rows[request.leaseID] = outcome.row
            return outcome.answer
        }
    }

    struct Random {
        var state: UInt64
        mutating func next(_ bound: Int) -> Int {
            state = state &* 6364136223846793005 &+ 1442695040888963407
            return Int((state >> 33) % UInt64(bound))
        }
    }

    @Test(arguments: [(2, UInt64(1)), (3, 2), (3, 3), (5, 4), (2, 5), (4, 6)])
    func overshootStaysWithinTheAdvanceWhateverTheInterleaving(gateways: Int, seed: UInt64) {
        // setup
        let quota: Int64 = 300, advance: Int64 = 2
        let subscription = UUID(), tenant = UUID()
        var random = Random(state: seed)
        var ledger = Ledger()
        var leases = (0..<gateways).map { _ in QuotaLease(tenantID: tenant, subscriptionID: subscription, period: "2026-12", quota: quota, now: 0) }
        var sent: [(gateway: Int, request: LeaseRequest, sequence: UInt64)] = []
        var answered: [(gateway: Int, request: LeaseRequest, sequence: UInt64, answer: LeaseAnswer)] = []
        var calls: [[Bool]] = Array(repeating: [], count: gateways)  // reserved calls: billable or not
        var sequence: UInt64 = 0
        var now: UInt64 = 0
        var admitted = 0
        func consumed() -> Int64 { leases.reduce(0) { $0 + $1.consumed } }

        // act: a random phase
        for _ in 0..<20_000 {
            now += 1
            let g = random.next(gateways)
            switch random.next(10) {
            case 0...3:
                if case .allowed = leases[g].admit(now: now, advance: advance).admission {
                    calls[g].append(random.next(10) != 0)
                    admitted += 1
                }
            case 4...5:
                if !calls[g].isEmpty { leases[g].settle(billable: calls[g].removeFirst()) }
            case 6:
                if leases[g].inFlight == nil {
                    sequence += 1
                    sent.append((g, leases[g].request(sequence: sequence, now: now, holder: "g\(g)", leaseSeconds: 30, advance: advance), sequence))
                }
            case 7:
                if !sent.isEmpty {
                    let item = sent.remove(at: random.next(sent.count))
                    answered.append((item.gateway, item.request, item.sequence, ledger.apply(item.request, quota: quota)))
                }
            case 8:
                if !answered.isEmpty {
                    let item = answered.remove(at: random.next(answered.count))
                    leases[item.gateway].apply(item.answer, to: item.request, sequence: item.sequence, sentAt: now, now: now, validFor: .max)
                }
            default:
                // an answer lost: the gateway gives up on it (the database may still apply it)
                if let flight = leases[g].inFlight, random.next(4) == 0 { leases[g].failed(sequence: flight.sequence, now: now) }
            }
            #expect(consumed() <= quota + Int64(gateways) * advance)
        }
        // act: settle everything, let the late requests land, then use the quota up
        for g in 0..<gateways { while !calls[g].isEmpty { leases[g].settle(billable: calls[g].removeFirst()) } }
        for item in sent { _ = ledger.apply(item.request, quota: quota) }
        for g in 0..<gateways { if let flight = leases[g].inFlight { leases[g].failed(sequence: flight.sequence, now: now) } }
        var rounds = 0
        while rounds < 100_000 {
            rounds += 1
            now += 1
            var exhausted = 0
            for g in 0..<gateways {
                switch leases[g].admit(now: now, advance: advance).admission {
                case .allowed: leases[g].settle(billable: true)
                case .refused(let standing):
                    if standing == .exhausted { exhausted += 1 }
                    sequence += 1
                    let request = leases[g].request(sequence: sequence, now: now, holder: "g\(g)", leaseSeconds: 30, advance: advance)
                    leases[g].apply(ledger.apply(request, quota: quota), to: request, sequence: sequence, sentAt: now, now: now, validFor: .max)
                }
            }
            if exhausted == gateways { break }
        }
        for g in 0..<gateways {
            sequence += 1
            var request = leases[g].request(sequence: sequence, now: now, holder: "g\(g)", leaseSeconds: 30, advance: advance)
            request.want = false
            _ = ledger.apply(request, quota: quota)
        }

        // assert: every gateway says exhausted, the whole quota was usable, the overshoot is bounded
        let billed = leases.reduce(0) { $0 + $1.billed }
        #expect(rounds < 100_000)
        #expect(ledger.used == billed)
        #expect(billed >= quota)
        #expect(billed <= quota + Int64(gateways) * advance)
        #expect(admitted > 0)
    }
}
