import Foundation

/// The write-ahead spool's file format. A segment starts with a header naming the meter (gateway
/// process run) whose events it holds, followed by framed records, one per event:
///
///     header:  "TGWAL2\n"  u16 length  meter id (UTF-8)
///     record:  u32 length  payload  u32 FNV-1a of the payload      (little-endian)
///
/// Version 2 added one byte at the end of each payload (how the response cache answered the call).
/// Segments are written by one process run and replayed by a later one, so after an upgrade the
/// reader meets version-1 segments: it takes both. The reverse is not supported: a version-1
/// reader cannot read a version-2 segment, so drain the spool (stop cleanly with Postgres up)
/// before downgrading.
///
/// The frame makes a torn tail — a crash in the middle of an append — detectable: reading stops at
/// the first record that is short or fails its check, and everything before it is intact (each
/// append is fsync'd before the events it holds count as durable). Binary rather than JSON: the
/// spool thread encodes every event the gateway answers, ~15× faster this way. Pure.
enum SpoolFormat {
    static let magic: [UInt8] = Array("TGWAL2\n".utf8)
    /// Segments written before the cache byte; still read on replay.
    static let magicVersion1: [UInt8] = Array("TGWAL1\n".utf8)

    static func header(meterID: String) -> [UInt8] {
        let id = Array(meterID.utf8.prefix(Int(UInt16.max)))
        var bytes = magic
        append(UInt16(id.count), to: &bytes)
        bytes += id
        return bytes
    }

    /// Appends one framed event record.
    static func append(_ event: UsageEvent, to bytes: inout [UInt8]) {
        let lengthAt = bytes.count
        append(UInt32(0), to: &bytes)
        let start = bytes.count
        append(event.id, to: &bytes)
        append(event.at.timeIntervalSinceReferenceDate.bitPattern, to: &bytes)
        append(event.tenantID, to: &bytes)
        append(event.apiID ?? nilUUID, to: &bytes)
        append(event.appID ?? nilUUID, to: &bytes)
        append(event.subscriptionID ?? nilUUID, to: &bytes)
        append(event.planID ?? nilUUID, to: &bytes)
        append(UInt64(bitPattern: event.sequence), to: &bytes)
        append(UInt16(clamping: max(0, event.status)), to: &bytes)
        append(UInt64(bitPattern: event.latencyMicroseconds), to: &bytes)
        append(UInt64(bitPattern: event.bytesIn), to: &bytes)
        append(UInt64(bitPattern: event.bytesOut), to: &bytes)
        let rejection = event.rejection.flatMap { UsageEvent.Rejection.allCases.firstIndex(of: $0) }.map { UInt8($0 + 1) } ?? 0
        bytes.append(rejection)
        bytes.append(event.forwarded ? 1 : 0)
        let method = event.method.utf8.prefix(255)
        bytes.append(UInt8(method.count))
        bytes.append(contentsOf: method)
        bytes.append(cacheCode(event.cache))
        let length = UInt32(bytes.count - start)
        withUnsafeBytes(of: length.littleEndian) { raw in
            for (offset, byte) in raw.enumerated() { bytes[lengthAt + offset] = byte }
        }
        append(checksum(bytes[start...]), to: &bytes)
    }

    /// What a segment's bytes hold: its meter id and its intact records, in order. `torn` tells
    /// that bytes after the last intact record were dropped.
    struct Contents: Equatable {
        var meterID: String
        var events: [UsageEvent]
        var torn: Bool
    }

    /// nil when the bytes do not start with a header (not a spool segment, or torn inside it).
    static func read(_ bytes: [UInt8]) -> Contents? {
        var reader = Reader(bytes: bytes)
        let version: Int
        switch reader.take(magic.count).map(Array.init) {
        case magic?: version = 2
        case magicVersion1?: version = 1
        default: return nil
        }
        guard let idLength = reader.uint16(), let id = reader.take(Int(idLength)),
            let meterID = String(bytes: id, encoding: .utf8)
        else { return nil }
        var events: [UsageEvent] = []
        while !reader.atEnd {
            guard let length = reader.uint32(), length <= 4096, let payload = reader.take(Int(length)), let sum = reader.uint32(),
                sum == checksum(payload), let event = decode(payload, version: version)
            else { return Contents(meterID: meterID, events: events, torn: true) }
            events.append(event)
        }
        return Contents(meterID: meterID, events: events, torn: false)
    }

