import Foundation
import NIOConcurrencyHelpers

/// The meter's write-ahead spool on local disk: every event passes through it before Postgres.
///
/// A directory of segment files (`SpoolFormat`), each belonging to one meter run and named
/// `<run>.<number>.wal`, plus one marker file per run, `<run>.run`, locked (`flock`) for as long as
/// the run lives and saying whether it ended cleanly. A run appends to its current segment and
/// fsyncs; the meter seals a segment after a second or so and deletes it once Postgres has
/// confirmed every event in it. A marker nobody holds belongs to a run that is gone: the next
/// meter started on the directory adopts its segments (replays them) and reports how it ended.
/// Several gateways may share a directory; each touches only its own and dead runs' files.
final class WriteAheadSpool: @unchecked Sendable {  // state guarded by `lock`
    struct Segment: Hashable, Sendable, Comparable {
        let run: String
        let number: Int

        static func < (a: Segment, b: Segment) -> Bool { (a.run, a.number) < (b.run, b.number) }
    }

    /// A run found in the directory whose process is gone (its marker lock was free).
    struct DeadRun {
        let run: String
        let meterID: String
        let endedCleanly: Bool
        let segments: [Segment]
        /// Tally totals the run could not report before it stopped (Postgres away at shutdown).
        let tally: [AnsweredCount]
        /// The marker, held locked by the adopting meter until it has reported the run.
        let markerDescriptor: Int32
    }

    enum SpoolError: Error, CustomStringConvertible {
        case cannotOpen(String, Int32), cannotWrite(Int32), full(capBytes: Int64)
        var description: String {
            switch self {
            case .cannotOpen(let path, let code): "cannot open \(path): \(String(cString: strerror(code)))"
            case .cannotWrite(let code): "cannot write the spool: \(String(cString: strerror(code)))"
            case .full(let cap): "the spool holds its cap of \(cap) bytes"
            }
        }
    }

    let directory: String
    let meterID: String
    let run: String
    let capBytes: Int64
    private let lock = NIOLock()
    private var current: (segment: Segment, descriptor: Int32, bytes: Int64, events: Int, opened: Date)?
    private var nextNumber = 1
    private var liveBytes: [Segment: Int64] = [:]
    private var marker: Int32 = -1

    init(directory: String, meterID: String, capBytes: Int64) throws {
        self.directory = directory
        self.meterID = meterID
        self.run = Self.fileSafe(meterID)
        self.capBytes = capBytes
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let path = "\(directory)/\(run).run"
        // close-on-exec, like every descriptor here: a child process inheriting the marker would
        // hold its lock and make the run look alive after it ended
        marker = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard marker >= 0 else { throw SpoolError.cannotOpen(path, errno) }
        _ = flock(marker, LOCK_EX | LOCK_NB)
        try Self.writeMarker(marker, state: "running", meterID: meterID)
        Self.syncDirectory(directory)
    }

    deinit {
        if let current { close(current.descriptor) }
        if marker >= 0 { close(marker) }
    }

    static func fileSafe(_ id: String) -> String {
        String(id.unicodeScalars.map { CharacterSet.alphanumerics.contains($0) && $0.isASCII || "-_".unicodeScalars.contains($0) ? Character($0) : "_" })
    }

    func path(of segment: Segment) -> String { "\(directory)/\(segment.run).\(String(format: "%010d", segment.number)).wal" }

    /// Bytes in segments not yet deleted (this run's and adopted ones).
    var bytes: Int64 { lock.withLock { liveBytes.values.reduce(0, +) } }

