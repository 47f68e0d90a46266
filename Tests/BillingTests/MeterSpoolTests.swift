import Foundation
import Testing

@testable import Billing

/// The write-ahead spool's format and bookkeeping, and the numbering reconciliation relies on.
@Suite struct MeterSpoolTests {
    static func event(_ tenant: UUID = UUID(), at: Date = Date(), status: Int = 200, rejection: UsageEvent.Rejection? = nil, sequence: Int64 = 0) -> UsageEvent {
        var event = UsageEvent(
            at: at, tenantID: tenant, apiID: UUID(), appID: nil, subscriptionID: UUID(), planID: nil, method: "PATCH", status: status,
            latencyMicroseconds: 1_234, bytesIn: 5, bytesOut: Int64.max, rejection: rejection, forwarded: rejection == nil)
        event.sequence = sequence
        return event
    }

    @Test func eventsRoundTripThroughTheSpoolFormat() {
        // setup: every field set, nils included, every rejection reason
        var events = UsageEvent.Rejection.allCases.enumerated().map { Self.event(status: 400 + $0.offset, rejection: $0.element, sequence: Int64($0.offset + 1)) }
        events.append(Self.event(status: 200, sequence: 99))
        var bytes = SpoolFormat.header(meterID: "host:8081/abc123")
        for event in events { SpoolFormat.append(event, to: &bytes) }
        // act
        let contents = SpoolFormat.read(bytes)
        // assert
        #expect(contents == SpoolFormat.Contents(meterID: "host:8081/abc123", events: events, torn: false))
    }

    @Test func cacheHitsRoundTripAndDecideBilling() {
        // setup: a plain answer, a billed hit and an unbilled hit
        var events = [Self.event(sequence: 1), Self.event(sequence: 2), Self.event(sequence: 3)]
        events[1].cache = .hit
        events[2].cache = .unbilledHit
        var bytes = SpoolFormat.header(meterID: "m")
        for event in events { SpoolFormat.append(event, to: &bytes) }
        // act
        let read = SpoolFormat.read(bytes)?.events
        // assert: the flag survives the spool, and only the unbilled hit is not billable
        #expect(read == events)
        #expect(read?.map(\.cache) == [nil, .hit, .unbilledHit])
        #expect(events.map(\.isBillable) == [true, true, false])
        // a hit is never billable when it is a server error, whatever the plan
        #expect(!UsageEvent.isBillable(forwarded: true, status: 503, cache: .hit))
        // the hourly rollup counts both kinds of hit, and bills as the events say
        let rollups = HourlyRollup.aggregate(events)
        #expect(rollups.map(\.cacheHits).reduce(0, +) == 2)
        #expect(rollups.map(\.billable).reduce(0, +) == 2)
    }

    /// A spool written by the version before the cache flag (magic TGWAL1, no cache byte) is still
    /// replayed after an upgrade: its events read as they were written.
    @Test func aVersionOneSegmentIsStillRead() throws {
        // setup: write version 2, then rewrite it as version 1 would have written it
        let events = [Self.event(sequence: 1), Self.event(status: 429, rejection: .rateLimited, sequence: 2)]
        var old = SpoolFormat.magicVersion1
        let id = Array("old-run".utf8)
        old += [UInt8(id.count), 0] + id
        for event in events {
            var record: [UInt8] = []
            SpoolFormat.append(event, to: &record)
            // drop the cache byte: the payload is 1 shorter, and its checksum is recomputed
            let payload = Array(record[4..<(record.count - 5)])
            let length = UInt32(payload.count)
            old += withUnsafeBytes(of: length.littleEndian, Array.init) + payload
            old += withUnsafeBytes(of: SpoolFormat.checksum(payload[...]).littleEndian, Array.init)
        }
        // act
        let contents = try #require(SpoolFormat.read(old))
        // assert
        #expect(contents == SpoolFormat.Contents(meterID: "old-run", events: events, torn: false))
        // and a version-2 record inside a version-1 segment is not trusted (one byte too long)
        var mixed = SpoolFormat.magicVersion1 + [UInt8(id.count), 0] + id
        SpoolFormat.append(events[0], to: &mixed)
        #expect(SpoolFormat.read(mixed)?.events == [])
    }

