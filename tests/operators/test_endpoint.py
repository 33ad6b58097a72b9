"""Which endpoint and credentials the Compute clients use, and that the client connects where we checked."""

from __future__ import annotations

import pytest
import requests
from google.auth.credentials import AnonymousCredentials
from google.cloud import compute_v1
from urllib3.util import parse_url

from gce_vm_backup.compute.endpoint import ALLOWED_HOSTS_KEY, ENV_VAR, ComputeEndpoint
from gce_vm_backup.errors import ConfigError

EXTRA = "connection extra 'compute_endpoint'"


def resolve(url, **extra):
    return ComputeEndpoint.resolve({"compute_endpoint": url, **extra}, environ={})


def where_the_client_connects(endpoint: ComputeEndpoint) -> tuple[str, str, int | None]:
    """(scheme, host, port) of the URL the real Compute client's REST transport requests."""
    client = compute_v1.InstancesClient(
        credentials=AnonymousCredentials(), client_options=endpoint.client_options()
    )
    url = requests.Request("GET", f"{client._transport._host}/compute/v1/projects/p").prepare().url
    parsed = parse_url(url)
    return parsed.scheme, parsed.host, parsed.port


@pytest.mark.parametrize(
    ("url", "normalized"),
    [
        ("http://127.0.0.1:8089", "http://127.0.0.1:8089"),
        ("http://localhost:1", "http://localhost:1"),
        ("http://[::1]:9", "http://[::1]:9"),
        ("http://127.5.0.1", "http://127.5.0.1"),
        ("HTTP://127.0.0.1:8089", "http://127.0.0.1:8089"),
        ("Http://LocalHost:8089/", "http://localhost:8089"),
        ("  http://127.0.0.1:8089\n", "http://127.0.0.1:8089"),
    ],
)
def test_plain_http_on_loopback_is_anonymous_and_normalized(url, normalized):
    endpoint = resolve(url)
    assert endpoint.anonymous is True
    assert endpoint.client_options() == {"api_endpoint": normalized}


HOSTILE = [
    # passes a loopback check on urlsplit's hostname, while requests connects to evil.com
    ("http://evil.com\\@127.0.0.1", "a backslash"),
    ("http://evil.com\\@127.0.0.1:8089", "a backslash"),
    ("https://compute.googleapis.com\\@evil.com", "a backslash"),
    ("http://127.0.0.1\\.evil.com", "a backslash"),
    ("http://evil.com@127.0.0.1:8089", "user info (@)"),
    ("http://127.0.0.1:8089@evil.com", "user info (@)"),
    ("https://user:pw@compute.googleapis.com", "user info (@)"),
    ("https://compute.googleapis.com@evil.com", "user info (@)"),
    ("http://127.0.0.1 .evil.com", "whitespace or a control character"),
    ("http://127.0.0.1\t:8089", "whitespace or a control character"),
    ("http://127.0.0.1\r\nHost: evil.com", "whitespace or a control character"),
    ("http://127.0.0.1\x00.evil.com", "whitespace or a control character"),
    ("http://127.0.0.1:8089/compute", "a path"),
    ("https://evil.com/x.googleapis.com", "a path"),
    ("https://compute.googleapis.com/../evil", "a path"),
    ("http://127.0.0.1:8089?x=evil.com", "a query or fragment"),
    ("https://evil.com#.googleapis.com", "a query or fragment"),
    ("http://127.0.0.1:80:80", "something that is not scheme://host[:port]"),
    ("http:///127.0.0.1", "a path"),
]


@pytest.mark.parametrize(("url", "what"), HOSTILE)
def test_anything_beyond_scheme_host_port_is_refused_naming_what_it_holds(url, what):
    with pytest.raises(ConfigError) as info:
        resolve(url)
    assert str(info.value).startswith(f"{EXTRA}: {url.strip()!r} is not an endpoint: it holds {what}")
    assert len(info.value.problems) == 1


@pytest.mark.parametrize(("url", "what"), HOSTILE[:2])
def test_the_hostile_values_are_hostile_to_a_naive_check(url, what):
    """Why the check exists: urlsplit (the old check) and requests (the client) read these differently."""
    from urllib.parse import urlsplit

    assert urlsplit(url).hostname == "127.0.0.1"
    assert parse_url(requests.Request("GET", f"{url}/compute/v1").prepare().url).host == "evil.com"


def test_an_uppercase_scheme_would_make_the_client_connect_to_a_host_named_http():
    """Why the scheme is lower-cased: the client library matches it case-sensitively."""
    raw = ComputeEndpoint("HTTP://127.0.0.1:8089", anonymous=True)
    assert where_the_client_connects(raw)[1] == "http"
    assert where_the_client_connects(resolve("HTTP://127.0.0.1:8089")) == ("http", "127.0.0.1", 8089)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8089",
        "HTTP://127.0.0.1:8089",
        "http://LOCALHOST:8089/",
        "http://[::1]:8089",
        "https://compute.googleapis.com",
        "HTTPS://Compute.GoogleAPIs.com:443/",
        "https://compute-xyz.p.googleapis.com",
        "compute-xyz.p.googleapis.com",
        "https://europe-west1-compute.googleapis.com",
    ],
)
def test_what_is_accepted_is_where_the_real_client_connects(url):
    endpoint = resolve(url)
    assert endpoint.api_endpoint is not None
    expected = parse_url(endpoint.api_endpoint)
    assert where_the_client_connects(endpoint) == (expected.scheme, expected.host, expected.port)
    assert expected.host in url.lower()


