import AsyncHTTPClient
import Foundation
import Metrics
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1

/// The sent and dropped counters of one kind of sink (`sink` label: `file`, `http`, `api_http`),
/// made once and shared by its sinks.
public struct LogSinkMetrics: Sendable {
    let sent: Counter
    let dropped: [LogBatcher.DropReason: Counter]

    public init(sink: String, factory: (any MetricsFactory)? = nil) {
        let factory = factory ?? MetricsSystem.factory
        sent = Counter(label: "tollgate_gateway_log_records_sent_total", dimensions: [("sink", sink)], factory: factory)
        var dropped: [LogBatcher.DropReason: Counter] = [:]
        for reason in LogBatcher.DropReason.allCases {
            dropped[reason] = Counter(
                label: "tollgate_gateway_log_records_dropped_total", dimensions: [("sink", sink), ("reason", reason.rawValue)], factory: factory)
        }
        self.dropped = dropped
    }

    func drop(_ reason: LogBatcher.DropReason, count: Int) {
        if count > 0 { dropped[reason]?.increment(by: Int64(count)) }
    }

    func sent(_ count: Int) {
        if count > 0 { sent.increment(by: Int64(count)) }
    }
}

/// Ships access-log records to a collector: `append` (from any event loop) only queues under a
/// short lock; batches leave from the sink's own event loop through AsyncHTTPClient, as NDJSON
/// POSTs, following `LogBatcher`'s rules (bounded buffer, batch size, flush interval, retries with
/// backoff and jitter, a bound on attempts). Nothing here waits on I/O in the caller.
public final class HTTPLogSink: Sendable {
    public let url: URL
    private let headers: HTTPHeaders
    private let client: HTTPClient
    private let loop: any EventLoop
    private let metrics: LogSinkMetrics
    private let batcher: NIOLockedValueBox<LogBatcher>
    private let ticker = NIOLockedValueBox<RepeatedTask?>(nil)
    private let tick: TimeAmount
    private let requestTimeout: TimeAmount

    /// - Parameters:
    ///   - authorization: the `Authorization` header value (installation-wide sink only, from the
    ///     environment); never logged.
    ///   - tick: how often the sink looks for a due batch (the flush interval's granularity).
    public init(
        url: URL, authorization: String?, limits: LogBatcher.Limits, client: HTTPClient, metrics: LogSinkMetrics, tick: TimeAmount = .seconds(1),
        requestTimeout: TimeAmount = .seconds(10)
    ) {
        self.url = url
        var headers = HTTPHeaders([("Content-Type", "application/x-ndjson"), ("User-Agent", "tollgate-gateway")])
        if let authorization { headers.add(name: "Authorization", value: authorization) }
        self.headers = headers
        self.client = client
        self.loop = client.eventLoopGroup.next()
        self.metrics = metrics
        self.batcher = NIOLockedValueBox(LogBatcher(limits: limits))
        self.tick = tick
        self.requestTimeout = requestTimeout
    }

    /// Starts the clock that sends batches whose flush interval passed.
    public func start() {
        let task = loop.scheduleRepeatedTask(initialDelay: tick, delay: tick) { [self] _ in pump() }
        ticker.withLockedValue { $0 = task }
    }

    /// Queues one record (a JSON line); a full buffer drops it and counts it (`buffer_full`).
    public func append(_ line: String) {
        let result = batcher.withLockedValue { $0.append(line, now: DispatchTime.now().uptimeNanoseconds) }
        switch result {
        case .dropped: metrics.drop(.bufferFull, count: 1)
        case .queued(wake: true): loop.execute { [self] in pump() }
        case .queued: break
        }
    }

    /// Records held (queued, in flight, waiting for a retry), for the buffer gauge.
    public var depth: Int { batcher.withLockedValue { $0.depth } }

    /// Sends the due batch, if any; on the sink's loop.
    private func pump() {
        guard case .send(let batch) = batcher.withLockedValue({ $0.next(now: DispatchTime.now().uptimeNanoseconds) }) else { return }
        post(batch.records).whenComplete { [self] result in
            let retryable: Bool
            switch result {
            case .success(let response) where (200..<300).contains(response.status.code):
                metrics.sent(batcher.withLockedValue { $0.succeeded() })
                return pump()  // more may be waiting
            case .success(let response):
                let code = response.status.code
                retryable = code >= 500 || code == 408 || code == 429
            case .failure(let error):
                retryable = !(error is InvalidRequest)
            }
            let failure = batcher.withLockedValue {
                $0.failed(retryable: retryable, now: DispatchTime.now().uptimeNanoseconds, jitter: Double.random(in: 0..<1))
            }
            switch failure {
            case .retry(let at):
                loop.scheduleTask(deadline: .uptimeNanoseconds(at)) { [self] in pump() }
            case .dropped(let count, let reason):
                metrics.drop(reason, count: count)
                pump()
            }
        }
    }

    private struct InvalidRequest: Error {}

    private func post(_ records: [String]) -> EventLoopFuture<HTTPClient.Response> {
        var body = ByteBuffer()
        body.reserveCapacity(records.reduce(0) { $0 + $1.utf8.count })
        for record in records { body.writeString(record) }
        guard let request = try? HTTPClient.Request(url: url, method: .POST, headers: headers, body: .byteBuffer(body)) else {
            return loop.makeFailedFuture(InvalidRequest())
        }
        return client.execute(request: request, eventLoop: .delegate(on: loop), deadline: .now() + requestTimeout)
    }

    /// At shutdown: stops the clock and sends what is held once more, without retries, until
    /// `deadline`; what is not delivered is counted as dropped (`shutdown`).
    public func shutdown(deadline: NIODeadline) async {
        ticker.withLockedValue { $0?.cancel() }
        let records = batcher.withLockedValue { $0.drainAll() }
        let size = max(1, batcher.withLockedValue { $0.limits.batchSize })
        var start = 0
        while start < records.count {
            let chunk = Array(records[start..<min(records.count, start + size)])
            guard NIODeadline.now() < deadline, let response = try? await post(chunk).get(), (200..<300).contains(response.status.code) else { break }
            metrics.sent(chunk.count)
            start += chunk.count
        }
        metrics.drop(.shutdown, count: records.count - start)
    }
}