    /// Appends events to the current segment (opening one if needed) and fsyncs; returns the
    /// segment and the index of the first event in it. A failed append leaves the segment as it
    /// was (truncated back) and sealed, so a torn record never hides later ones.
    func append(_ events: [UsageEvent]) throws -> (segment: Segment, first: Int) {
        var record: [UInt8] = []
        record.reserveCapacity(events.count * 160)
        for event in events { SpoolFormat.append(event, to: &record) }
        return try lock.withLock {
            let total = liveBytes.values.reduce(0, +)
            guard total + Int64(record.count) <= capBytes else { throw SpoolError.full(capBytes: capBytes) }
            if current == nil { try openSegment() }
            guard var open = current else { throw SpoolError.cannotWrite(EIO) }
            do {
                try Self.writeAll(record, to: open.descriptor)
                guard fsync(open.descriptor) == 0 else { throw SpoolError.cannotWrite(errno) }
            } catch {
                _ = ftruncate(open.descriptor, off_t(open.bytes))
                sealLocked()
                throw error
            }
            let first = open.events
            open.bytes += Int64(record.count)
            open.events += events.count
            current = open
            liveBytes[open.segment] = open.bytes
            return (open.segment, first)
        }
    }

    /// Closes the current segment when it is `maxAge` old or holds `maxEvents`; returns it.
    func sealIfDue(maxEvents: Int, maxAge: TimeInterval, now: Date = Date()) -> Segment? {
        lock.withLock {
            guard let open = current, open.events >= maxEvents || now.timeIntervalSince(open.opened) >= maxAge else { return nil }
            return sealLocked()
        }
    }

    /// Closes the current segment, if any; returns it.
    @discardableResult
    func seal() -> Segment? { lock.withLock { sealLocked() } }

    @discardableResult
    private func sealLocked() -> Segment? {
        guard let open = current else { return nil }
        close(open.descriptor)
        current = nil
        return open.segment
    }

    func delete(_ segment: Segment) {
        lock.withLock {
            if current?.segment == segment { sealLocked() }
            unlink(path(of: segment))
            liveBytes[segment] = nil
        }
    }

    func read(_ segment: Segment) throws -> SpoolFormat.Contents {
        guard let data = FileManager.default.contents(atPath: path(of: segment)) else { throw SpoolError.cannotOpen(path(of: segment), errno) }
        return SpoolFormat.read([UInt8](data)) ?? SpoolFormat.Contents(meterID: meterID, events: [], torn: true)
    }

    /// Counts an adopted segment's bytes as live (they are deleted through `delete`).
    func adopt(_ segment: Segment) {
        let size = ((try? FileManager.default.attributesOfItem(atPath: path(of: segment)))?[.size] as? NSNumber)?.int64Value ?? 0
        lock.withLock { liveBytes[segment] = size }
    }

    /// Marks this run as ended cleanly (the next meter on the directory reports it so should this
    /// one fail to), or removes its marker once Postgres knows.
    func markEnded(reported: Bool) {
        lock.withLock {
            guard marker >= 0 else { return }
            if reported {
                unlink("\(directory)/\(run).run")
            } else {
                try? Self.writeMarker(marker, state: "clean", meterID: meterID)
            }
            // the run is over: the next meter on the directory may adopt what is left
            close(marker)
            marker = -1
        }
    }

    /// Releases a dead run's marker once it is reported (its segments are gone by then).
    func forget(_ dead: DeadRun) {
        unlink("\(directory)/\(dead.run).tally")
        unlink("\(directory)/\(dead.run).run")
        close(dead.markerDescriptor)
    }

    /// Keeps the tally totals a stopping run could not report, beside its marker (not in the
    /// segments: the tally checks the events, so it does not travel with them).
    func keepTally(_ counts: [AnsweredCount]) {
        guard !counts.isEmpty else { return }
        let lines = counts.compactMap { try? JSONEncoder().encode(KeptTally($0)) }.map { String(decoding: $0, as: UTF8.self) }
        let path = "\(directory)/\(run).tally"
        let bytes = Array((lines.joined(separator: "\n") + "\n").utf8)
        let descriptor = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard descriptor >= 0 else { return }
        defer { close(descriptor) }
        try? Self.writeAll(bytes, to: descriptor)
        _ = fsync(descriptor)
    }

    private static func keptTally(at path: String) -> [AnsweredCount] {
        guard let data = FileManager.default.contents(atPath: path) else { return [] }
        return data.split(separator: 0x0a).compactMap { try? JSONDecoder().decode(KeptTally.self, from: Data($0)).count }
    }

