"""claygraph's exceptions: each says what the user did, where, and what to do instead."""


class ClaygraphError(Exception):
    """Base class of every error that claygraph raises on purpose."""


class DataError(ClaygraphError, ValueError):
    """The data given to claygraph.Data is inconsistent or invalid."""


class ModelError(ClaygraphError):
    """The model could not be traced, or disagrees with its data (plates, dims)."""


class DimError(ClaygraphError):
    """Dim inference found two different dims on one axis."""


class ClusterError(ClaygraphError, ValueError):
    """A ClusterSpec is unknown or invalid."""


class PartitionError(ClaygraphError):
    """No plan can be made for the requested split."""


class RuntimeError_(ClaygraphError, RuntimeError):
    """A runtime failed: a worker died, a collective timed out."""


WorkerError = RuntimeError_
