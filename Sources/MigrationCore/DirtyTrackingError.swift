/// A tracker failed while the migration ran.
public enum DirtyTrackingError: Error, Sendable, CustomStringConvertible {
    /// Reading and clearing `tracker`'s dirty pages failed.
    case collectFailed(tracker: String, cause: any Error)

    public var description: String {
        switch self {
        case .collectFailed(let tracker, let cause): "reading the dirty pages of \(tracker) failed: \(cause)"
        }
    }
}