    private struct KeptTally: Codable {
        var meter: String
        var tenant: UUID
        var subscription: UUID?
        var hour: Double
        var answered: Int64
        var billable: Int64

        init(_ count: AnsweredCount) {
            meter = count.meterID
            tenant = count.tenantID
            subscription = count.subscriptionID
            hour = count.hour.timeIntervalSince1970
            answered = count.answered
            billable = count.billable
        }

        var count: AnsweredCount {
            AnsweredCount(
                meterID: meter, tenantID: tenant, subscriptionID: subscription, hour: Date(timeIntervalSince1970: hour), answered: answered, billable: billable)
        }
    }

    /// Runs in `directory` whose process is gone, oldest segments first; their markers come back
    /// locked, so two meters starting together never adopt the same run.
    func deadRuns() -> [DeadRun] {
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: directory) else { return [] }
        var found: [DeadRun] = []
        for name in names.sorted() where name.hasSuffix(".run") {
            let runName = String(name.dropLast(4))
            guard runName != run else { continue }
            let descriptor = open("\(directory)/\(name)", O_RDWR | O_CLOEXEC)
            guard descriptor >= 0 else { continue }
            guard flock(descriptor, LOCK_EX | LOCK_NB) == 0 else {
                close(descriptor)
                continue
            }
            let text = (FileManager.default.contents(atPath: "\(directory)/\(name)")).map { String(decoding: $0, as: UTF8.self) } ?? ""
            let words = text.split(separator: " ", maxSplits: 1).map(String.init)
            let segments = names.compactMap { file -> Segment? in
                guard file.hasPrefix(runName + "."), file.hasSuffix(".wal"), let number = Int(file.dropFirst(runName.count + 1).dropLast(4)) else { return nil }
                return Segment(run: runName, number: number)
            }.sorted()
            found.append(
                DeadRun(
                    run: runName, meterID: words.count == 2 ? words[1].trimmingCharacters(in: .whitespacesAndNewlines) : runName,
                    endedCleanly: words.first == "clean", segments: segments, tally: Self.keptTally(at: "\(directory)/\(runName).tally"),
                    markerDescriptor: descriptor))
        }
        return found
    }

    private func openSegment() throws {
        let segment = Segment(run: run, number: nextNumber)
        nextNumber += 1
        let path = path(of: segment)
        let descriptor = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0o600)
        guard descriptor >= 0 else { throw SpoolError.cannotOpen(path, errno) }
        let header = SpoolFormat.header(meterID: meterID)
        do {
            try Self.writeAll(header, to: descriptor)
            guard fsync(descriptor) == 0 else { throw SpoolError.cannotWrite(errno) }
        } catch {
            close(descriptor)
            unlink(path)
            throw error
        }
        // the new file's name must survive a crash too
        Self.syncDirectory(directory)
        current = (segment, descriptor, Int64(header.count), 0, Date())
        liveBytes[segment] = Int64(header.count)
    }

    private static func writeAll(_ bytes: [UInt8], to descriptor: Int32) throws {
        try bytes.withUnsafeBytes { raw in
            var offset = 0
            while offset < raw.count {
                let n = write(descriptor, raw.baseAddress!.advanced(by: offset), raw.count - offset)
                if n < 0 && errno == EINTR { continue }
                guard n > 0 else { throw SpoolError.cannotWrite(n < 0 ? errno : ENOSPC) }
                offset += n
            }
        }
    }

    private static func writeMarker(_ descriptor: Int32, state: String, meterID: String) throws {
        let bytes = Array("\(state) \(meterID)\n".utf8)
        _ = ftruncate(descriptor, 0)
        guard pwrite(descriptor, bytes, bytes.count, 0) == bytes.count, fsync(descriptor) == 0 else { throw SpoolError.cannotWrite(errno) }
    }

    private static func syncDirectory(_ directory: String) {
        let descriptor = open(directory, O_RDONLY | O_CLOEXEC)
        guard descriptor >= 0 else { return }
        _ = fsync(descriptor)
        close(descriptor)
    }
}
