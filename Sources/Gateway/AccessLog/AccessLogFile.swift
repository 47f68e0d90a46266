import Glibc
import Foundation
import NIOConcurrencyHelpers

/// The installation's JSON-lines access log file (`TOLLGATE_ACCESS_LOG`). `append` (from any
/// event loop) only queues the line in a buffer bounded in bytes, under a short lock; a writer
/// off the event loops (`AccessLogs` runs it on the blocking-I/O thread pool) takes everything
/// queued and writes it with `write(2)`. `reopen()` (SIGUSR1, as logrotate's `postrotate` sends)
/// makes the next write go to a file opened afresh at the same path, created with mode 0640.
public final class AccessLogFile: Sendable {
    public let path: String
    public let capacityBytes: Int
    private let metrics: LogSinkMetrics

    private struct Pending {
        var lines: [String] = []
        var bytes = 0
        var reopen = false
    }

    private let pending = NIOLockedValueBox(Pending())
    /// The open descriptor (-1: closed); touched by the writer alone, one write at a time.
    private let descriptor = NIOLockedValueBox<Int32>(-1)

    public init(path: String, capacityBytes: Int = 16 << 20, metrics: LogSinkMetrics) {
        self.path = path
        self.capacityBytes = max(4096, capacityBytes)
        self.metrics = metrics
    }

    /// Opens (creating) the file now, so a path that cannot be written fails at start.
    public func open() throws {
        try descriptor.withLockedValue { fd in
            if fd < 0 { fd = try Self.openFile(path) }
        }
    }

    public func append(_ line: String) {
        let size = line.utf8.count
        let accepted = pending.withLockedValue { pending in
            guard pending.bytes + size <= capacityBytes else { return false }
            pending.lines.append(line)
            pending.bytes += size
            return true
        }
        if !accepted { metrics.drop(.bufferFull, count: 1) }
    }

    /// Asks the writer to close and open the path again before its next write.
    public func reopen() {
        pending.withLockedValue { $0.reopen = true }
    }

    /// Records queued, for the buffer gauge.
    public var depth: Int { pending.withLockedValue { $0.lines.count } }

    /// Writes everything queued (blocking file I/O: call it off the event loops). Returns the
    /// number of lines written; lines that cannot be written are counted as dropped.
    @discardableResult
    public func writeQueued() -> Int {
        let (lines, reopen) = pending.withLockedValue { pending in
            let taken = (pending.lines, pending.reopen)
            pending = Pending()
            return taken
        }
        return descriptor.withLockedValue { fd in
            if reopen || fd < 0 {
                if fd >= 0 { Glibc.close(fd) }
                fd = (try? Self.openFile(path)) ?? -1
            }
            guard !lines.isEmpty else { return 0 }
            guard fd >= 0 else {
                metrics.drop(.writeFailed, count: lines.count)
                return 0
            }
            var chunk: [UInt8] = []
            chunk.reserveCapacity(lines.reduce(0) { $0 + $1.utf8.count })
            for line in lines { chunk.append(contentsOf: line.utf8) }
            if Self.writeAll(fd, chunk) {
                metrics.sent(lines.count)
                return lines.count
            }
            // a failed write (disk full, file system gone): try a fresh descriptor next time
            Glibc.close(fd)
            fd = -1
            metrics.drop(.writeFailed, count: lines.count)
            return 0
        }
    }

    /// Writes what is queued and closes the file (at shutdown).
    public func close() {
        writeQueued()
        descriptor.withLockedValue { fd in
            if fd >= 0 { _ = Glibc.close(fd) }
            fd = -1
        }
    }

    struct OpenFailed: Error, CustomStringConvertible {
        var path: String
        var code: Int32
        var description: String { "cannot open the access log \(path): \(String(cString: strerror(code)))" }
    }

    private static func openFile(_ path: String) throws -> Int32 {
        let fd = Glibc.open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0o640)
        guard fd >= 0 else { throw OpenFailed(path: path, code: errno) }
        return fd
    }

    private static func writeAll(_ fd: Int32, _ bytes: [UInt8]) -> Bool {
        bytes.withUnsafeBytes { buffer in
            var offset = 0
            while offset < buffer.count {
                let written = write(fd, buffer.baseAddress! + offset, buffer.count - offset)
                if written < 0 {
                    if errno == EINTR { continue }
                    return false
                }
                offset += written
            }
            return true
        }
    }
}