    @Test func aTornTailKeepsEveryIntactRecordBeforeIt() throws {
        var bytes = SpoolFormat.header(meterID: "m")
        let events = (1...3).map { Self.event(sequence: Int64($0)) }
        for event in events { SpoolFormat.append(event, to: &bytes) }
        let intact = bytes.count
        SpoolFormat.append(Self.event(sequence: 4), to: &bytes)
        // a crash in the middle of the fourth append
        let torn = try #require(SpoolFormat.read(Array(bytes[..<(intact + 20)])))
        #expect(torn.events == events)
        #expect(torn.torn)
        // a flipped byte inside the third record stops the read there
        var garbled = Array(bytes[..<intact])
        garbled[intact - 10] ^= 0xff
        #expect(SpoolFormat.read(garbled)?.events == Array(events.prefix(2)))
        // not a segment at all
        #expect(SpoolFormat.read(Array("hello".utf8)) == nil)
    }

    /// A run's marker lock says whether the run is alive. A child process started while the run
    /// lived (a script, a database server) must not inherit the descriptor and keep a finished run
    /// "alive": the next meter would never replay its spool (seen in CI: a test cluster's
    /// postmaster held the lock of a stopped meter).
    @Test func aChildProcessDoesNotKeepAFinishedRunAlive() throws {
        // setup: a run with one segment, and a child started while it lives
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("spool-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let first = try WriteAheadSpool(directory: directory, meterID: "g1/first", capBytes: 1 << 20)
        _ = try first.append([Self.event(sequence: 1)])
        var child: pid_t = 0
        let argv: [UnsafeMutablePointer<CChar>?] = [strdup("/bin/sleep"), strdup("30"), nil]
        defer { argv.forEach { free($0) } }
        #expect(posix_spawn(&child, "/bin/sleep", nil, nil, argv, environ) == 0)
        defer {
            kill(child, SIGKILL)
            var status: Int32 = 0
            waitpid(child, &status, 0)
        }
        // act: the run ends while the child still runs
        first.seal()
        first.markEnded(reported: false)
        let second = try WriteAheadSpool(directory: directory, meterID: "g1/second", capBytes: 1 << 20)
        let dead = second.deadRuns()
        // assert: the next run finds the finished one and its segment
        #expect(dead.map(\.meterID) == ["g1/first"])
        #expect(dead.first?.endedCleanly == true)
        #expect(dead.first?.segments.count == 1)
        for run in dead { second.forget(run) }
    }

    @Test func theBacklogHandsOutChunksInOrderAndFreesASegmentOnlyWhenSealedAndConfirmed() {
        var backlog = MeterBacklog(memoryCap: 100)
        let first = WriteAheadSpool.Segment(run: "r", number: 1)
        let second = WriteAheadSpool.Segment(run: "r", number: 2)
        func chunk(_ segment: WriteAheadSpool.Segment?, _ count: Int) -> MeterBacklog.Chunk {
            MeterBacklog.Chunk(meterID: "m", segment: segment, first: 0, count: count, events: (0..<count).map { _ in Self.event() }, oldest: Date())
        }
        let r1 = backlog.add(chunk(first, 3))
        #expect(r1)
        let r2 = backlog.add(chunk(first, 4))
        #expect(r2)
        let r3 = backlog.add(chunk(second, 5))
        #expect(r3)
        #expect(backlog.events == 12 && backlog.spooledEvents == 12)
        // a write takes whole chunks up to its size, and nothing more while it runs
        let r4 = backlog.takeForWrite(maxEvents: 8)
        #expect(r4.map(\.count) == [3, 4])
        let r5 = backlog.takeForWrite(maxEvents: 8)
        #expect(r5.isEmpty)
        // a failed write leaves them at the head
        backlog.failInFlight()
        let r6 = backlog.takeForWrite(maxEvents: 8)
        #expect(r6.map(\.count) == [3, 4])
        // confirmed before the segment is sealed: not deletable yet; sealing then frees it
        let r7 = backlog.confirmInFlight()
        #expect(r7.isEmpty)
        let r8 = backlog.seal(first)
        #expect(r8)
        // sealed while a chunk waits: deletable once that chunk is confirmed
        let r9 = backlog.seal(second)
        #expect(!r9)
        #expect(backlog.takeForWrite(maxEvents: 1).map(\.count) == [5])  // at least one chunk, even a larger one
        let r10 = backlog.confirmInFlight()
        #expect(r10 == [second])
        #expect(backlog.isEmpty && backlog.events == 0)
    }

    @Test func overTheMemoryCapSpooledChunksStayOnDiskAndUnspooledOnesAreRefused() {
        var backlog = MeterBacklog(memoryCap: 5)
        let segment = WriteAheadSpool.Segment(run: "r", number: 1)
        let events = (0..<4).map { _ in Self.event() }
        let r11 = backlog.add(.init(meterID: "m", segment: segment, first: 0, count: 4, events: events, oldest: Date()))
        #expect(r11)
        let r12 = backlog.add(.init(meterID: "m", segment: segment, first: 4, count: 4, events: events, oldest: Date()))
        #expect(r12)
        #expect(backlog.eventsInMemory == 4)  // the second is read back from its segment when written
        #expect(backlog.chunks.last?.events == nil)
        let r13 = backlog.add(.init(meterID: "m", segment: nil, first: 0, count: 4, events: events, oldest: Date()))
        #expect(!r13)
        let r14 = backlog.add(.init(meterID: "m", segment: nil, first: 0, count: 1, events: [events[0]], oldest: Date()))
        #expect(r14)
        #expect(backlog.events == 9)
    }

    @Test func eventsAreNumberedPerTenantAndUTCMonthWithoutGaps() throws {
        var sequences = EventSequences()
        let a = UUID()
        let b = UUID()
        let november = try #require(ISO8601DateFormatter().date(from: "2026-11-30T23:59:59Z"))
        let december = try #require(ISO8601DateFormatter().date(from: "2026-12-01T00:00:00Z"))
        #expect(sequences.number(tenant: a, at: november) == 1)
        #expect(sequences.number(tenant: a, at: november) == 2)
        #expect(sequences.number(tenant: b, at: november) == 1)
        #expect(sequences.number(tenant: a, at: december) == 1)
        // a late call of the month before continues that month's numbers
        #expect(sequences.number(tenant: a, at: november) == 3)
        #expect(sequences.number(tenant: a, at: december) == 2)
    }

    @Test func aMeterRowNamesMissingNumbersAndHowTheRunEnded() {
        let now = Date()
        // balanced: every number up to the tally stored
        let whole = MeterSequenceRow(meterID: "g/1", stored: 10, highest: 10, answered: 10, missingRanges: [], runState: "clean", lastReport: now)
        #expect(whole.differences(now: now).isEmpty)
        // a gap inside, and a tail the tally knows of
        let gaps = MeterSequenceRow(meterID: "g/2", stored: 7, highest: 9, answered: 12, missingRanges: [3...4], runState: "running", lastReport: now)
        #expect(gaps.missing == 5)
        #expect(gaps.differences(now: now) == ["gateway g/2: 5 answered calls not stored (event numbers #3–#4, #10–#12)"])
        // a crash is reported even when no number is missing
        let crashed = MeterSequenceRow(meterID: "g/3", stored: 4, highest: 4, answered: 4, missingRanges: [], runState: "crashed", lastReport: now)
        #expect(crashed.differences(now: now).count == 1)
        #expect(crashed.differences(now: now)[0].contains("killed or crashed"))
        #expect(crashed.differences(now: now)[0].contains("its durable events end at #4"))
        // a run that went silent long ago without a clean end
        let silent = MeterSequenceRow(meterID: "g/4", stored: 4, highest: 4, answered: 4, missingRanges: [], runState: "running", lastReport: now.addingTimeInterval(-600))
        #expect(silent.differences(now: now).first?.contains("has not reported since") == true)
        // huge figures never trap
        let huge = MeterSequenceRow(meterID: "g/5", stored: -Int64.max, highest: Int64.max, answered: 0, missingRanges: [], runState: nil, lastReport: nil)
        #expect(huge.missing == Int64.max)
        let report = ReconciliationReport(tenant: "t", period: "2026-12", rows: [], meters: [whole, gaps])
        #expect(!report.isBalanced)
        #expect(report.text.contains("gateway g/2: 5 answered calls not stored"))
    }
}
