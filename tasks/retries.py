"""Which failures deserve a retry: transient ones only (CUDA OOM, dropped connections, HTTP 5xx).

A bad video, a broken manifest row or a model that answers garbage fails once, clearly.
"""

from __future__ import annotations

from v2t_foley.foley_core.errors import InputError, TransientBackendError


def is_transient_error(error: BaseException) -> bool:
    if isinstance(error, InputError):
        return False
    if isinstance(error, TransientBackendError | ConnectionError | TimeoutError):
        return True
    name = type(error).__name__
    # torch.OutOfMemoryError, httpx/aiohttp transport errors, botocore endpoint errors: by name, so this
    # module needs none of those libraries
    return name in {
        "OutOfMemoryError",
        "TransportError",
        "ConnectError",
        "ReadTimeout",
        "ClientConnectionError",
        "ServerDisconnectedError",
        "EndpointConnectionError",
    }


def retry_transient(task, task_run, state) -> bool:
    """Prefect retry_condition_fn: retry only transient faults."""
    try:
        state.result()
    except BaseException as error:  # the failed state re-raises its exception here
        return is_transient_error(error)
    return False
