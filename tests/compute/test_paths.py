"""compute/paths.py: every reference prints what the f-strings it replaced printed, parses back to itself
from its path and from its URL (any host), and refuses whatever is not its kind of path."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gce_vm_backup.compute.paths import API_ROOT, DiskRef, InvalidPathError, SnapshotRef, VmRef

# A part: what Compute Engine names look like, plus the odd characters a part may hold (domain-scoped
# projects' ':' and '.', the aggregated zone '-', upper case in tests' fakes).
part = st.from_regex(r"[a-z][-a-z0-9]{0,20}|[A-Za-z0-9][-A-Za-z0-9_.:]{0,12}|-", fullmatch=True)
roots = st.sampled_from(
    [
        API_ROOT,
        "https://compute.googleapis.com/compute/v1/",
        "https://compute-xyz.p.googleapis.com/compute/beta/",
        "http://127.0.0.1:8085/compute/v1/",
    ]
)
vms = st.builds(VmRef, part, part, part)
disks = st.builds(DiskRef, part, part, part, st.booleans())
snapshots = st.builds(SnapshotRef, part, part)
refs = st.one_of(vms, disks, snapshots)


@given(ref=refs, root=roots)
def test_a_reference_parses_back_from_its_path_and_from_its_url(ref, root):
    kind = type(ref)
    assert kind.parse(ref.path) == ref
    assert kind.parse(ref.url) == ref
    assert kind.parse(root + ref.path) == ref
    assert str(ref) == ref.path
    assert ref.url == API_ROOT + ref.path


@given(p=part, z=part, n=part)
def test_paths_are_the_strings_the_package_built_by_hand(p, z, n):
    assert VmRef(p, z, n).path == f"projects/{p}/zones/{z}/instances/{n}"
    assert DiskRef(p, z, n).path == f"projects/{p}/zones/{z}/disks/{n}"
    assert DiskRef(p, z, n, regional=True).path == f"projects/{p}/regions/{z}/disks/{n}"
    assert SnapshotRef(p, n).path == f"projects/{p}/global/snapshots/{n}"
    text = f"projects/{p}/zones/{z}/instances/{n}"
    assert VmRef.parse(text).path == text  # round trip of the text itself
    assert DiskRef.of(p, z, None, n) == DiskRef(p, z, n)
    assert DiskRef.of(p, None, z, n) == DiskRef(p, z, n, regional=True)
    assert DiskRef(p, z, n).where == {"zone": z}
    assert DiskRef(p, z, n, regional=True).where == {"region": z}


def test_references_are_frozen():
    ref = VmRef("p", "z", "vm")
    with pytest.raises(AttributeError):
        ref.name = "other"  # type: ignore[misc]


@given(ref=refs, data=st.data())
def test_a_damaged_path_is_refused(ref, data):
    path = ref.path
    damage = data.draw(
        st.sampled_from(
            [
                lambda s: s + "/",  # trailing slash
                lambda s: "/" + s,  # leading slash
                lambda s: s + "/extra",  # one part too many
                lambda s: s.rsplit("/", 1)[0],  # the name missing
                lambda s: s.replace("/", "//", 1),  # an empty part
                lambda s: s.replace("projects/", "project/", 1),  # a wrong keyword
                lambda s: s + " ",  # whitespace
                lambda s: s + "?alt=json",  # a query
                lambda s: "ftp://host/compute/v1/" + s,  # not an http(s) URL
                lambda s: "https://host/v1/" + s,  # a URL without /compute/<version>/
                lambda s: "x" + s,  # junk before the path
            ]
        )
    )
    bad = damage(path)
    with pytest.raises(InvalidPathError, match=r"not a .* path or URL"):
        type(ref).parse(bad)
    assert not type(ref).is_valid(bad)


@given(ref=refs)
def test_one_kind_of_path_is_not_another(ref):
    for kind in (VmRef, DiskRef, SnapshotRef):
        if kind is not type(ref):
            with pytest.raises(InvalidPathError):
                kind.parse(ref.path)


@pytest.mark.parametrize("bad", ["", "projects", "projects/p", None, 42, "projects/p/zones/z/instances/"])
def test_non_paths_are_refused_with_the_expected_form(bad):
    with pytest.raises(InvalidPathError) as err:
        VmRef.parse(bad)
    assert "projects/P/zones/Z/instances/NAME" in str(err.value)
    assert isinstance(err.value, ValueError)
