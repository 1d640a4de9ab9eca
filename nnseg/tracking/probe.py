"""Is an ``mlflow server`` answering? One plain HTTP request with an explicit timeout, no retries."""

from __future__ import annotations

import ssl
import urllib.error
import urllib.parse
import urllib.request

from nnseg.tracking.base import TrackingError

PROBE_TIMEOUT_S = 2.0


def probe_server(tracking_uri: str, experiment: str, timeout_s: float = PROBE_TIMEOUT_S) -> None:
    """Ask an ``mlflow server``'s REST API one question, once, waiting at most ``timeout_s`` seconds.

    The question (``GET <uri>/api/2.0/mlflow/experiments/get-by-name``) goes where MLflow's own calls go,
    path prefix included. Any answer below 500 (found, not found, unauthorised...) counts as alive, and so
    does a TLS error (TLS may be set up differently for MLflow): MLflow's own call then decides.

    Raises:
        TrackingError: nothing answers (refused, timed out, unknown host) or the server answers 5xx.
    """
    query = urllib.parse.urlencode({"experiment_name": experiment})
    url = f"{tracking_uri.rstrip('/')}/api/2.0/mlflow/experiments/get-by-name?{query}"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            response.read(64)
    except urllib.error.HTTPError as exc:
        exc.close()
        if exc.code >= 500:
            raise TrackingError(f"the MLflow server at {tracking_uri} answers HTTP {exc.code} ({exc.reason})") from None
    except urllib.error.URLError as exc:
        if not isinstance(exc.reason, ssl.SSLError):
            raise TrackingError(f"no MLflow server answers at {tracking_uri} ({exc.reason})") from None
    except (OSError, ValueError) as exc:  # timeouts, resets, malformed URLs
        raise TrackingError(f"no MLflow server answers at {tracking_uri} ({exc or type(exc).__name__})") from None
