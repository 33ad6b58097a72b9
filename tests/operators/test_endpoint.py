"""Which endpoint and credentials the Compute clients use."""

from __future__ import annotations

import pytest

from gce_vm_backup.endpoint import ENV_VAR, ComputeEndpoint
from gce_vm_backup.errors import ConfigError


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8089", "http://localhost:1", "http://[::1]:9", "http://127.5.0.1"]
)
def test_plain_http_on_loopback_is_anonymous(url):
    endpoint = ComputeEndpoint.resolve({"compute_endpoint": url}, environ={})
    assert endpoint.anonymous is True
    assert endpoint.client_options() == {"api_endpoint": url}


@pytest.mark.parametrize(
    "url", ["http://10.0.0.5:8089", "http://compute.example.com", "http://169.254.169.254"]
)
def test_plain_http_elsewhere_is_refused_naming_the_source(url):
    with pytest.raises(ConfigError, match="connection extra 'compute_endpoint': plain http is only allowed"):
        ComputeEndpoint.resolve({"compute_endpoint": url}, environ={})


def test_https_endpoint_keeps_real_credentials():
    endpoint = ComputeEndpoint.resolve({}, environ={ENV_VAR: "https://compute-psc.p.googleapis.com/"})
    assert endpoint == ComputeEndpoint("https://compute-psc.p.googleapis.com", anonymous=False)


def test_connection_extra_wins_over_the_environment():
    endpoint = ComputeEndpoint.resolve(
        {"compute_endpoint": "https://a.example"}, environ={ENV_VAR: "https://b.example"}
    )
    assert endpoint.api_endpoint == "https://a.example"


def test_nothing_configured_means_google_default():
    assert ComputeEndpoint.resolve(None, environ={}).client_options() is None


def test_bad_scheme_names_the_environment_variable():
    with pytest.raises(ConfigError, match=f"environment variable {ENV_VAR}: 'ftp://x' is not an http"):
        ComputeEndpoint.resolve(None, environ={ENV_VAR: "ftp://x"})
