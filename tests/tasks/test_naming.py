"""Blob names: canonical names only, one output per input and style, bounded local names."""

from __future__ import annotations

import itertools

import pytest

from tasks.naming import (
    MAX_BLOB_NAME,
    BlobNameError,
    BlobRef,
    canonical_blob_name,
    local_file_name,
    rejected_report_name,
    short_label,
    stylized_names,
)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("", "is empty"),
        ("videos/", "is empty"),
        ("a//b.mp4", "not canonical"),
        ("a/./b.mp4", "not canonical"),
        ("a/../b.mp4", "not canonical"),
        ("/abs.mp4", "not canonical"),
        ("dir/", "not canonical"),
        ("a/b\n.mp4", "control characters"),
        ("a\rb.mp4", "control characters"),
        ("a\x1b[31mb.mp4", "control characters"),
        ("a\u2028b.mp4", "control characters"),
        (" clip.mp4", "white space"),
        ("clip.mp4\t", "control characters"),
        ("x" * (MAX_BLOB_NAME + 1), "longer than"),
    ],
)
def test_non_canonical_names_are_refused_with_the_reason(raw: str, message: str) -> None:
    with pytest.raises(BlobNameError, match=message) as caught:
        canonical_blob_name(raw, "videos")
    assert "\n" not in str(caught.value)  # the name is quoted, so it cannot break a log line


def test_canonical_names_pass_and_one_container_prefix_is_the_container() -> None:
    assert canonical_blob_name("a/b.mp4", "videos") == "a/b.mp4"
    assert canonical_blob_name("videos/a/b.mp4", "videos") == "a/b.mp4"
    assert canonical_blob_name("videos/videos/b.mp4", "videos") == "videos/b.mp4"
    assert canonical_blob_name("été/clip 1.MOV", "videos") == "été/clip 1.MOV"


def test_output_names_keep_the_extension_and_add_the_style() -> None:
    assert stylized_names("a/b.mp4", "udnie") == ("a/b.mp4.udnie.mp4", "a/b.mp4.udnie.error.json")
    assert stylized_names("a/b.mov", "udnie")[0] == "a/b.mov.udnie.mp4"


def test_output_names_are_injective_over_inputs_and_styles() -> None:
    inputs = ["a/b.mp4", "a/b.mov", "a/b.mov.mp4", "a/b.mp4.udnie.mp4", "b.mp4", "udnie/b.mp4",
              "a.mp4/udnie.mp4", "a.b.c.mkv", "_rejected/x.mp4"]
    styles = ["udnie", "mp4", "error", "starry_night", "a-b"]
    names: dict[str, tuple[str, str]] = {}
    for blob, style in itertools.product(inputs, styles):
        for name in stylized_names(blob, style):
            assert name not in names, f"{(blob, style)} and {names[name]} share {name!r}"
            names[name] = (blob, style)
    rejected = {rejected_report_name(raw) for raw in ["a//b.mp4", "a\nb.mp4", ""]}
    assert len(rejected) == 3 and not rejected & names.keys()


def test_a_name_that_leaves_no_room_for_the_output_is_refused() -> None:
    fits = "x" * (MAX_BLOB_NAME - len(".udnie.error.json"))
    assert len(stylized_names(fits, "udnie")[1]) == MAX_BLOB_NAME
    with pytest.raises(BlobNameError, match=f"at most {len(fits)} leave room"):
        stylized_names(fits + "x", "udnie")


def test_local_file_names_are_bounded_hashes_that_keep_a_plain_extension() -> None:
    long = "dir/" + "y" * 1000 + ".MP4"
    name = local_file_name(long)
    assert len(name) == 16 + 4 and name.endswith(".mp4")
    assert local_file_name("a/b.mp4") != local_file_name("a/b.mov")
    assert local_file_name("a/b.mp4") == local_file_name("a/b.mp4")
    assert "/" not in local_file_name("../../etc/passwd") and "." not in local_file_name("x.b\nad")


def test_labels_are_short_and_printable() -> None:
    assert short_label("a/b/clip.mp4") == "clip.mp4"
    assert short_label("a\nb.mp4") == "a?b.mp4"
    assert len(short_label("z" * 500)) == 80
    assert BlobRef("videos", "a/b.mp4").label == "videos/a/b.mp4"
