"""instances.insert of a rebuilt VM in the emulator: the settings a restore takes from a manifest
(service account, scheduling, network tags, metadata) are kept as sent, through the real client; what the
emulator does not model, or the reference refuses, is 400."""

from __future__ import annotations

import copy
import uuid

import pytest
from google.auth.credentials import AnonymousCredentials
from google.cloud import compute_v1

from gce_emulator import Emulator

pytestmark = pytest.mark.emulator

P, Z = "demo-project", "us-central1-a"
SEED = {"projects": {P: {"zones": {Z: {"disks": [{"name": "boot", "size_gb": 10}]}}}}}
BODY = {
    "name": "web-1",
    "machineType": f"zones/{Z}/machineTypes/n2-standard-2",
    "disks": [{"source": f"projects/{P}/zones/{Z}/disks/boot", "boot": True, "deviceName": "root"}],
    "networkInterfaces": [
        {"network": "global/networks/prod", "subnetwork": "regions/us-central1/subnetworks/a"}
    ],
    "serviceAccounts": [{"email": "web@demo-project.iam.gserviceaccount.com", "scopes": ["https://x/y"]}],
    "scheduling": {"automaticRestart": True, "onHostMaintenance": "MIGRATE", "preemptible": False},
    "tags": {"items": ["http-server", "web"]},
    "metadata": {"items": [{"key": "startup-script", "value": "echo up"}]},
}


@pytest.fixture
def emu():
    with Emulator(SEED) as emulator:
        yield emulator


def insert(emu, body):
    return emu.handle("POST", f"/compute/v1/projects/{P}/zones/{Z}/instances?requestId={uuid.uuid4()}", body)


def test_a_rebuilt_vms_settings_sent_by_the_real_client_are_kept(emu):
    client = compute_v1.InstancesClient(
        credentials=AnonymousCredentials(), client_options={"api_endpoint": emu.url}
    )
    instance = compute_v1.Instance(
        name="web-1",
        machine_type=f"zones/{Z}/machineTypes/n2-standard-2",
        disks=[
            compute_v1.AttachedDisk(
                source=f"projects/{P}/zones/{Z}/disks/boot", boot=True, device_name="root"
            )
        ],
        network_interfaces=[compute_v1.NetworkInterface(network=f"projects/{P}/global/networks/prod")],
        service_accounts=[
            compute_v1.ServiceAccount(
                email="web@demo-project.iam.gserviceaccount.com", scopes=["https://x/y"]
            )
        ],
        scheduling=compute_v1.Scheduling(
            automatic_restart=False, on_host_maintenance="TERMINATE", preemptible=True
        ),
        tags=compute_v1.Tags(items=["http-server"]),
        metadata=compute_v1.Metadata(items=[compute_v1.Items(key="startup-script", value="echo up")]),
    )
    client.insert_unary(
        request={"project": P, "zone": Z, "instance_resource": instance, "request_id": str(uuid.uuid4())}
    )

    made = emu.instance(P, Z, "web-1")
    assert made["serviceAccounts"] == [
        {"email": "web@demo-project.iam.gserviceaccount.com", "scopes": ["https://x/y"]}
    ]
    assert made["scheduling"] == {
        "automaticRestart": False,
        "onHostMaintenance": "TERMINATE",
        "preemptible": True,
    }
    assert made["tags"]["items"] == ["http-server"]
    assert made["tags"]["fingerprint"]
    assert made["metadata"]["items"] == [{"key": "startup-script", "value": "echo up"}]
    assert "accessConfigs" not in made["networkInterfaces"][0]


@pytest.mark.parametrize(
    ("path", "value", "field"),
    [
        (("metadata", "items", 0, "key"), "bad key", "metadata.items[0].key"),
        (("metadata", "items", 0, "value"), "x" * 262145, "metadata.items[0].value"),
        (("metadata", "items", 0, "secret"), "x", "not modelled"),
        (("tags", "items"), ["Web"], "tags.items"),
        (
            ("serviceAccounts",),
            [{"email": "a@b", "scopes": []}, {"email": "c@d", "scopes": []}],
            "at most one",
        ),
        (("serviceAccounts", 0, "scopes"), ["cloud-platform"], "serviceAccounts[0].scopes"),
        (("scheduling", "onHostMaintenance"), "SOMETIMES", "scheduling.onHostMaintenance"),
        (("scheduling", "nodeAffinities"), [], "not modelled"),
        (("scheduling", "preemptible"), True, "preemptible and Spot VMs"),  # with MIGRATE and a restart
        (("scheduling", "automaticRestart"), "yes", "scheduling.automaticRestart"),
    ],
)
def test_what_the_reference_refuses_or_the_emulator_does_not_model_is_400(emu, path, value, field):
    body = copy.deepcopy(BODY)
    node = body
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value

    status, payload = insert(emu, body)

    assert status == 400, payload
    assert field in payload["error"]["message"]
    with emu.world.lock:
        assert f"projects/{P}/zones/{Z}/instances/web-1" not in emu.world.instances


def test_the_same_body_with_valid_settings_is_accepted(emu):
    status, payload = insert(emu, copy.deepcopy(BODY))

    assert status == 200, payload