    private static func decode(_ payload: ArraySlice<UInt8>, version: Int) -> UsageEvent? {
        var r = Reader(bytes: Array(payload))
        guard let id = r.uuid(), let at = r.uint64(), let tenant = r.uuid(), let api = r.uuid(), let app = r.uuid(), let subscription = r.uuid(),
            let plan = r.uuid(), let sequence = r.uint64(), let status = r.uint16(), let latency = r.uint64(), let bytesIn = r.uint64(),
            let bytesOut = r.uint64(), let rejection = r.take(1)?.first, let forwarded = r.take(1)?.first, let methodLength = r.take(1)?.first,
            let method = r.take(Int(methodLength))
        else { return nil }
        var cache: UsageEvent.CacheUse?
        if version >= 2 {
            guard let code = r.take(1)?.first, let use = cacheUse(code) else { return nil }
            cache = use
        }
        guard r.atEnd else { return nil }
        let reasons = UsageEvent.Rejection.allCases
        guard rejection == 0 || Int(rejection) <= reasons.count else { return nil }
        func optional(_ id: UUID) -> UUID? { id == nilUUID ? nil : id }
        var event = UsageEvent(
            id: id, at: Date(timeIntervalSinceReferenceDate: Double(bitPattern: at)), tenantID: tenant, apiID: optional(api), appID: optional(app),
            subscriptionID: optional(subscription), planID: optional(plan), method: String(decoding: method, as: UTF8.self), status: Int(status),
            latencyMicroseconds: Int64(bitPattern: latency), bytesIn: Int64(bitPattern: bytesIn), bytesOut: Int64(bitPattern: bytesOut),
            rejection: rejection == 0 ? nil : reasons[Int(rejection) - 1], forwarded: forwarded == 1)
        event.sequence = Int64(bitPattern: sequence)
        event.cache = cache
        return event
    }

    /// 0: the cache took no part; 1, 2, …: `CacheUse.allCases` by position (append new cases last).
    private static func cacheCode(_ use: UsageEvent.CacheUse?) -> UInt8 {
        use.flatMap { UsageEvent.CacheUse.allCases.firstIndex(of: $0) }.map { UInt8($0 + 1) } ?? 0
    }

    /// nil for a code this version does not know (the record is then not trusted).
    private static func cacheUse(_ code: UInt8) -> UsageEvent.CacheUse?? {
        if code == 0 { return .some(nil) }
        let uses = UsageEvent.CacheUse.allCases
        return Int(code) <= uses.count ? .some(uses[Int(code) - 1]) : nil
    }

    static let nilUUID = UUID(uuid: (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0))

    /// 32-bit FNV-1a: catches a torn or garbled record; not a defence against tampering (the spool
    /// is the gateway's own file, mode 0600).
    static func checksum(_ bytes: ArraySlice<UInt8>) -> UInt32 {
        var hash: UInt32 = 0x811c_9dc5
        for byte in bytes {
            hash ^= UInt32(byte)
            hash = hash &* 0x0100_0193
        }
        return hash
    }

    private static func append<T: FixedWidthInteger>(_ value: T, to bytes: inout [UInt8]) {
        withUnsafeBytes(of: value.littleEndian) { bytes.append(contentsOf: $0) }
    }

    private static func append(_ id: UUID, to bytes: inout [UInt8]) {
        withUnsafeBytes(of: id.uuid) { bytes.append(contentsOf: $0) }
    }

    private struct Reader {
        let bytes: [UInt8]
        var offset = 0

        var atEnd: Bool { offset >= bytes.count }

        mutating func take(_ count: Int) -> ArraySlice<UInt8>? {
            guard count >= 0, bytes.count - offset >= count else { return nil }
            defer { offset += count }
            return bytes[offset..<offset + count]
        }

        private mutating func integer<T: FixedWidthInteger>(_: T.Type) -> T? {
            guard let slice = take(MemoryLayout<T>.size) else { return nil }
            var value: T = 0
            for (index, byte) in slice.enumerated() { value |= T(byte) << (8 * index) }
            return value
        }

        mutating func uint16() -> UInt16? { integer(UInt16.self) }
        mutating func uint32() -> UInt32? { integer(UInt32.self) }
        mutating func uint64() -> UInt64? { integer(UInt64.self) }

        mutating func uuid() -> UUID? {
            guard let s = take(16).map(Array.init) else { return nil }
            return UUID(uuid: (s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7], s[8], s[9], s[10], s[11], s[12], s[13], s[14], s[15]))
        }
    }
}
