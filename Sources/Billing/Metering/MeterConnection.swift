import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import PostgresNIO

/// Runs an operation with a deadline that really ends the wait: the caller gets `Expired` at the
/// deadline whatever the operation does, and `onExpiry` can cut the operation's ground away
/// (close its connection). A task-group timeout is not enough: a group waits for every child,
/// and a query waiting on a connection that never answers does not return when cancelled — the
/// way the old meter froze for good during a Postgres outage.
///
/// A caller that gives up first (cancellation, e.g. an enclosing deadline) abandons the operation
/// just the same, so `onExpiry` runs then too: a connection left with a query in flight must not
/// serve the next one.
public enum Deadline {
    public struct Expired: Error, CustomStringConvertible {
        public let limit: Duration
        public var description: String { "Postgres did not answer within \(limit)" }
    }

    public static func run<T: Sendable>(
        _ limit: Duration, onExpiry: @escaping @Sendable () -> Void = {}, _ body: @escaping @Sendable () async throws -> T
    ) async throws -> T {
        let waiter = NIOLockedValueBox<CheckedContinuation<T, any Error>?>(nil)
        let tasks = NIOLockedValueBox<(work: Task<Void, Never>?, timer: Task<Void, Never>?)>((nil, nil))
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { continuation in
                waiter.withLockedValue { $0 = continuation }
                let work = Task {
                    let result: Result<T, any Error>
                    do { result = .success(try await body()) } catch { result = .failure(error) }
                    if let continuation = waiter.withLockedValue({ w in defer { w = nil }; return w }) {
                        tasks.withLockedValue { $0.timer }?.cancel()
                        continuation.resume(with: result)
                    }
                }
                let timer = Task {
                    try? await Task.sleep(for: limit)
                    guard !Task.isCancelled, let continuation = waiter.withLockedValue({ w in defer { w = nil }; return w }) else { return }
                    work.cancel()
                    onExpiry()
                    continuation.resume(throwing: Expired(limit: limit))
                }
                tasks.withLockedValue { $0 = (work, timer) }
            }
        } onCancel: {
            let (work, timer) = tasks.withLockedValue { $0 }
            work?.cancel()
            timer?.cancel()
            guard let continuation = waiter.withLockedValue({ w in defer { w = nil }; return w }) else { return }
            onExpiry()
            continuation.resume(throwing: CancellationError())
        }
    }
}

/// A database error in words an operator can act on. `PSQLError`'s own description is a fixed
/// placeholder (it hides query text); this names the server's message, or the connection failure
/// underneath, and never the query or its values.
public enum DatabaseErrorText {
    public static func describe(_ error: any Error) -> String {
        switch error {
        case let error as PostgresTransactionError:
            if let inner = error.beginError ?? error.closureError ?? error.commitError ?? error.rollbackError { return describe(inner) }
            return "the transaction failed"
        case let error as PSQLError:
            if let message = error.serverInfo?[.message] {
                let state = error.serverInfo?[.sqlState].map { " (SQLSTATE \($0))" } ?? ""
                return "Postgres: \(message)\(state)"
            }
            let underlying = error.underlying.map { ": \(describe($0))" } ?? ""
            switch error.code {
            case .connectionError: return "cannot connect to Postgres\(underlying)"
            case .serverClosedConnection: return "Postgres closed the connection\(underlying)"
            case .clientClosedConnection: return "the connection to Postgres was closed\(underlying)"
            case .poolClosed: return "the Postgres client has shut down"
            default: return "Postgres client error \(error.code)\(underlying)"
            }
        case let error as IOError:
            return String(cString: strerror(error.errnoCode))
        case let error as NIOConnectionError:
            if let first = error.connectionErrors.first { return "\(first.target): \(describe(first.error))" }
            return "connection failed"
        default:
            return "\(error)"
        }
    }
}

/// One connection of the meter's own, outside the shared `PostgresClient` pool: the pool queues
/// queries while it cannot connect instead of failing them, and a queued query cannot be
/// abandoned. This one is (re)opened on demand, and closed when an operation on it passes its
/// deadline, which fails whatever was waiting on it. One operation at a time.
public final class MeterConnection: Sendable {
    private let configuration: PostgresConnection.Configuration
    private let logger: Logger
    private let current = NIOLockedValueBox<PostgresConnection?>(nil)
    private static let ids = NIOLockedValueBox(0)

    public init(configuration: PostgresConnection.Configuration, logger: Logger) {
        var configuration = configuration
        configuration.options.connectTimeout = .seconds(3)
        self.configuration = configuration
        self.logger = logger
    }

    public func run<T: Sendable>(deadline: Duration, _ body: @escaping @Sendable (PostgresConnection) async throws -> T) async throws -> T {
        try await Deadline.run(deadline, onExpiry: { [self] in abandon() }) { [self] in
            let connection = try await open()
            do {
                return try await body(connection)
            } catch {
                // only this operation's connection: an abandoned body failing late must not
                // close the one that replaced it
                if connection.isClosed { abandon(connection) }
                throw error
            }
        }
    }

    private func open() async throws -> PostgresConnection {
        if let connection = current.withLockedValue({ $0 }), !connection.isClosed { return connection }
        let id = Self.ids.withLockedValue { id in
            id += 1
            return id
        }
        let connection = try await PostgresConnection.connect(
            on: MultiThreadedEventLoopGroup.singleton.next(), configuration: configuration, id: id, logger: logger
        ).get()
        current.withLockedValue { $0 = connection }
        return connection
    }

    /// Forgets the connection (only if it is still `which`, when given) and closes it; the next
    /// operation opens a new one.
    public func abandon(_ which: PostgresConnection? = nil) {
        let connection = current.withLockedValue { c -> PostgresConnection? in
            guard let held = c, which.map({ $0 === held }) ?? true else { return nil }
            c = nil
            return held
        }
        // held until closed: a connection must not be released while still open
        connection?.close().whenComplete { _ in withExtendedLifetime(connection) {} }
    }

    /// Closes the connection for good (at shutdown), waiting until it is closed.
    public func close() async {
        let connection = current.withLockedValue { c in defer { c = nil }; return c }
        try? await connection?.close()
    }
}

/// A few `MeterConnection`s for writes that run side by side: each write takes a free one.
final class MeterConnections: Sendable {
    private let configuration: PostgresConnection.Configuration
    private let logger: Logger
    private let free = NIOLockedValueBox<[MeterConnection]>([])

    init(configuration: PostgresConnection.Configuration, logger: Logger) {
        self.configuration = configuration
        self.logger = logger
    }

    func run<T: Sendable>(deadline: Duration, _ body: @escaping @Sendable (PostgresConnection) async throws -> T) async throws -> T {
        let connection = free.withLockedValue { $0.popLast() } ?? MeterConnection(configuration: configuration, logger: logger)
        defer { free.withLockedValue { $0.append(connection) } }
        return try await connection.run(deadline: deadline, body)
    }

    func closeAll() async {
        for connection in free.withLockedValue({ $0 }) { await connection.close() }
    }
}
