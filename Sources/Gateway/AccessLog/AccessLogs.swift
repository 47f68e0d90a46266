import AsyncHTTPClient
import Foundation
import Logging
import Metrics
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import ServiceLifecycle
import UnixSignals

/// The gateway's access-log sinks, the after-call phase's I/O: the installation's file
/// (`TOLLGATE_ACCESS_LOG`) and HTTP collector (`TOLLGATE_HTTP_LOG_URL`), and the per-API
/// `http_log` sinks, kept across snapshot reloads while their configuration stays the same.
///
/// As a Service it writes the file from the blocking-I/O thread pool, reopens it on SIGUSR1,
/// records the buffer gauges, and at shutdown (after the gateway drained) writes and sends
/// what is left, counting what could not go.
public final class AccessLogs: Service, Sendable {
    public struct Configuration: Sendable {
        public var filePath: String?
        /// Bytes the file sink's buffer holds at most (more lines are dropped and counted).
        public var fileBufferBytes = 16 << 20
        public var httpURL: URL?
        /// The installation sink's `Authorization` value (`TOLLGATE_HTTP_LOG_AUTHORIZATION`).
        public var httpAuthorization: String?
        public var httpLimits = LogBatcher.Limits()
        /// Records each per-API sink holds at most.
        public var apiSinkCapacity = 2_000
        /// How often the file is written and the HTTP sinks look for due batches.
        public var tick: TimeAmount = .milliseconds(200)
        public var metricsFactory: (any MetricsFactory)?

        public init(filePath: String? = nil, httpURL: URL? = nil, httpAuthorization: String? = nil) {
            self.filePath = filePath
            self.httpURL = httpURL
            self.httpAuthorization = httpAuthorization
        }
    }

    /// The installation's sinks; both nil when neither is configured.
    public let file: AccessLogFile?
    public let http: HTTPLogSink?
    private let configuration: Configuration
    private let client: HTTPClient
    private let apiMetrics: LogSinkMetrics
    private let logger: Logger

    private struct Key: Hashable {
        var tenantID: UUID
        var apiID: UUID
        var config: HTTPLogConfig
    }

    private let apiSinks = NIOLockedValueBox<[Key: HTTPLogSink]>([:])
    private static let unknownTenant = UUID(uuidString: "00000000-0000-0000-0000-000000000000")!
    private let stopped = NIOLockedValueBox(false)

    public init(configuration: Configuration, logger: Logger) {
        self.configuration = configuration
        self.logger = logger
        var clientConfiguration = HTTPClient.Configuration(redirectConfiguration: .disallow, timeout: .init(connect: .seconds(5), read: .seconds(10)))
        clientConfiguration.connectionPool.idleTimeout = .seconds(30)
        // a refused connection fails the attempt at once: the batcher owns retries and their
        // backoff (the pool would otherwise keep reconnecting until the request's deadline)
        clientConfiguration.connectionPool.retryConnectionEstablishment = false
        let client = HTTPClient(eventLoopGroup: MultiThreadedEventLoopGroup.singleton, configuration: clientConfiguration)
        self.client = client
        file = configuration.filePath.map {
            AccessLogFile(path: $0, capacityBytes: configuration.fileBufferBytes, metrics: LogSinkMetrics(sink: "file", factory: configuration.metricsFactory))
        }
        http = configuration.httpURL.map {
            HTTPLogSink(
                url: $0, authorization: configuration.httpAuthorization, limits: configuration.httpLimits, client: client,
                metrics: LogSinkMetrics(sink: "http", factory: configuration.metricsFactory), tick: configuration.tick)
        }
        apiMetrics = LogSinkMetrics(sink: "api_http", factory: configuration.metricsFactory)
        http?.start()
    }

    deinit {
        // never run as a Service (tests, a failed start): the client must still be shut down, and
        // this does not wait; after `run` it is already down and this fails quietly
        client.shutdown().whenComplete { _ in }
    }

    /// Whether every call is logged (a sink for the whole installation is configured); when not,
    /// the gateway builds records only for APIs with an `http_log` policy.
    public var installationWide: Bool { file != nil || http != nil }

    /// Writes one record to the installation's sinks.
    func record(_ line: String) {
        file?.append(line)
        http?.append(line)
    }