def test_a_loopback_endpoint_is_really_called_by_the_client(gce_emulator):
    """End to end through the real client: the uppercase-scheme form reaches the emulator."""
    url = gce_emulator.url.replace("http://", "HTTP://") + "/"
    endpoint = resolve(url)
    client = compute_v1.InstancesClient(
        credentials=AnonymousCredentials(), client_options=endpoint.client_options()
    )
    client.get(project="demo-project", zone="us-central1-a", instance="web-1")
    assert [call.method for call in gce_emulator.calls] == ["compute.instances.get"]


@pytest.mark.parametrize(
    "url",
    ["http://10.0.0.5:8089", "http://compute.example.com", "http://169.254.169.254", "http://2130706433"],
)
def test_plain_http_elsewhere_is_refused_naming_the_source(url):
    with pytest.raises(ConfigError, match=f"{EXTRA}: plain http is only allowed on a loopback host"):
        resolve(url)


@pytest.mark.parametrize(
    "url",
    [
        "https://evil.com",
        "https://a.example",
        "https://googleapis.com.evil.com",
        "https://evilgoogleapis.com",
        "https://compute.googleapis.co",
        "https://10.0.0.5",
        "https://127.0.0.1:8089",
        "evil.com",
    ],
)
def test_https_off_google_api_domains_is_refused_because_the_token_would_go_there(url):
    with pytest.raises(ConfigError, match=f"{EXTRA}: '.*' is not a Google API host .* access token") as info:
        resolve(url)
    assert ALLOWED_HOSTS_KEY in str(info.value)


@pytest.mark.parametrize(
    "allowed", [["compute.corp.example"], "compute.corp.example", "other.example, Compute.Corp.Example"]
)
def test_https_to_a_host_the_connection_allows_keeps_real_credentials(allowed):
    endpoint = resolve("https://compute.corp.example:8443", **{ALLOWED_HOSTS_KEY: allowed})
    assert endpoint == ComputeEndpoint("https://compute.corp.example:8443", anonymous=False)
    assert where_the_client_connects(endpoint) == ("https", "compute.corp.example", 8443)


def test_the_allow_list_names_exact_hosts_not_suffixes():
    with pytest.raises(ConfigError, match="is not a Google API host"):
        resolve("https://x.compute.corp.example", **{ALLOWED_HOSTS_KEY: ["compute.corp.example"]})


def test_the_allow_list_does_not_allow_plain_http():
    with pytest.raises(ConfigError, match="plain http is only allowed on a loopback host"):
        resolve("http://compute.corp.example", **{ALLOWED_HOSTS_KEY: ["compute.corp.example"]})


@pytest.mark.parametrize(
    "allowed", [["https://compute.corp.example"], ["*.example"], ["a.example:443"], [1], {"a": 1}, "a b"]
)
def test_an_allow_list_entry_that_is_not_a_host_name_is_refused_naming_the_extra(allowed):
    with pytest.raises(ConfigError, match=f"connection extra '{ALLOWED_HOSTS_KEY}': "):
        resolve("https://compute.googleapis.com", **{ALLOWED_HOSTS_KEY: allowed})


def test_the_connection_allow_list_applies_to_the_environment_variable_too():
    endpoint = ComputeEndpoint.resolve(
        {ALLOWED_HOSTS_KEY: ["compute.corp.example"]}, environ={ENV_VAR: "https://compute.corp.example"}
    )
    assert endpoint.api_endpoint == "https://compute.corp.example"


def test_https_endpoint_keeps_real_credentials():
    endpoint = ComputeEndpoint.resolve({}, environ={ENV_VAR: "https://compute-psc.p.googleapis.com/"})
    assert endpoint == ComputeEndpoint("https://compute-psc.p.googleapis.com", anonymous=False)


def test_connection_extra_wins_over_the_environment():
    endpoint = ComputeEndpoint.resolve(
        {"compute_endpoint": "https://a.googleapis.com"}, environ={ENV_VAR: "https://b.googleapis.com"}
    )
    assert endpoint.api_endpoint == "https://a.googleapis.com"


def test_nothing_configured_means_google_default():
    assert ComputeEndpoint.resolve(None, environ={}).client_options() is None


def test_bad_scheme_names_the_environment_variable():
    with pytest.raises(ConfigError, match=f"environment variable {ENV_VAR}: 'ftp://x' is not an http"):
        ComputeEndpoint.resolve(None, environ={ENV_VAR: "ftp://x"})


def test_a_hostile_environment_value_names_the_environment_variable():
    with pytest.raises(ConfigError, match=f"^environment variable {ENV_VAR}: .* it holds a backslash"):
        ComputeEndpoint.resolve(None, environ={ENV_VAR: "http://evil.com\\@127.0.0.1"})


@pytest.mark.parametrize("url", ["http://127.0.0.1:0", "http://127.0.0.1:65536", "http://[::g]:1"])
def test_ports_and_addresses_out_of_range_are_refused(url):
    with pytest.raises(ConfigError, match=f"^{EXTRA}: "):
        resolve(url)


def test_a_non_string_extra_is_refused_naming_it():
    with pytest.raises(ConfigError, match=f"^{EXTRA}: expected a string"):
        resolve(8089)
