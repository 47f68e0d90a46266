import NIOCore

/// A connection whose socket flush can wait for the end of its event loop's round.
protocol HeldFlush: AnyObject {
    /// The round ended: what was written goes to the socket.
    func flushHeld()
}

/// The flushes of one event loop's connections held until the end of the loop's current round.
///
/// Written to a loopback or LAN peer that sleeps in `epoll_wait`, each flush wakes it; when the
/// peer's core is idle that wake-up is an inter-processor interrupt (a VM exit on virtual
/// machines), paid by the gateway's core. Flushed one call at a time, the upstream and the client
/// were woken for almost every call (0.7–0.9 such interrupts per call at 20,000 calls/s, against
/// 0.05 for nginx); held until the round's I/O is done, the requests (and the answers) made in one
/// round leave together, and the peer wakes once for all of them (0.07 per call; see
/// docs/BENCHMARKS.md). HTTP/2 client connections hold their flushes too (`BatchedFlushHandler`):
/// NIOHTTP2 would otherwise write each stream's answer on its own.
///
/// One task per round runs the held flushes: the loop runs tasks after the I/O events of a round
/// (NIO's `SelectableEventLoop`), so nothing waits longer than the round it was made in. Confined
/// to its event loop.
final class LoopFlushBatch {
    private let eventLoop: any EventLoop
    private var held: [any HeldFlush] = []
    /// The list being flushed (kept to reuse its storage: a flush may hold again meanwhile).
    private var flushing: [any HeldFlush] = []
    private var scheduled = false
    /// Made once: handing the loop a stored closure allocates nothing per round.
    private lazy var flushTask: () -> Void = { [weak self] in self?.flushHeld() }

    init(eventLoop: any EventLoop) {
        self.eventLoop = eventLoop
    }

    /// `connection`'s flush is done at the end of this round. Holding one twice in a round flushes
    /// it twice, which costs nothing: the second finds nothing pending.
    func hold(_ connection: any HeldFlush) {
        held.append(connection)
        guard !scheduled else { return }
        scheduled = true
        eventLoop.assumeIsolatedUnsafeUnchecked().execute(flushTask)
    }

    private func flushHeld() {
        scheduled = false
        swap(&held, &flushing)
        for connection in flushing { connection.flushHeld() }
        flushing.removeAll(keepingCapacity: true)
    }
}

extension UpstreamConnection: HeldFlush {
    func flushHeld() { channel.flush() }
}