    /// The per-API sinks for a snapshot's `http_log` policies (one per API: the first of its
    /// chain; `tenants` names each API's tenant). A sink whose API and configuration are
    /// unchanged is the same object as before, so a reload loses nothing it holds; a sink no
    /// longer wanted is flushed and stopped. With `onlyTenant` (a tenant's reload) the other
    /// tenants' sinks are left as they are.
    public func apiSinks(for configs: [UUID: HTTPLogConfig], tenants: [UUID: UUID] = [:], onlyTenant: UUID? = nil) -> [UUID: HTTPLogSink] {
        var result: [UUID: HTTPLogSink] = [:]
        let removed: [HTTPLogSink] = apiSinks.withLockedValue { table in
            var next: [Key: HTTPLogSink] = onlyTenant.map { only in table.filter { $0.key.tenantID != only } } ?? [:]
            for (apiID, config) in configs {
                let key = Key(tenantID: tenants[apiID] ?? onlyTenant ?? Self.unknownTenant, apiID: apiID, config: config)
                if let kept = table[key] {
                    next[key] = kept
                } else if let url = URL(string: config.url) {
                    var limits = LogBatcher.Limits(
                        capacity: configuration.apiSinkCapacity, batchSize: config.batchSize, flushNanoseconds: UInt64(config.flushSeconds) * 1_000_000_000)
                    limits.maxAttempts = configuration.httpLimits.maxAttempts
                    limits.baseBackoffNanoseconds = configuration.httpLimits.baseBackoffNanoseconds
                    limits.maxBackoffNanoseconds = configuration.httpLimits.maxBackoffNanoseconds
                    let sink = HTTPLogSink(url: url, authorization: nil, limits: limits, client: client, metrics: apiMetrics, tick: configuration.tick)
                    sink.start()
                    next[key] = sink
                }
                if let sink = next[key] { result[apiID] = sink }
            }
            let gone = table.filter { next[$0.key] == nil }.map(\.value)
            table = next
            return gone
        }
        if !removed.isEmpty {
            Task { for sink in removed { await sink.shutdown(deadline: .now() + .seconds(5)) } }
        }
        return result
    }

    public func run() async throws {
        if let file {
            do {
                try file.open()
            } catch {
                logger.error("the access log file cannot be opened; lines are dropped until it can", metadata: ["error": "\(error)"])
            }
        }
        await withGracefulShutdownHandler {
            await withTaskGroup(of: Void.self) { group in
                if let file {
                    group.addTask {
                        for await _ in await UnixSignalsSequence(trapping: .sigusr1) {
                            file.reopen()
                            _ = try? await NIOThreadPool.singleton.runIfActive { file.writeQueued() }
                        }
                    }
                }
                group.addTask { await self.tickLoop() }
                _ = await group.next()
                group.cancelAll()
            }
        } onGracefulShutdown: {
            self.stopped.withLockedValue { $0 = true }
        }
        await shutdown()
    }

    private func tickLoop() async {
        let interval = Duration.nanoseconds(max(1_000_000, configuration.tick.nanoseconds))
        while !stopped.withLockedValue({ $0 }) && !Task.isCancelled {
            try? await Task.sleep(for: interval)
            if let file { _ = try? await NIOThreadPool.singleton.runIfActive { file.writeQueued() } }
            recordGauges()
        }
    }

    /// `tollgate_gateway_log_buffer_records{sink}`: records held per kind of sink.
    public func recordGauges() {
        let factory = configuration.metricsFactory ?? MetricsSystem.factory
        if let file { Gauge(label: "tollgate_gateway_log_buffer_records", dimensions: [("sink", "file")], factory: factory).record(file.depth) }
        if let http { Gauge(label: "tollgate_gateway_log_buffer_records", dimensions: [("sink", "http")], factory: factory).record(http.depth) }
        let apiDepth = apiSinks.withLockedValue { $0.values.reduce(0) { $0 + $1.depth } }
        Gauge(label: "tollgate_gateway_log_buffer_records", dimensions: [("sink", "api_http")], factory: factory).record(apiDepth)
    }

    /// Writes the file's last lines and sends what the HTTP sinks hold (once, within 5 s).
    private func shutdown() async {
        stopped.withLockedValue { $0 = true }
        if let file { _ = try? await NIOThreadPool.singleton.runIfActive { file.close() } }
        let deadline = NIODeadline.now() + .seconds(5)
        await http?.shutdown(deadline: deadline)
        let sinks = apiSinks.withLockedValue { table in
            let all = Array(table.values)
            table = [:]
            return all
        }
        for sink in sinks { await sink.shutdown(deadline: deadline) }
        try? await client.shutdown()
    }
}
