import NIOCore

/// Between an HTTP/2 connection's NIOHTTP2 handler and its socket (or its TLS handler): holds the
/// connection's flushes for its loop's `LoopFlushBatch`, so that the frames written during one
/// round of the loop reach the socket in one write. Writes pass as they are; a close first flushes
/// what is held (a GOAWAY written and flushed just before the close still goes out).
final class BatchedFlushHandler: ChannelOutboundHandler, HeldFlush {
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
