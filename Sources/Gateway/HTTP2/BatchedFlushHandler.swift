import NIOCore

/// The HTTP/2 client connections of one event loop whose socket flush waits for the end of the loop's
/// current round. Answers to a connection's streams are mostly made while the loop handles the
/// readiness of many upstream sockets one after the other (not during the client connection's own
/// read, where NIOHTTP2 already makes one flush of its streams' flushes): flushed at once, each
/// answer is a `write` of its own. Held until the round's I/O is done, the answers made in the same
/// round leave in one — as nginx writes them. One task per round runs the held flushes: the loop
/// runs tasks after the I/O events of a round (NIO's `SelectableEventLoop`), so nothing waits longer
/// than the round it was made in. Confined to its event loop.
final class LoopFlushBatch {
    private let eventLoop: any EventLoop
    private var held: [BatchedFlushHandler] = []
    /// The list being flushed (kept to reuse its storage: a flush may hold again meanwhile).
    private var flushing: [BatchedFlushHandler] = []
    private var scheduled = false
    /// Made once: handing the loop a stored closure allocates nothing per round.
    private lazy var flushTask: () -> Void = { [weak self] in self?.flushHeld() }

    init(eventLoop: any EventLoop) {
        self.eventLoop = eventLoop
    }

    /// `handler`'s flush is done at the end of this round (the handler holds it once per round).
    func hold(_ handler: BatchedFlushHandler) {
        held.append(handler)
        guard !scheduled else { return }
        scheduled = true
        eventLoop.assumeIsolatedUnsafeUnchecked().execute(flushTask)
    }

    private func flushHeld() {
        scheduled = false
        swap(&held, &flushing)
        for handler in flushing { handler.flushHeld() }
        flushing.removeAll(keepingCapacity: true)
    }
}

/// Between an HTTP/2 connection's NIOHTTP2 handler and its socket (or its TLS handler): holds the
/// connection's flushes for its loop's `LoopFlushBatch`, so that the frames written during one
/// round of the loop reach the socket in one write. Writes pass as they are; a close first flushes
/// what is held (a GOAWAY written and flushed just before the close still goes out).
final class BatchedFlushHandler: ChannelOutboundHandler {
    typealias OutboundIn = IOData

    private let batch: LoopFlushBatch
    private var context: ChannelHandlerContext?
    /// A flush is held for the end of the round.
    private var holding = false

    init(batch: LoopFlushBatch) {
        self.batch = batch
    }

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }

    func handlerRemoved(context: ChannelHandlerContext) {
        releaseHeld(context: context)
        self.context = nil
    }

    func flush(context: ChannelHandlerContext) {
        guard !holding else { return }
        holding = true
        batch.hold(self)
    }

    func close(context: ChannelHandlerContext, mode: CloseMode, promise: EventLoopPromise<Void>?) {
        releaseHeld(context: context)
        context.close(mode: mode, promise: promise)
    }

    /// The round ended: the held flush goes to the socket.
    func flushHeld() {
        guard let context else { return }
        releaseHeld(context: context)
    }

    private func releaseHeld(context: ChannelHandlerContext) {
        guard holding else { return }
        holding = false
        context.flush()
    }
}
